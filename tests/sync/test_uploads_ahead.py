"""Big objects start uploading while the lease's claim settles.

Where exclusive create is not atomic (WebDAV, rclone remotes), a claim
waits its settle before reading its record back. The index layout's big
objects are named by nothing until a delta committed under the lease, so
they may be uploaded during that wait (:meth:`Executor.upload_ahead`):

* they start before the claim is confirmed (the test holds the read-back of
  the claim until big objects are being uploaded: uploaded only under the
  lease, the pass would stall and fail);
* when the relay changed between the pass's reading and its lease (another
  client committed meanwhile), what started ahead is dropped and uploaded
  again under the lease; the objects uploaded ahead are orphans, swept in
  the same pass, and the receiver gets every file intact;
* a claim that loses (a contender overwrote its record while it settled)
  stops what it started; the next pass sweeps it and sends everything.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from escale.crypto import plain_envelope
from escale.errors import RelayConnectionError
from escale.protocol.lease import LeaseManager, write_record, write_released
from escale.protocol.objects import LeaseRecord
from escale.relay import Relay, make_relay
from escale.relay.delegating import DelegatingRelay
from escale.sync.client import PassReport, SyncClient
from tests.faults.world import World, relay_names, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(240)

WAIT = 60.0
BIG = 17 * 1024 * 1024  # above the index layout's big-object threshold
FILES = 3


class Watch:
    """What the connections of one pass did with the lease and big objects."""

    def __init__(self, *, hold_confirmation_until: int = 0) -> None:
        self.lock = threading.Lock()
        #: big-object uploads started, in all
        self.big_puts = 0
        self.enough_big_puts = threading.Event()
        #: hold the read-back of a claim until this many big uploads started (0: never hold)
        self.hold_until = hold_confirmation_until
        #: a lease record of this pass was written and not yet read back
        self.claimed = False
        #: this pass's claims (exclusive lease writes) so far
        self.claims = 0
        #: run before claim number n (from 1) ...
        self.before_claim: dict[int, Callable[[], object]] = {}
        #: ... and after it, with the lease's name
        self.after_claim: dict[int, Callable[[str], object]] = {}

    def big_put(self) -> None:
        with self.lock:
            self.big_puts += 1
            if self.hold_until and self.big_puts >= self.hold_until:
                self.enough_big_puts.set()


class Watched(DelegatingRelay):
    def __init__(self, inner: Relay, watch: Watch) -> None:
        super().__init__(inner)
        self.watch = watch

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        watch = self.watch
        if name.startswith("big/"):
            watch.big_put()
        if not (name.startswith("lease/") and exclusive):
            super()._put(name, source, exclusive)
            return
        watch.claims += 1  # claims are made on the pass's thread, one at a time
        claim = watch.claims
        if (before := watch.before_claim.get(claim)) is not None:
            before()
        super()._put(name, source, exclusive)
        watch.claimed = True  # the put returned: the claim reads it back after its settle
        if (after := watch.after_claim.get(claim)) is not None:
            after(name)

    def _get(self, name: str, sink: BinaryIO) -> None:
        if name.startswith("lease/") and self.watch.claimed and self.watch.hold_until:
            self.watch.claimed = False
            if not self.watch.enough_big_puts.wait(WAIT):
                raise RelayConnectionError("no big object was uploading while the lease's claim settled")
        super()._get(name, sink)


def _pass(world: World, name: str, watch: Watch, *, lease_wait: float = 0.0) -> PassReport:
    settings = world.settings(name)
    client = SyncClient(settings, lease_wait=lease_wait,
                        relay_factory=lambda: Watched(make_relay(settings.relay), watch))
    return client.run_pass()


def _world(tmp_path: Path, target: RelayTarget) -> tuple[World, str, str, dict[str, str]]:
    world = World(str(tmp_path), target, target.new_folder())
    world.common.update({"index": "yes", "transfers": str(FILES)})
    a = world.add("a")
    b = world.add("b")
    world.sync("b")
    world.sync("a")
    digests = {}
    for i in range(FILES):
        data = os.urandom(BIG)
        write(a, f"big{i}.bin", data)
        digests[f"big{i}.bin"] = hashlib.sha256(data).hexdigest()
    return world, a, b, digests


def _received(root: str, digests: dict[str, str]) -> None:
    for rel, digest in digests.items():
        with open(os.path.join(root, rel), "rb") as handle:
            assert hashlib.file_digest(handle, "sha256").hexdigest() == digest, rel


def test_big_objects_upload_while_the_claim_settles(tmp_path: Path, target_webdav: RelayTarget) -> None:
    world, _, b, digests = _world(tmp_path, target_webdav)
    watch = Watch(hold_confirmation_until=1)
    report = _pass(world, "a", watch)
    assert sorted(report.pushed) == sorted(digests) and not report.errors, report.summary()
    assert watch.big_puts == FILES  # each uploaded once: what started ahead was kept
    assert len(relay_names(world, "big")) == FILES
    pulled = world.sync("b")
    assert sorted(pulled.pulled) == sorted(digests) and not pulled.errors, pulled.summary()
    _received(b, digests)


def test_a_relay_changed_before_the_lease_drops_what_started_ahead(tmp_path: Path,
                                                                   target_webdav: RelayTarget) -> None:
    world, _, b, digests = _world(tmp_path, target_webdav)
    write(b, "from-b.txt", b"b's file")
    watch = Watch(hold_confirmation_until=FILES)
    # b commits between a's reading and a's claim: a's first claim loses to b's
    # lease, its second wins on a relay that moved past what a read
    watch.before_claim[1] = lambda: world.sync("b")
    report = _pass(world, "a", watch, lease_wait=WAIT)
    assert sorted(report.pushed) == sorted(digests) and not report.errors, report.summary()
    assert watch.big_puts == 2 * FILES  # started ahead, dropped, uploaded again under the lease
    assert len(relay_names(world, "big")) == FILES  # the dropped ones were swept as orphans
    pulled = world.sync("b")
    assert sorted(pulled.pulled) == sorted(digests) and not pulled.errors, pulled.summary()
    _received(b, digests)
    again = world.sync("a")
    assert again.pulled == ["from-b.txt"] and not again.errors, again.summary()


def test_a_claim_that_loses_stops_what_it_started(tmp_path: Path, target_webdav: RelayTarget) -> None:
    world, _, b, digests = _world(tmp_path, target_webdav)
    watch = Watch(hold_confirmation_until=FILES)
    other = LeaseRecord(generation=0, holder="c" * 32, label="other", host="elsewhere", pid=1, operation="sync",
                        token="d" * 32, beat=0)
    overwriting = target_webdav.relay(world.folder)
    overwriting.open()
    written: list[LeaseRecord] = []

    def overwrite(name: str) -> None:
        # a contender whose check ran before a's record landed overwrites it while a settles
        record = replace(other, generation=int(name.rpartition("/")[2]))
        write_record(overwriting, plain_envelope(), record)
        written.append(record)

    watch.after_claim[1] = overwrite
    try:
        report = _pass(world, "a", watch)
        assert report.busy and not report.pushed, report.summary()
        assert watch.big_puts == FILES  # they had started ...
        assert not [t for t in threading.enumerate() if t.name.startswith("escale-upload-")]  # ... and stopped
        write_released(overwriting, plain_envelope(), written[0])  # the contender is done
    finally:
        overwriting.close()
    again = world.sync("a")
    assert sorted(again.pushed) == sorted(digests) and not again.errors, again.summary()
    assert len(relay_names(world, "big")) == FILES  # what the lost claim stored was swept
    pulled = world.sync("b")
    assert sorted(pulled.pulled) == sorted(digests) and not pulled.errors, pulled.summary()
    _received(b, digests)


def test_a_lost_claim_stops_its_uploads_before_trying_again(tmp_path: Path, target_webdav: RelayTarget) -> None:
    world, _, b, digests = _world(tmp_path, target_webdav)
    watch = Watch(hold_confirmation_until=FILES)
    overwriting = target_webdav.relay(world.folder)
    overwriting.open()
    other = LeaseRecord(generation=0, holder="c" * 32, label="other", host="elsewhere", pid=1, operation="sync",
                        token="d" * 32, beat=0, released=True)
    uploading_at_retry: list[str] = []

    def overwrite(name: str) -> None:
        # a contender wins a's first claim (and is already done with it)
        write_record(overwriting, plain_envelope(), replace(other, generation=int(name.rpartition("/")[2])))

    watch.after_claim[1] = overwrite
    watch.before_claim[2] = lambda: uploading_at_retry.extend(
        t.name for t in threading.enumerate() if t.name.startswith("escale-upload-"))
    try:
        report = _pass(world, "a", watch, lease_wait=WAIT)
    finally:
        overwriting.close()
    assert sorted(report.pushed) == sorted(digests) and not report.errors, report.summary()
    assert watch.claims == 2
    assert uploading_at_retry == []  # the lost claim's uploads were stopped before the next claim
    assert watch.big_puts == 2 * FILES  # each claim started its own
    assert len(relay_names(world, "big")) == FILES
    pulled = world.sync("b")
    assert sorted(pulled.pulled) == sorted(digests) and not pulled.errors, pulled.summary()
    _received(b, digests)


@pytest.mark.parametrize("backend", ["file", "webdav"])
def test_the_lease_manager_calls_settling_only_while_a_claim_settles(backend: str,
                                                                     request: pytest.FixtureRequest) -> None:
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    relay = target.relay(target.new_folder())
    relay.open()
    try:
        manager = LeaseManager(relay, plain_envelope(), client_id="e" * 32, label="mine", timeout=600)
        calls: list[tuple[int, float, float]] = []
        lease = manager.acquire("sync", settling=lambda generation, seconds: calls.append(
            (generation, seconds, time.monotonic())))
        confirmed = time.monotonic()
        lease.release()
        if backend == "file":
            assert calls == []  # the exclusive put decides: no settle, nothing started ahead
        else:
            assert len(calls) == 1
            generation, settle, started = calls[0]
            assert generation == lease.generation and settle > 0
            assert confirmed - started >= settle  # the settle still ran its full length
    finally:
        relay.close()
