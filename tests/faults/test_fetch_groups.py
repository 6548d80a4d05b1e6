"""Small objects read in groups (placeholder layout, ``transfers = 4``).

Where the relay declares a group read cheap (SFTP), a receiver reads the
placeholders it has not cached, and the payloads of small files, several at
a time with one ``get_many`` on the transfers' connections. What these
prove, on a real OpenSSH server:

* the reads really go in groups (a relay wrapper sees them), a bigger
  file's payload still comes alone, and the receiver ends with the same
  tree;
* a payload of a group that fails verification fails its own file only:
  the other members are installed;
* a group read that fails on a transfer connection (the connection, after
  the retries) is read again on the pass's own connection for placeholders,
  and fails the downloads it carried as a serial fetch would, leaving no
  spool file; the next pass completes the sync.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from escale.errors import EscaleError, RelayConnectionError
from escale.relay import Relay, make_relay
from escale.relay.delegating import DelegatingRelay
from escale.relay.retry import RetryingRelay
from escale.sync import faults
from escale.sync.client import SyncClient
from tests.faults.world import World, encrypted_pair, relay_get, relay_names, relay_put, small_files, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(300)


class ReadWatch(DelegatingRelay):
    """A real backend that records the names of each group read, and can
    fail every group read of names under ``fail_prefix`` (a connection
    error, as a link that drops at each attempt)."""

    def __init__(self, inner: Relay, groups: list[list[str]], *, fail_prefix: str | None = None) -> None:
        super().__init__(inner)
        self.groups = groups
        self.fail_prefix = fail_prefix

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        self.groups.append(list(names))
        if self.fail_prefix is not None and names[0].startswith(self.fail_prefix):
            raise RelayConnectionError("connection lost (test)", name=names[0])
        return self.inner.get_many(names, limit=limit)



def _watched(world: World, name: str, groups: list[list[str]], **kwargs: str) -> SyncClient:
    settings = world.settings(name)
    return SyncClient(settings, relay_factory=lambda: RetryingRelay(
        ReadWatch(make_relay(settings.relay), groups, **kwargs), attempts=2, base_delay=0.01))



def test_placeholders_and_small_payloads_come_down_in_groups(tmp_path: Path, target_sftp: RelayTarget) -> None:
    files = small_files(90, 1)
    files["big/one.bin"] = random.Random(2).randbytes(1_200_000)  # above the small payloads: alone
    world, a, b = encrypted_pair(str(tmp_path), target_sftp, files)
    world.sync("a")
    groups: list[list[str]] = []
    report = _watched(world, "b", groups).run_pass()
    assert not report.errors and len(report.pulled) == len(files)
    metas = [name for group in groups if group[0].startswith("meta/") for name in group]
    payloads = [name for group in groups if group[0].startswith("data/") for name in group]
    assert len(metas) == len(set(metas)) == len(files)  # every placeholder, once, in a group
    assert len(payloads) == len(set(payloads)) == 90  # every small payload, once; the big one alone
    assert max(len(group) for group in groups) > 1
    assert tree(b) == tree(a)


def test_a_tampered_payload_in_a_group_fails_alone(tmp_path: Path, target_sftp: RelayTarget) -> None:
    files = small_files(40, 3)
    world, a, b = encrypted_pair(str(tmp_path), target_sftp, files)
    world.sync("a")
    data = relay_names(world, "data")
    victims = [data[5], data[17]]
    # the last byte flipped (setting it to a fixed value left it unchanged one time in 256)
    relay_put(world, {name: (sealed := relay_get(world, name))[:-1] + bytes([sealed[-1] ^ 1]) for name in victims})
    groups: list[list[str]] = []
    report = _watched(world, "b", groups).run_pass()
    assert len(report.errors) == 2  # one per tampered payload, each naming its own file
    failed = {error.split(":")[0] for error in report.errors}
    assert len(failed) == 2
    assert len(report.pulled) == len(files) - 2
    # the two stay to be received, and the report says so (the executor lists what it did not receive)
    assert report.pending_down == 2 and report.pending_down_bytes == sum(len(files[rel]) for rel in failed)
    assert any(victims[0] in group and len(group) > 1 for group in groups)
    spool = os.path.join(world.path("b"), ".escale", "b", "spool")
    assert not os.path.isdir(spool) or [n for n in os.listdir(spool) if not n.startswith(".")] == []
    pulled = tree(b)
    assert {rel: pulled[rel] for rel in pulled if rel in files} == {
        rel: tree(a)[rel] for rel in pulled if rel in files}


def test_a_failed_group_read_is_read_on_the_main_connection_or_fails_its_downloads(
        tmp_path: Path, target_sftp: RelayTarget) -> None:
    files = small_files(60, 4)
    world, a, b = encrypted_pair(str(tmp_path), target_sftp, files)
    world.sync("a")
    groups: list[list[str]] = []
    # placeholders: every group read fails, and the pass reads them on its own connection
    report = _watched(world, "b", groups, fail_prefix="meta/").run_pass()
    assert not report.errors and len(report.pulled) == len(files)
    assert any(group[0].startswith("meta/") and len(group) > 1 for group in groups)
    assert tree(b) == tree(a)

    write(a, "s0/new.txt", b"new")
    for rel in list(files)[:30]:
        write(a, rel, b"edited " + rel.encode())
    world.sync("a")
    # payloads: the groups fail, so do the downloads they carried (as a serial fetch raises)
    with pytest.raises(RelayConnectionError):
        _watched(world, "b", [], fail_prefix="data/").run_pass()
    spool = os.path.join(world.path("b"), ".escale", "b", "spool")
    assert not os.path.isdir(spool) or [n for n in os.listdir(spool) if not n.startswith(".")] == []
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a)


def test_a_pass_stopped_while_receiving_reports_what_it_left(tmp_path: Path, target_file: RelayTarget,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the stop request comes once the third file is downloaded: the pass ends
    # there, and what it did not receive is pending, with its bytes
    files = small_files(20, 5)
    world, a, b = encrypted_pair(str(tmp_path), target_file, files, transfers=1)
    world.sync("a")
    client = SyncClient(world.settings("b"))
    downloaded: list[str] = []
    real_step = faults.step

    def step(name: str) -> None:
        real_step(name)
        if name.startswith("downloaded "):
            downloaded.append(name)
            if len(downloaded) == 3:
                client.stop.set()

    monkeypatch.setattr(faults, "step", step)
    report = client.run_pass()
    received = set(report.pulled)
    assert len(received) == 3 and not report.errors
    assert report.pending_down == len(files) - 3
    assert report.pending_down_bytes == sum(len(data) for rel, data in files.items() if rel not in received)
    monkeypatch.setattr(faults, "step", real_step)
    rest = world.sync("b")  # the next pass receives the rest, and nothing is left
    assert len(rest.pulled) == len(files) - 3 and rest.pending_down == 0 and rest.pending_down_bytes == 0
    assert tree(b) == tree(a)
