"""A lease record rewritten as a delete and a move is never claimed twice.

On WebDAV, putting over an existing object is a ``MOVE`` onto it, which the
servers carry out as a delete followed by the move: for an instant the
holder's record is missing. A contender listing then finds no record of the
holder's generation, claims that very generation, and its exclusive put (a
LOCK guard, atomic) succeeds before the holder's move lands over it. Taking
that put for the lease (as where a rewrite is atomic) made two holders of one
generation (found by ``test_lease_race.py`` on WsgiDAV under load). Such
claims settle and read back, and a renewal whose write failed is verified
again before the next commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import BinaryIO

import pytest

from escale.crypto import plain_envelope
from escale.errors import LeaseBusy, LeaseLost, RelayConnectionError
from escale.protocol import layout
from escale.protocol.lease import Lease, LeaseManager
from escale.relay.memory import MemoryRelay, MemoryStore

pytestmark = pytest.mark.timeout(60)


class DeleteThenMove(MemoryRelay):
    """A memory relay whose exclusive create is atomic but whose rewrite of an
    existing object is a delete, then the write: ``between`` runs in the gap
    of the next rewrite of a lease record (once); ``fail_move``: that
    rewrite stops after the delete and raises (a move answered 500)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.capabilities = replace(self.capabilities, atomic_put=False, rename_overwrite=False)
        self.between: Callable[[], None] | None = None
        self.fail_move = False

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if not exclusive and name.startswith(layout.LEASES + "/") and self.exists(name):
            self.delete(name)
            hook, self.between = self.between, None
            if hook is not None:
                hook()
            if self.fail_move:
                self.fail_move = False
                raise RelayConnectionError(f"MOVE onto {name}: 500 (injected, after the delete)")
        super()._put(name, source, exclusive)


def _managers(store: MemoryStore, settled: threading.Event) -> tuple[LeaseManager, LeaseManager, DeleteThenMove]:
    holder_relay, contender_relay = DeleteThenMove(store), DeleteThenMove(store)
    for relay in (holder_relay, contender_relay):
        relay.open()
    holder_relay.mkdir(layout.LEASES)
    envelope = plain_envelope()
    holder = LeaseManager(holder_relay, envelope, client_id="a" * 32, label="holder", timeout=60)
    # the contender's settle lasts until the holder's rewrite has finished (or failed)
    def settle(_: float) -> None:
        settled.wait(30)

    contender = LeaseManager(contender_relay, envelope, client_id="b" * 32, label="contender", timeout=60,
                             sleep=settle)
    return holder, contender, holder_relay


def _contend_in_the_gap(contender: LeaseManager, outcome: list[object]) -> tuple[Callable[[], None],
                                                                                 threading.Event]:
    """The hook that runs the contender's attempt while the record is missing:
    it returns once the contender's exclusive put has landed (or the attempt
    ended), the attempt itself going on in a thread (it settles); and the
    event set when the attempt has ended (its outcome in ``outcome``)."""
    landed, ended = threading.Event(), threading.Event()
    contender_put = contender.relay._put

    def put(name: str, source: BinaryIO, exclusive: bool) -> None:
        contender_put(name, source, exclusive)
        if exclusive:
            landed.set()

    contender.relay._put = put  # type: ignore[method-assign]

    def attempt() -> None:
        try:
            outcome.append(contender.acquire("race"))
        except Exception as exc:  # recorded for the assertions
            outcome.append(exc)
        landed.set()
        ended.set()

    def hook() -> None:
        threading.Thread(target=attempt, daemon=True).start()
        assert landed.wait(30), "the contender never wrote its record"

    return hook, ended


@pytest.mark.parametrize("rewrite", ["renewal", "release"])
def test_a_claim_in_the_gap_of_a_rewrite_stands_back(rewrite: str) -> None:
    store = MemoryStore()
    settled = threading.Event()
    holder, contender, holder_relay = _managers(store, settled)
    lease = holder.acquire("sync")
    outcome: list[object] = []
    holder_relay.between, ended = _contend_in_the_gap(contender, outcome)
    if rewrite == "renewal":
        lease.renew()
    else:
        lease.release()
    settled.set()
    assert ended.wait(30)  # the contender's attempt ends right after its settle
    assert isinstance(outcome[0], LeaseBusy), f"the contender took generation {lease.generation} too: {outcome[0]}"
    record = holder.read(holder_relay, lease.generation)
    assert record is not None and record.token == lease.record.token
    if rewrite == "renewal":
        lease.check()  # still the holder
        lease.release()


def test_a_renewal_cut_after_the_delete_is_verified_before_the_next_commit() -> None:
    store = MemoryStore()
    settled = threading.Event()
    holder, contender, holder_relay = _managers(store, settled)
    lease: Lease = holder.acquire("sync")
    outcome: list[object] = []
    holder_relay.between, ended = _contend_in_the_gap(contender, outcome)
    holder_relay.fail_move = True
    with pytest.raises(RelayConnectionError):
        lease.renew()
    settled.set()
    assert ended.wait(30)
    taken = outcome[0]
    assert isinstance(taken, Lease) and taken.generation == lease.generation  # the record is the contender's now
    with pytest.raises(LeaseLost, match="taken over"):
        lease.check()  # the holder commits nothing more under it
    lease.release()  # and its release leaves the contender's record alone
    record = holder.read(holder_relay, lease.generation)
    assert record is not None and record.token == taken.record.token and not record.released
    taken.release()
