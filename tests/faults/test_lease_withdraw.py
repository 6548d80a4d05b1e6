"""Claims that did not become a lease never block the others for long.

Where the exclusive put does not decide, a contender claims a generation
before writing its record (rule 2 of :mod:`escale.protocol.lease`). Every way
an attempt can end without the lease must leave the next contender free to
take one at once (the clock here does not move unless a test moves it), or,
for what a dead contender left, once it has been seen unchanged for longer
than the lock timeout:

* a listing that fails after the claim: the claim is deleted;
* a claim put that lands but whose answer is lost: deleted as well;
* a record write that lands but whose answer is lost: the record is
  rewritten released (the contender won the claims: nobody else writes it);
* a claim left by this client's own dead process: taken over at once;
* a claim left by another client (or one that does not open): busy until it
  has been seen unchanged for longer than the timeout, then the generation
  above it is taken;
* a record that does not read back as ours (written over by a contender
  stalled past the timeout): not a lease, and the other record is left alone.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from dataclasses import replace
from typing import BinaryIO

import pytest

from escale.crypto import plain_envelope
from escale.errors import LeaseBusy, RelayConnectionError
from escale.protocol import layout
from escale.protocol.lease import LeaseManager, list_leases
from escale.protocol.objects import LeaseRecord
from escale.relay.base import Entry
from escale.relay.memory import MemoryRelay, MemoryStore

pytestmark = pytest.mark.timeout(60)

OURS = "a" * 32


class Faulty(MemoryRelay):
    """A memory relay whose exclusive create is not atomic, with one-shot
    faults: ``fail_list`` (the next listing of ``lease/`` after a claim was
    put fails), ``lost_answer`` (the next put whose name starts with it, or
    is it when ``lost_answer_exact``, lands, then raises)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.capabilities = replace(self.capabilities, exclusive_create=False)
        self.fail_list = False
        self.lost_answer: str | None = None
        self.lost_answer_exact = False
        self.claimed = False

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if exclusive and self.exists(name):
            super()._put(name, source, True)  # raises RelayExists
        super()._put(name, source, False)
        self.claimed = self.claimed or layout.parse_lease_claim(name) is not None
        if self.lost_answer is not None and (
                name == self.lost_answer if self.lost_answer_exact else name.startswith(self.lost_answer)):
            self.lost_answer = None
            raise RelayConnectionError(f"putting {name}: no answer (injected, after the write landed)")

    def _list(self, folder: str) -> list[Entry]:
        if self.fail_list and self.claimed:
            self.fail_list = False
            raise RelayConnectionError(f"listing {folder}: connection reset (injected)")
        return super()._list(folder)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _relay(store: MemoryStore) -> Faulty:
    relay = Faulty(store)
    relay.open()
    return relay


def _manager(relay: MemoryRelay, client: str = OURS, clock: Clock | None = None) -> LeaseManager:
    return LeaseManager(relay, plain_envelope(), client_id=client, label=client[:4], timeout=60,
                        clock=clock or Clock())


def _store() -> MemoryStore:
    store = MemoryStore()
    setup = MemoryRelay(store)
    setup.open()
    setup.mkdir(layout.LEASES)
    return store


def _claims(store: MemoryStore) -> dict[int, list[str]]:
    relay = MemoryRelay(store)
    relay.open()
    return list_leases(relay).claims


def test_a_listing_that_fails_after_the_claim_withdraws_it() -> None:
    store = _store()
    relay = _relay(store)
    relay.fail_list = True
    with pytest.raises(RelayConnectionError):
        _manager(relay).acquire("sync")
    assert _claims(store) == {}
    lease = _manager(_relay(store), "b" * 32).acquire("sync")
    assert lease.generation == 1


def test_a_claim_whose_answer_was_lost_is_withdrawn() -> None:
    store = _store()
    relay = _relay(store)
    relay.lost_answer = layout.lease_name(1) + "-"
    with pytest.raises(RelayConnectionError):
        _manager(relay).acquire("sync")
    assert _claims(store) == {}
    assert _manager(_relay(store), "b" * 32).acquire("sync").generation == 1


def test_a_record_whose_answer_was_lost_is_rewritten_released() -> None:
    store = _store()
    relay = _relay(store)
    relay.lost_answer = layout.lease_name(1)  # the claim lands first: its name is longer
    relay.lost_answer_exact = True
    ours = _manager(relay)
    with pytest.raises(RelayConnectionError):
        ours.acquire("sync")
    record = ours.read(relay, 1)
    assert record is not None and record.released
    assert _manager(_relay(store), "b" * 32).acquire("sync").generation == 2


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _plant_claim(store: MemoryStore, *, holder: str, host: str, pid: int, token: str = "c" * 32,
                 sealed: bytes | None = None) -> None:
    relay = MemoryRelay(store)
    relay.open()
    name = layout.lease_claim_name(1, token)
    record = LeaseRecord(generation=1, holder=holder, label="left", host=host, pid=pid, operation="sync",
                         token=token, beat=0)
    relay.put_bytes(name, sealed if sealed is not None else plain_envelope().seal(name, record.encode()))


def test_our_own_dead_process_s_claim_is_taken_over_at_once() -> None:
    store = _store()
    _plant_claim(store, holder=OURS, host=socket.gethostname(), pid=_dead_pid())
    lease = _manager(_relay(store)).acquire("sync")
    assert lease.generation == 2


@pytest.mark.parametrize("claim", ["another client's", "unreadable", "ours, from a live process"])
def test_a_claim_left_without_a_record_goes_stale_like_a_record(claim: str) -> None:
    store = _store()
    if claim == "another client's":
        _plant_claim(store, holder="b" * 32, host="elsewhere", pid=1)
    elif claim == "unreadable":
        _plant_claim(store, holder="b" * 32, host="elsewhere", pid=1, sealed=b"not a sealed record")
    else:  # this test's parent process is alive: another process of our client
        _plant_claim(store, holder=OURS, host=socket.gethostname(), pid=os.getppid())
    clock = Clock()
    manager = _manager(_relay(store), clock=clock)
    with pytest.raises(LeaseBusy, match="generation 1 is being claimed"):
        manager.acquire("sync")
    clock.now += 59
    with pytest.raises(LeaseBusy):
        manager.acquire("sync")
    clock.now += 2  # seen unchanged for longer than the timeout
    assert manager.acquire("sync").generation == 2


def test_a_record_that_does_not_read_back_as_ours_is_not_a_lease() -> None:
    """A contender that stalled past the lock timeout after its own claim
    writes the same record right after ours (the only way another token can
    land there): the read-back sees it, and we back off."""
    store = _store()

    class Overwritten(Faulty):
        def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
            super()._put(name, source, exclusive)
            if name == layout.lease_name(1):
                late = LeaseRecord(generation=1, holder="b" * 32, label="late", host="elsewhere", pid=1,
                                   operation="sync", token="d" * 32, beat=0)
                MemoryRelay._put(self, name, io.BytesIO(plain_envelope().seal(name, late.encode())), False)

    relay = Overwritten(store)
    relay.open()
    with pytest.raises(LeaseBusy, match="does not read back as ours"):
        _manager(relay).acquire("sync")
    record = _manager(relay).read(relay, 1)
    assert record is not None and record.token == "d" * 32 and not record.released, "the other record was touched"
