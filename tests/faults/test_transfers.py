"""Several transfers at once (``transfers``), on real servers.

What these prove:

* a workload (pushes, pulls, edits, a deletion, a conflict, encrypted) ends
  in the same trees and the same relay with ``transfers = 1`` and
  ``transfers = 4``, on FTP, WebDAV and SFTP;
* with ``transfers = 4`` four payload downloads, and four payload uploads, are
  in progress at the same moment, each on its own connection, and every
  connection a pass opens is closed when it ends; with ``transfers = 1`` there
  is never more than one;
* a transfer that fails in a worker surfaces as the error a serial pass
  raises, leaves no partial file and no spool file behind, closes every
  connection, and the next pass completes the sync;
* with ``transfers = 4`` a receiver's acknowledgements are written on the
  workers' connections, several at once, all on the relay when the pass
  ends; one that fails fails the pass as a serial write does, and the next
  pass writes it;
* in the index layout, four big objects are uploaded at the same moment, and
  downloaded at the same moment, each on its own connection, while the small
  files go in pages; a big upload that fails half-way in a worker commits
  nothing that names it (no version points to a partial object), loses
  nothing, and its orphan is swept once the sync completes.

Overlap is observed by a relay wrapper that holds each payload transfer until
four are in progress together (or a generous guard expires, which the test
then reports as "no overlap"): an event, never a timing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import threading
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import pytest

from bench.counting import CountingRelay
from escale.crypto import generate_key_file
from escale.errors import RelayConnectionError, RelayNotFound, RelayPermissionDenied
from escale.relay import Relay, make_relay
from escale.relay.base import Capabilities
from escale.relay.retry import RetryingRelay
from escale.sync.client import SyncClient
from tests.faults.world import World, open_relay, relay_names, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(300)

#: Seconds a gated transfer waits for the others to join it before it goes
#: on alone (a guard against a hang; the test then fails on the count).
GUARD = 60.0


class Gate:
    """Shared by every connection of one client: counts payload transfers in
    progress, holds each until ``want`` are in progress together, and can
    make the transfer of chosen payloads fail."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.active = {"get": 0, "put": 0}
        self.most = {"get": 0, "put": 0}
        self.reached = {"get": False, "put": False}
        self.opened = 0
        self.closed = 0
        #: connections open at once beyond which a new one is refused (None: no limit)
        self.max_connections: int | None = None
        #: operation -> (n, exception): the n-th payload transfer of that kind raises it
        self.failures: dict[str, tuple[int, Exception]] = {}
        self.started = {"get": 0, "put": 0}
        #: the relay folders whose objects are payloads (big objects in the index layout)
        self.prefixes: tuple[str, ...] = ("data/",)
        #: a planned put failure happens after this many bytes of the object were read
        self.fail_after = 0
        self._cond = threading.Condition()

    def through(self, op: str, name: str) -> None:
        """Enter a transfer of ``name``; raise a planned failure; wait for company."""
        with self._cond:
            self.started[op] += 1
            planned = self.failures.get(op)
            if planned is not None and planned[0] == self.started[op]:
                raise planned[1]
            self.active[op] += 1
            self.most[op] = max(self.most[op], self.active[op])
            if self.active[op] >= self.want:
                self.reached[op] = True
                self._cond.notify_all()
            self._cond.wait_for(lambda: self.reached[op], timeout=GUARD)
            self.reached[op] = True  # nobody waits twice: the first release lets the rest run freely

    def leave(self, op: str) -> None:
        with self._cond:
            self.active[op] -= 1


class GatedRelay(CountingRelay):
    """A real backend whose payload gets and puts (``data/``) go through ``gate``."""

    def __init__(self, inner: Relay, gate: Gate) -> None:
        super().__init__(inner, Counter())
        self.gate = gate

    @property
    def capabilities(self) -> Capabilities:
        """The backend's, without ``group_put`` and ``group_get``:
        acknowledgements then go one put at a time, and payloads are fetched
        one per transfer, each through the gate (grouped, several would pass
        as one transfer, and fewer than four could be in progress)."""
        return dataclasses.replace(self.inner.capabilities, group_put=False, group_get=False)

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self.inner.capabilities = value

    def _connect(self) -> None:
        with self.gate._cond:  # a slot is taken before connecting: concurrent connects count
            limit = self.gate.max_connections
            if limit is not None and self.gate.opened - self.gate.closed >= limit:
                raise RelayConnectionError("too many connections from this address (test)")
            self.gate.opened += 1
        try:
            super()._connect()
        except BaseException:
            with self.gate._cond:
                self.gate.opened -= 1
            raise

    def _disconnect(self) -> None:
        super()._disconnect()
        with self.gate._cond:
            self.gate.closed += 1

    def _get(self, name: str, sink: BinaryIO) -> None:
        if not name.startswith(self.gate.prefixes):
            return super()._get(name, sink)
        self.gate.through("get", name)
        try:
            super()._get(name, sink)
        finally:
            self.gate.leave("get")

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if not name.startswith(self.gate.prefixes):
            return super()._put(name, source, exclusive)
        if self.gate.fail_after:
            try:
                self.gate.through("put", name)
            except Exception:
                source.read(self.gate.fail_after)  # half-way through the object, then the failure
                raise
        else:
            self.gate.through("put", name)
        try:
            super()._put(name, source, exclusive)
        finally:
            self.gate.leave("put")


def _gated(world: World, name: str, gate: Gate) -> SyncClient:
    settings = world.settings(name)
    return SyncClient(settings, relay_factory=lambda: RetryingRelay(GatedRelay(make_relay(settings.relay), gate),
                                                                     base_delay=0.01))


def _world(tmp_path: Path, target: RelayTarget, transfers: int) -> World:
    world = World(str(tmp_path), target, target.new_folder())
    key = os.path.join(str(tmp_path), "shared.key")
    generate_key_file(key)
    world.common.update({"encryption": "yes", "key": key, "transfers": str(transfers)})
    return world


def _files(count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 4096, 70_000, 300_000, 1_100_000]
    return {f"d{i % 3}/file{i:02d}.bin": rng.randbytes(sizes[i % len(sizes)]) for i in range(count)}


def _pair_with_files(tmp_path: Path, target: RelayTarget, transfers: int, *, count: int,
                     seed: int) -> tuple[World, str, str, dict[str, bytes]]:
    """Clients a and b (``transfers`` each) and the files written in a's folder, not yet synced."""
    world = _world(tmp_path, target, transfers)
    a = world.add("a")
    b = world.add("b")
    files = _files(count, seed)
    for rel, data in files.items():
        write(a, rel, data)
    return world, a, b, files


def _spool_files(world: World, name: str) -> list[str]:
    spool = os.path.join(world.path(name), ".escale", name, "spool")
    return os.listdir(spool) if os.path.isdir(spool) else []


def _workload(world: World) -> dict[str, dict[str, str]]:
    a = world.add("a")
    b = world.add("b")
    for rel, data in _files(12, 1).items():
        write(a, rel, data)
    world.sync("a")
    world.sync("b")
    write(a, "d0/file00.bin", b"edited on a")
    write(a, "d1/file01.bin", b"both edited: a")
    write(b, "d1/file01.bin", b"both edited: b")
    os.unlink(os.path.join(a, "d2/file02.bin"))
    for rel, data in _files(6, 2).items():
        write(b, "new/" + rel, data)
    world.quiesce(["a", "b"])
    return {"a": tree(a), "b": tree(b)}


@pytest.mark.parametrize("backend", ["ftp", "webdav", "sftp"])
def test_one_or_four_transfers_give_the_same_result(tmp_path: Path, request: pytest.FixtureRequest,
                                                    backend: str) -> None:
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    outcomes = []
    for transfers in (1, 4):
        world = _world(tmp_path / f"t{transfers}", target, transfers)
        trees = _workload(world)
        assert trees["a"] == trees["b"]
        assert relay_names(world, "data") == []  # every payload taken and reclaimed
        assert _spool_files(world, "a") == [] and _spool_files(world, "b") == []
        # conflict copies are named after the client and a random tag: compare their count
        outcomes.append(({p: h for p, h in trees["a"].items() if ".conflict-" not in p},
                         sum(".conflict-" in p for p in trees["a"])))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][1] == 1


@pytest.mark.parametrize("transfers", [1, 4])
def test_transfers_overlap_on_their_own_connections(tmp_path: Path, target_sftp: RelayTarget,
                                                    transfers: int) -> None:
    world, a, b, files = _pair_with_files(tmp_path, target_sftp, transfers, count=9, seed=3)
    gate = Gate(want=transfers)
    report = _gated(world, "a", gate).run_pass()
    assert sorted(report.pushed) == sorted(files)
    assert gate.most["put"] == transfers
    assert gate.opened == gate.closed  # the pass, its lease heartbeat and every worker: all closed

    gate = Gate(want=transfers)
    report = _gated(world, "b", gate).run_pass()
    assert sorted(report.pulled) == sorted(files)
    assert gate.most["get"] == transfers
    assert gate.opened == gate.closed
    assert tree(b) == tree(a)
    # one connection for the pass, one per worker (and a lease heartbeat when it writes)
    assert gate.opened <= 1 + transfers + 1


def test_a_server_that_limits_connections_gets_fewer_transfers(tmp_path: Path, target_ftp: RelayTarget,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """Connections beyond the server's limit are refused: the workers that
    could not connect hand their transfers to those that could, and the pass
    completes with fewer at once."""
    world, a, b, files = _pair_with_files(tmp_path, target_ftp, 4, count=9, seed=6)
    world.sync("a")
    gate = Gate(want=2)
    gate.max_connections = 3  # the pass's own connection and two workers
    with caplog.at_level(logging.WARNING, logger="escale.sync.transfers"):
        report = _gated(world, "b", gate).run_pass()
    assert sorted(report.pulled) == sorted(files) and report.errors == []
    assert gate.most["get"] == 2
    assert gate.opened == gate.closed
    assert "going on with 2 transfer(s) at once" in caplog.text
    assert tree(b) == tree(a)


def test_a_failed_download_is_reported_as_when_serial(tmp_path: Path, target_sftp: RelayTarget) -> None:
    """A worker's download failing with a per-file error (the payload gone)
    and with a pass-wide one (permission denied): each surfaces as a serial
    pass reports it; no partial file, no spool file, every connection closed."""
    world, a, b, files = _pair_with_files(tmp_path, target_sftp, 4, count=9, seed=4)
    world.sync("a")

    gate = Gate(want=1)
    gate.failures["get"] = (3, RelayNotFound("payload gone meanwhile (test)"))
    report = _gated(world, "b", gate).run_pass()
    assert len(report.errors) == 1 and "payload gone meanwhile" in report.errors[0], report.errors
    victim = report.errors[0].partition(":")[0]
    assert sorted(report.pulled) == sorted(p for p in files if p != victim)
    assert not os.path.exists(os.path.join(b, victim))
    assert _leftovers(b) == [] and _spool_files(world, "b") == []
    assert gate.opened == gate.closed

    for rel in files:
        write(a, rel, b"a newer version of " + rel.encode())
    world.sync("a")
    gate = Gate(want=1)
    gate.failures["get"] = (2, RelayPermissionDenied("permission denied (test)"))
    with pytest.raises(RelayPermissionDenied, match="permission denied"):
        _gated(world, "b", gate).run_pass()
    assert _leftovers(b) == [] and _spool_files(world, "b") == []
    assert gate.opened == gate.closed
    for rel in files:  # each file is its old version or the new one, whole
        if rel == victim and not os.path.exists(os.path.join(b, rel)):
            continue  # never received (above): received now, or not yet
        with open(os.path.join(b, rel), "rb") as handle:
            assert handle.read() in (files[rel], b"a newer version of " + rel.encode()), rel

    world.quiesce(["a", "b"])
    assert tree(b) == tree(a)


def test_a_payload_that_fails_its_check_in_a_worker_is_refused(tmp_path: Path, target_sftp: RelayTarget) -> None:
    """A payload altered on the relay is opened and checked by a worker: the
    file is refused as a serial pass refuses it (an integrity error for that
    file, the user's older version untouched), the others are received, and
    nothing is left beside the files or in the spool."""
    world, a, b, files = _pair_with_files(tmp_path, target_sftp, 4, count=6, seed=6)
    world.sync("a")
    world.sync("b")
    for rel in files:
        write(a, rel, b"a newer version of " + rel.encode())
    world.sync("a")
    with open_relay(world) as relay:
        altered = next(n for n in relay_names(world, "data") if ".0000000002." in n)
        sealed = bytearray(relay.get_bytes(altered))
        sealed[-1] ^= 1
        relay.put_bytes(altered, bytes(sealed))

    report = _gated(world, "b", Gate(want=1)).run_pass()
    assert len(report.errors) == 1 and "failed authentication" in report.errors[0], report.errors
    victim = report.errors[0].partition(":")[0]
    assert sorted(report.pulled) == sorted(p for p in files if p != victim)
    for rel in files:
        with open(os.path.join(b, rel), "rb") as handle:
            assert handle.read() == (files[rel] if rel == victim else b"a newer version of " + rel.encode()), rel
    assert _leftovers(b) == [] and _spool_files(world, "b") == []


def test_a_big_payload_flipped_or_cut_is_refused_by_its_worker(tmp_path: Path, target_sftp: RelayTarget,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """Big payloads (opened and verified by a worker as they arrive, with no
    sealed spool file) altered on the relay: one flipped, one cut short. Each
    is refused with a log line (no traceback), the user's older version is
    untouched, nothing is left beside the files or in the spool; the others
    are received."""
    world, a, b, _ = _pair_with_files(tmp_path, target_sftp, 4, count=0, seed=9)
    rng = random.Random(9)
    files = {f"big{i}.bin": rng.randbytes(1_500_000 + i) for i in range(4)}
    for rel, data in files.items():
        write(a, rel, data)
    world.sync("a")
    world.sync("b")
    newer = {rel: rng.randbytes(1_600_000 + i) for i, rel in enumerate(files)}
    for rel, data in newer.items():
        write(a, rel, data)
    world.sync("a")
    with open_relay(world) as relay:
        altered = sorted(n for n in relay_names(world, "data") if ".0000000002." in n)[:2]
        flipped = bytearray(relay.get_bytes(altered[0]))
        flipped[len(flipped) // 2] ^= 1
        relay.put_bytes(altered[0], bytes(flipped))
        relay.put_bytes(altered[1], relay.get_bytes(altered[1])[:-70_000])

    with caplog.at_level(logging.WARNING):
        report = _gated(world, "b", Gate(want=1)).run_pass()
    assert len(report.errors) == 2, report.errors
    assert all("failed authentication" in e or "truncated" in e for e in report.errors), report.errors
    assert "Traceback" not in caplog.text
    victims = {e.partition(":")[0] for e in report.errors}
    assert sorted(report.pulled) == sorted(set(files) - victims)
    for rel in files:
        with open(os.path.join(b, rel), "rb") as handle:
            assert handle.read() == (files[rel] if rel in victims else newer[rel]), rel
    assert _leftovers(b) == [] and _spool_files(world, "b") == []


def test_a_failed_upload_commits_nothing_for_it(tmp_path: Path, target_webdav: RelayTarget) -> None:
    """A worker's upload failing (permission denied) ends the pass as a
    serial one ends: that file has no version on the relay, the others that
    were committed are whole, every connection is closed; the next pass
    sends the rest."""
    world, a, b, files = _pair_with_files(tmp_path, target_webdav, 4, count=9, seed=5)
    gate = Gate(want=1)
    gate.failures["put"] = (3, RelayPermissionDenied("permission denied (test)"))
    with pytest.raises(RelayPermissionDenied):
        _gated(world, "a", gate).run_pass()
    assert gate.opened == gate.closed
    assert _spool_files(world, "a") == []
    assert len(relay_names(world, "meta")) < len(files)  # that file (at least) was not committed

    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) == {rel: tree(a)[rel] for rel in files}


def _leftovers(root: str) -> list[str]:
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".escale"]
        found.extend(os.path.join(folder, n) for n in names if n.startswith(".escale-"))
    return found


def _index_pair(tmp_path: Path, target: RelayTarget, *, big: int, small: int,
                seed: int) -> tuple[World, str, str, dict[str, bytes]]:
    """Clients a and b in the index layout (``transfers = 4``, pages of 512 KB:
    files above 128 KiB are big objects) and a's files, not yet synced."""
    world = _world(tmp_path, target, 4)
    world.common.update({"index": "yes", "maxpagesize": "512KB"})
    a = world.add("a")
    b = world.add("b")
    rng = random.Random(seed)
    files = {f"big/b{i:02d}.bin": rng.randbytes(200_000 + 1000 * i) for i in range(big)}
    files.update({f"small/s{i:02d}.txt": f"small file {i}\n".encode() * (i + 1) for i in range(small)})
    for rel, data in files.items():
        write(a, rel, data)
    return world, a, b, files


def _big_gate(want: int) -> Gate:
    gate = Gate(want=want)
    gate.prefixes = ("big/",)
    return gate


def test_index_layout_moves_big_objects_on_their_own_connections(tmp_path: Path,
                                                                 target_sftp: RelayTarget) -> None:
    world, a, b, files = _index_pair(tmp_path, target_sftp, big=7, small=12, seed=7)
    gate = _big_gate(4)
    report = _gated(world, "a", gate).run_pass()
    assert sorted(report.pushed) == sorted(files) and report.errors == []
    assert gate.most["put"] == 4  # four big objects in flight at once
    assert gate.opened == gate.closed
    assert len(relay_names(world, "big")) == 7
    assert len(relay_names(world, "pages")) == 1  # the small files, in one page

    gate = _big_gate(4)
    report = _gated(world, "b", gate).run_pass()
    assert sorted(report.pulled) == sorted(files) and report.errors == []
    assert gate.most["get"] == 4
    assert gate.opened == gate.closed
    assert tree(b) == tree(a)
    assert _leftovers(b) == [] and _spool_files(world, "b") == []


def test_index_layout_big_upload_failing_half_way_loses_nothing(tmp_path: Path,
                                                                target_webdav: RelayTarget) -> None:
    """The third big upload fails half-way in a worker (permission denied,
    after 64 KiB of it were read): the pass fails as a serial one does, with
    no version naming an object that is not whole; every connection is
    closed; the next passes send and receive everything, and sweep the
    object the failure left behind."""
    world, a, b, files = _index_pair(tmp_path, target_webdav, big=6, small=5, seed=8)
    gate = _big_gate(1)
    gate.failures["put"] = (3, RelayPermissionDenied("permission denied (test)"))
    gate.fail_after = 64 * 1024
    with pytest.raises(RelayPermissionDenied):
        _gated(world, "a", gate).run_pass()
    assert gate.opened == gate.closed
    assert _spool_files(world, "a") == []
    # whatever b receives now is whole: a failed pass commits no entry for the objects it uploaded
    report = world.sync("b")
    assert report.errors == []
    for rel in report.pulled:
        with open(os.path.join(b, rel), "rb") as handle:
            assert handle.read() == files[rel], rel
    assert "big" not in {rel.partition("/")[0] for rel in report.pulled}

    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) == {rel: tree(a)[rel] for rel in files}
    assert relay_names(world, "big") == []  # received by b, reclaimed; the orphan swept


@pytest.mark.parametrize("transfers", [1, 4])
def test_acknowledgements_go_on_the_transfers_connections(tmp_path: Path, target_sftp: RelayTarget,
                                                         transfers: int) -> None:
    """With several transfers, the receiver's acknowledgements are written on
    the workers' connections, several at the same moment (one at a time with
    ``transfers = 1``); every one is on the relay when the pass ends: the
    pusher's next pass reclaims every payload."""
    world, a, b, files = _pair_with_files(tmp_path, target_sftp, transfers, count=9, seed=7)
    world.sync("a")
    gate = Gate(want=transfers)
    gate.prefixes = ("acks/",)
    report = _gated(world, "b", gate).run_pass()
    assert sorted(report.pulled) == sorted(files) and report.errors == []
    assert gate.most["put"] == transfers
    assert gate.opened == gate.closed
    assert len(relay_names(world, "acks")) == len(files)
    world.sync("a")
    assert relay_names(world, "data") == []  # every payload acknowledged, so reclaimed
    assert tree(b) == tree(a)


def test_a_failed_acknowledgement_in_a_worker_fails_the_pass_as_when_serial(tmp_path: Path,
                                                                           target_sftp: RelayTarget) -> None:
    """An acknowledgement whose write fails in a worker fails the pass as a
    serial pass fails (the relay's error, raised once the others are
    written); the received files are whole and recorded, and the next pass
    writes the missing acknowledgement, so the pusher reclaims everything."""
    world, a, b, files = _pair_with_files(tmp_path, target_sftp, 4, count=9, seed=8)
    world.sync("a")
    gate = Gate(want=1)
    gate.prefixes = ("acks/",)
    gate.failures["put"] = (3, RelayPermissionDenied("permission denied (test)"))
    with pytest.raises(RelayPermissionDenied, match="permission denied"):
        _gated(world, "b", gate).run_pass()
    assert gate.opened == gate.closed
    assert tree(b) == tree(a)  # every file received, whole
    assert len(relay_names(world, "acks")) == len(files) - 1
    report = world.sync("b")
    assert report.pulled == [] and report.errors == []  # recorded: nothing received again
    assert len(relay_names(world, "acks")) == len(files)
    world.sync("a")
    assert relay_names(world, "data") == []
