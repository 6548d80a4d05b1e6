"""A client recognises its own lease left by an attempt that is over.

Issue 9, item 16: when the relay dropped mid-upload, the pass failed and its
release never reached the relay; the daemon's next pass (same process, same
pid) then waited the whole ``lock timeout`` (two minutes by default) on its
*own* record ("held by a on host; will retry"). A record with this client's
id, this host and this process's pid whose token no live lease of the process
holds is now taken over at once. A record of the same client from another
*live* process stays held (the client's lock file keeps that from happening,
but the lease does not rely on it), and a live lease of this very process is
never taken from under it.

The first test is the reported scenario on a real FTP server that the test
stops in the middle of a pass (after the first of two uploads) and starts
again; the lock timeout is an hour, so the old behaviour could only show as a
busy pass. The others are the rules one by one over the memory and local-folder
relays, on a clock the test moves by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from escale.crypto import plain_envelope
from escale.errors import LeaseBusy
from escale.protocol import layout
from escale.protocol.lease import LeaseManager
from escale.protocol.objects import LeaseRecord
from escale.relay import Relay
from escale.sync.client import SyncClient
from tests.faults.world import World, tree, write
from tests.servers.ftp import FtpServer, ftp_server_process, ftp_target
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(180)

CLIENT = "c" * 32


@pytest.fixture
def own_ftp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """A pyftpdlib server of this test alone: the test stops and restarts it."""
    server = ftp_server_process(str(tmp_path_factory.mktemp("ftp-own-root")))
    yield server
    server.process.shutdown()


def test_relay_drop_mid_pass_does_not_block_the_next_pass(tmp_path: Path, own_ftp: FtpServer,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    target = ftp_target("ftp", own_ftp)
    world = World(str(tmp_path), target, target.new_folder())
    a = world.add("a", lock_timeout="3600")
    b = world.add("b", lock_timeout="3600")
    world.quiesce(["a", "b"])
    write(a, "one.txt", "first upload\n")
    write(a, "two.txt", "second upload, after the relay dropped\n")

    client = SyncClient(world.settings("a"))

    def drop_relay(done: int, total: int) -> None:
        if done == 1:  # the first upload is committed: the server goes away
            own_ftp.process.stop()

    client.on_progress = drop_relay
    with caplog.at_level(logging.WARNING):
        try:
            failed = client.run_pass()
        except Exception as exc:  # how the pass fails (relay error, report) is not the point
            failed_text = str(exc)
        else:
            failed_text = f"{failed.summary()} {failed.errors}"
    assert "could not release lease" in caplog.text, f"the release reached the relay: {failed_text}"
    own_ftp.process.restart()

    caplog.clear()
    with caplog.at_level(logging.INFO):
        report = world.sync("a")  # the daemon's next pass: same process, same pid
    assert not report.busy, "the client waited on its own lease"
    assert "earlier attempt of this process" in caplog.text
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a)
    assert {"one.txt", "two.txt"} <= set(tree(b))


# --------------------------------------------------------------------------- rules


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "file"])
def target(request: pytest.FixtureRequest) -> RelayTarget:
    found: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    return found


def _open(target: RelayTarget, folder: str) -> Relay:
    relay = target.relay(folder)
    relay.open()
    return relay


def _manager(relay: Relay, clock: Clock, client: str = CLIENT) -> LeaseManager:
    return LeaseManager(relay, plain_envelope(), client_id=client, label="mine", timeout=600, clock=clock)


def test_lost_release_is_taken_over_at_once(target: RelayTarget, caplog: pytest.LogCaptureFixture) -> None:
    folder = target.new_folder()
    clock = Clock()
    relay = _open(target, folder)
    lease = _manager(relay, clock).acquire()
    relay.close()  # the connection is gone: the release cannot reach the relay
    with caplog.at_level(logging.WARNING):
        lease.release()
    assert "could not release lease generation 1" in caplog.text
    relay = _open(target, folder)
    try:
        assert not _manager(relay, clock).read(relay, 1).released  # type: ignore[union-attr]
        again = _manager(relay, clock).acquire()  # the clock has not moved: nothing went stale
        assert again.generation == 2
        again.release()
    finally:
        relay.close()


def test_live_lease_of_this_process_is_not_taken(target: RelayTarget) -> None:
    clock = Clock()
    relay = _open(target, target.new_folder())
    try:
        held = _manager(relay, clock).acquire()
        with pytest.raises(LeaseBusy, match="held by mine"):
            _manager(relay, clock).acquire()
        held.release()
        _manager(relay, clock).acquire().release()
    finally:
        relay.close()


@pytest.fixture
def other_live_process() -> Iterator[int]:
    proc = subprocess.Popen(["sleep", "600"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _plant(relay: Relay, pid: int) -> None:
    relay.put_bytes(layout.lease_name(1), plain_envelope().seal(layout.lease_name(1), LeaseRecord(
        generation=1, holder=CLIENT, label="mine", host=socket.gethostname(), pid=pid, operation="sync",
        token="d" * 32, beat=0).encode()))


def test_same_client_in_another_live_process_holds(target: RelayTarget, other_live_process: int) -> None:
    clock = Clock()
    relay = _open(target, target.new_folder())
    try:
        _plant(relay, other_live_process)
        manager = _manager(relay, clock)
        with pytest.raises(LeaseBusy):
            manager.acquire()
        clock.now += 601  # like anyone's record: it goes stale
        manager.acquire().release()
    finally:
        relay.close()


def test_same_client_dead_process_or_other_host(target: RelayTarget) -> None:
    clock = Clock()
    relay = _open(target, target.new_folder())
    try:
        proc = subprocess.Popen(["true"])
        proc.wait()
        _plant(relay, proc.pid)  # a pid that is gone
        lease = _manager(relay, clock).acquire()
        assert lease.generation == 2
        lease.release()
        # our own pid, but on another host: not ours
        relay.put_bytes(layout.lease_name(3), plain_envelope().seal(layout.lease_name(3), LeaseRecord(
            generation=3, holder=CLIENT, label="mine", host="elsewhere.invalid", pid=os.getpid(),
            operation="sync", token="e" * 32, beat=0).encode()))
        with pytest.raises(LeaseBusy):
            _manager(relay, clock).acquire()
    finally:
        relay.close()
