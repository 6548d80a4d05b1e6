"""``fix``: rebuilding a relay's lost metadata from an up-to-date client."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from escale.config.settings import ClientSettings
from escale.errors import OperationError
from escale.ops.fix import fix_client
from escale.relay import RelaySpec
from escale.sync.client import state_dir_for
from tests.ops.helpers import key_file, make_settings, relay_objects, sync, tree, wipe, write

Trio = tuple[RelaySpec, ClientSettings, ClientSettings, ClientSettings]

FILES = {"a.txt": b"alpha", "docs/b.bin": bytes(range(256)) * 300, "docs/deep/c.txt": b"gamma"}


@pytest.fixture(params=["plain", "encrypted"])
def trio(request: pytest.FixtureRequest, tmp_path: Path) -> Trio:
    """alice pushed FILES; bob and carol are registered receivers that have not run since."""
    base = str(tmp_path)
    spec = RelaySpec(protocol="file", directory=os.path.join(base, "relay"))
    key = key_file(base) if request.param == "encrypted" else None
    alice, bob, carol = (make_settings(base, n, spec, key_file=key) for n in ("alice", "bob", "carol"))
    for client in (alice, bob, carol):
        os.makedirs(client.local_path)
    sync(alice, bob, carol, rounds=1)  # everyone registered
    write(alice.local_path, FILES)
    sync(alice, rounds=1)
    return spec, alice, bob, carol


def _seen(settings: ClientSettings) -> dict[str, int]:
    with sqlite3.connect(os.path.join(state_dir_for(settings), "state.db")) as conn:
        rows: list[tuple[str, int]] = conn.execute("SELECT key, version FROM seen").fetchall()
        return dict(rows)


def test_lost_placeholders_are_recreated_and_receivers_still_get_every_file(trio: Trio) -> None:
    spec, alice, bob, carol = trio
    wipe(spec, "meta")  # payloads stay, but nothing points to them any more
    report = fix_client(alice)
    assert sorted(i.path for i in report.recreated) == sorted(FILES)
    assert all(i.reason == "missing on the relay" for i in report.recreated)
    assert report.removed == len(FILES)  # the old, unreachable payloads
    assert not report.header_recreated and not report.errors

    sync(bob, carol, alice)
    assert tree(bob.local_path) == tree(carol.local_path) == FILES


def test_whole_relay_lost_header_recreated_and_a_new_client_gets_every_file(trio: Trio, tmp_path: Path) -> None:
    spec, alice, bob, carol = trio
    sync(bob, carol, alice)  # everyone up to date; payloads reclaimed
    wipe(spec)
    report = fix_client(alice)
    assert report.header_recreated
    assert sorted(i.path for i in report.recreated) == sorted(FILES)

    dave = make_settings(str(tmp_path), "dave", spec, key_file=alice.key_file)
    sync(dave, rounds=1)
    assert tree(dave.local_path) == FILES
    sync(alice, bob, carol, dave)
    assert tree(bob.local_path) == tree(carol.local_path) == FILES
    write(carol.local_path, {"a.txt": b"alpha from carol"})
    sync(carol, alice, bob, dave)
    for client in (alice, bob, dave):
        assert tree(client.local_path)["a.txt"] == b"alpha from carol"


def test_versions_go_above_what_clients_have_seen(trio: Trio) -> None:
    spec, alice, bob, carol = trio
    write(alice.local_path, {"a.txt": b"alpha 2"})
    sync(alice, bob, carol)
    write(alice.local_path, {"a.txt": b"alpha 3"})
    sync(alice, bob, carol)
    seen_by_bob = _seen(bob)
    assert max(seen_by_bob.values()) == 3
    wipe(spec, "meta")
    report = fix_client(alice)
    by_path = {i.path: i.version for i in report.recreated}
    assert by_path["a.txt"] == 4 and by_path["docs/b.bin"] == 2
    sync(bob, carol, alice)  # no rollback alarm: bob and carol carry on
    assert tree(bob.local_path) == tree(carol.local_path) == tree(alice.local_path)
    write(bob.local_path, {"a.txt": b"alpha from bob"})
    sync(bob, alice)
    assert tree(alice.local_path)["a.txt"] == b"alpha from bob"


def test_dry_run_changes_nothing_and_tells_the_same(trio: Trio) -> None:
    spec, alice, _bob, _carol = trio
    wipe(spec, "meta")
    before = relay_objects(spec)
    dry = fix_client(alice, dry_run=True)
    assert relay_objects(spec) == before
    assert dry.dry_run and sorted(i.path for i in dry.recreated) == sorted(FILES)
    real = fix_client(alice)
    assert [(i.path, i.version) for i in dry.recreated] == [(i.path, i.version) for i in real.recreated]
    assert dry.removed == real.removed
    again = fix_client(alice)
    assert not again.changed and again.up_to_date == len(FILES)


def test_dry_run_on_a_wiped_relay_writes_no_header(trio: Trio) -> None:
    spec, alice, *_ = trio
    wipe(spec)
    report = fix_client(alice, dry_run=True)
    assert report.header_recreated and len(report.recreated) == len(FILES)
    assert relay_objects(spec) == {}


def test_files_changed_or_gone_locally_are_not_recreated(trio: Trio) -> None:
    spec, alice, _bob, _carol = trio
    write(alice.local_path, {"a.txt": b"edited after the last sync"})
    os.remove(os.path.join(alice.local_path, "docs", "deep", "c.txt"))
    wipe(spec, "meta")
    report = fix_client(alice)
    assert [i.path for i in report.recreated] == ["docs/b.bin"]
    skipped = dict(report.skipped)
    assert "changed locally" in skipped["a.txt"] and "not present" in skipped["docs/deep/c.txt"]


def test_a_client_that_never_synced_here_cannot_fix(tmp_path: Path) -> None:
    spec = RelaySpec(protocol="file", directory=str(tmp_path / "relay"))
    fresh = make_settings(str(tmp_path), "fresh", spec)
    with pytest.raises(OperationError, match="never synced here"):
        fix_client(fresh)
    assert not os.path.exists(fresh.local_path)
