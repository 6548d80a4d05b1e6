"""``backup``, ``restore`` and ``fix`` on a repository in the index layout."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from escale.config.settings import ClientSettings
from escale.errors import ProtocolError
from escale.ops.backup import backup
from escale.ops.clients import list_clients
from escale.ops.fix import fix_client
from escale.ops.restore import restore
from escale.relay import RelaySpec
from escale.sync.client import SyncClient
from tests.ops.helpers import key_file, make_settings, relay_objects, sync, tree, wipe, write

Pair = tuple[str, RelaySpec, ClientSettings, ClientSettings]


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    """Two encrypted index-layout clients of one file relay, in sync (small files in pages,
    one big object), with one more file waiting on the relay for bob."""
    base = str(tmp_path)
    spec = RelaySpec(protocol="file", directory=os.path.join(base, "relay"))
    key = key_file(base)
    alice = replace(make_settings(base, "alice", spec, key_file=key), index=True, maxpagesize=64 * 1024)
    bob = replace(make_settings(base, "bob", spec, key_file=key), index=True, maxpagesize=64 * 1024)
    write(alice.local_path, {"a.txt": b"alpha", "docs/b.bin": os.urandom(70_000), "docs/c.txt": b"c" * 3000})
    write(bob.local_path, {"d.txt": b"from bob"})
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)
    write(alice.local_path, {"pending.txt": b"for bob"})
    sync(alice, rounds=1)
    assert any(n.startswith("index/") for n in relay_objects(spec))
    return base, spec, alice, bob


def _without_leases(objects: dict[str, str]) -> dict[str, str]:
    return {n: h for n, h in objects.items() if not n.startswith("lease/")}


def test_backup_wipe_restore_and_clients_converge(pair: Pair) -> None:
    base, spec, alice, bob = pair
    archive = os.path.join(base, "index.tgz")
    before = _without_leases(relay_objects(spec))
    report = backup(alice, archive)
    assert report.consistent and report.objects == len(before)
    assert {n.partition("/")[0] for n in before} >= {"index", "pages", "clients"}

    wipe(spec)
    restored = restore(bob, archive)
    assert restored.objects == report.objects
    assert _without_leases(relay_objects(spec)) == before  # names and sealed bytes

    sync(alice, bob)
    assert tree(bob.local_path)["pending.txt"] == b"for bob"
    write(bob.local_path, {"after.txt": b"written after the restore"})
    sync(bob, alice)
    assert tree(alice.local_path) == tree(bob.local_path)


def test_fix_rebuilds_a_wiped_index_relay(pair: Pair) -> None:
    _base, spec, alice, bob = pair
    sync(bob, rounds=1)  # bob has everything
    wipe(spec)
    with pytest.raises(ProtocolError):
        SyncClient(alice).run_pass()  # the repository is gone: nothing re-created on its own
    report = fix_client(bob)
    assert report.header_recreated and report.index_generation > 0
    assert {item.path for item in report.recreated} == set(tree(bob.local_path))
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)
    write(alice.local_path, {"new.txt": b"after the fix"})
    sync(alice, bob)
    assert tree(bob.local_path)["new.txt"] == b"after the fix"


def test_restoring_an_older_backup_then_fix_keeps_newer_files(pair: Pair) -> None:
    base, spec, alice, bob = pair
    sync(bob, rounds=1)
    archive = os.path.join(base, "old.tar")
    backup(alice, archive)
    write(alice.local_path, {"a.txt": b"alpha, newer", "late.txt": b"after the backup"})
    sync(alice, bob)
    assert tree(bob.local_path)["a.txt"] == b"alpha, newer"

    wipe(spec)
    restore(alice, archive)  # the relay now shows an older index than both clients saw
    with pytest.raises(ProtocolError, match="rolled back its index"):
        SyncClient(bob).run_pass()
    report = fix_client(bob)
    assert report.index_generation > 0
    recreated = {item.path for item in report.recreated}
    assert {"a.txt", "late.txt"} <= recreated
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)
    assert tree(alice.local_path)["a.txt"] == b"alpha, newer"


def test_fix_on_a_consistent_index_changes_nothing(pair: Pair) -> None:
    _base, spec, alice, bob = pair
    sync(bob, rounds=1)
    before = _without_leases(relay_objects(spec))
    report = fix_client(bob, dry_run=True)
    assert not report.recreated and report.up_to_date == len(tree(bob.local_path))
    report = fix_client(bob)
    assert not report.recreated and report.index_generation == 0
    after = _without_leases(relay_objects(spec))
    assert {n for n in after if n.startswith(("index/", "pages/", "big/"))} == {
        n for n in before if n.startswith(("index/", "pages/", "big/"))}
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)


def test_clients_lists_what_each_receiver_still_has_to_take(pair: Pair) -> None:
    """``escalectl clients`` reads an index repository with its own reader: bob has the
    one file alice pushed after the last sync still to take, alice nothing."""
    _, _, alice, bob = pair
    report = list_clients(alice)
    pending = {info.label: info.pending for info in report.clients}
    assert pending == {alice.label: 0, bob.label: 1}
    sync(bob, rounds=1)
    assert {info.label: info.pending for info in list_clients(alice).clients} == {alice.label: 0, bob.label: 0}
