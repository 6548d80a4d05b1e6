"""The relay phase opens its other connections while it takes the lease.

A push needs, beside the repository's connection, one for the lease's
heartbeat and (with several transfers) one per upload. Each may take a tenth
of a second or more to open (a connection through ``ssh``), so they open on
threads of their own while the lease is taken, not one after the other:

* the lease is taken before the heartbeat's connection has finished opening,
  and the upload connections are opening before the lease is taken (each test
  makes one side wait for the other: opened in turn, the pass would stall and
  fail);
* the upload connections start opening only once the heartbeat's is open: a
  server that limits connections per client gives the heartbeat one first
  (the uploads then go on with fewer connections, as they always did);
* a heartbeat connection that cannot open fails the pass and gives the lease
  back at once: the next pass takes it without waiting for it to go stale;
* a busy lease closes the upload connections opened for nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from escale.crypto import plain_envelope
from escale.errors import RelayConnectionError
from escale.protocol.lease import LeaseManager
from escale.relay import Relay, make_relay
from escale.relay.delegating import DelegatingRelay
from escale.sync.client import PassReport, SyncClient
from tests.faults.world import World, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(180)

WAIT = 60.0
BIG = 17 * 1024 * 1024  # above the index layout's big-object threshold: uploaded on connections of their own


class Watched(DelegatingRelay):
    """A connection that reports its opening and its lease writes to ``world``."""

    def __init__(self, inner: Relay, watch: Watch) -> None:
        super().__init__(inner)
        self.watch = watch

    def _connect(self) -> None:
        thread = threading.current_thread().name
        self.watch.opening(thread)
        super()._connect()
        self.watch.open += 1
        self.watch.events.append(("open", thread))

    def _disconnect(self) -> None:
        super()._disconnect()
        self.watch.closed += 1

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if name.startswith("lease/"):
            self.watch.lease_write()
        super()._put(name, source, exclusive)


class Watch:
    """What the relays of one pass saw; ``on_open(thread)`` and
    ``on_lease_write()`` let a test make one side wait for the other."""

    def __init__(self) -> None:
        self.open = 0
        self.closed = 0
        self.threads: list[str] = []
        #: ("opening" | "open", thread name), in order
        self.events: list[tuple[str, str]] = []
        self.on_open: Callable[[str], None] = lambda thread: None
        self.on_lease_write: Callable[[], None] = lambda: None

    def opening(self, thread: str) -> None:
        self.threads.append(thread)
        self.events.append(("opening", thread))
        self.on_open(thread)

    def lease_write(self) -> None:
        self.on_lease_write()


def _pass(world: World, name: str, watch: Watch) -> PassReport:
    settings = world.settings(name)
    return SyncClient(settings, relay_factory=lambda: Watched(make_relay(settings.relay), watch)).run_pass()


def _world(tmp_path: Path, target: RelayTarget) -> tuple[World, str]:
    world = World(str(tmp_path), target, target.new_folder())
    world.common.update({"index": "yes", "transfers": "3"})
    a = world.add("a")
    world.add("b")
    world.sync("b")
    world.sync("a")
    for i in range(3):
        write(a, f"big{i}.bin", os.urandom(BIG))
    return world, a


def test_the_lease_is_taken_while_the_heartbeat_connection_opens(tmp_path: Path, target_ftp: RelayTarget) -> None:
    world, _ = _world(tmp_path, target_ftp)
    watch = Watch()
    lease_written = threading.Event()

    def heartbeat_waits(thread: str) -> None:
        if thread == "escale-heartbeat-open" and not lease_written.wait(WAIT):
            raise RelayConnectionError("the lease was not taken while the heartbeat connection opened")

    watch.on_open = heartbeat_waits
    watch.on_lease_write = lease_written.set
    report = _pass(world, "a", watch)
    assert len(report.pushed) == 3 and not report.errors, report.summary()
    assert watch.closed == watch.open


def test_upload_connections_open_while_the_lease_is_taken(tmp_path: Path, target_ftp: RelayTarget) -> None:
    world, _ = _world(tmp_path, target_ftp)
    watch = Watch()
    uploads_opening = threading.Semaphore(0)

    def count(thread: str) -> None:
        if thread.startswith("escale-upload-"):
            uploads_opening.release()

    first: list[bool] = []

    def lease_waits() -> None:  # the claim waits (not the writes after it)
        if first:
            return
        first.append(True)
        for _ in range(3):
            if not uploads_opening.acquire(timeout=WAIT):
                raise RelayConnectionError("the upload connections did not open while the lease was taken")

    watch.on_open = count
    watch.on_lease_write = lease_waits
    report = _pass(world, "a", watch)
    assert len(report.pushed) == 3 and not report.errors, report.summary()
    assert sum(1 for t in watch.threads if t.startswith("escale-upload-")) == 3
    assert watch.closed == watch.open
    heartbeat_open = watch.events.index(("open", "escale-heartbeat-open"))
    first_upload = min(i for i, (what, thread) in enumerate(watch.events)
                       if what == "opening" and thread.startswith("escale-upload-"))
    assert heartbeat_open < first_upload


def test_a_heartbeat_connection_that_fails_gives_the_lease_back(tmp_path: Path, target_ftp: RelayTarget) -> None:
    world, _ = _world(tmp_path, target_ftp)
    watch = Watch()

    def heartbeat_fails(thread: str) -> None:
        if thread == "escale-heartbeat-open":
            raise RelayConnectionError("injected: the heartbeat connection cannot open")

    watch.on_open = heartbeat_fails
    with pytest.raises(RelayConnectionError, match="injected"):
        _pass(world, "a", watch)
    assert watch.closed == watch.open
    # given back, not left to go stale: the next pass (no waiting allowed) takes it
    again = world.sync("a")
    assert len(again.pushed) == 3 and not again.busy and not again.errors, again.summary()


def test_a_busy_lease_closes_the_upload_connections(tmp_path: Path, target_ftp: RelayTarget) -> None:
    world, _ = _world(tmp_path, target_ftp)
    holder_relay = target_ftp.relay(world.folder)
    holder_relay.open()
    try:
        holder = LeaseManager(holder_relay, plain_envelope(), client_id="c" * 32, label="holder", timeout=600)
        lease = holder.acquire("sync")
        try:
            watch = Watch()
            report = _pass(world, "a", watch)
            assert report.busy and not report.pushed, report.summary()
            assert sum(1 for t in watch.threads if t.startswith("escale-upload-")) == 3  # opened ahead ...
            assert watch.closed == watch.open  # ... and closed again
            assert not [t for t in threading.enumerate() if t.name.startswith("escale-upload-")]
        finally:
            lease.release()
    finally:
        holder_relay.close()
    again = world.sync("a")
    assert len(again.pushed) == 3 and not again.errors, again.summary()
