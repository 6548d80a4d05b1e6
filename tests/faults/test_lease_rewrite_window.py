"""A lease record rewritten as a delete and a move is never claimed twice.

On WebDAV, putting over an existing object is a ``MOVE`` onto it, which the
servers carry out as a delete followed by the move: for an instant the
holder's record is missing. A contender listing then finds no record of the
holder's generation. Taking that generation with an exclusive put (a LOCK
guard, atomic) made two holders of one generation (found by
``test_lease_race.py`` on WsgiDAV under load). On such servers contenders
claim first (rule 2 of :mod:`escale.protocol.lease`), and the holder's claim,
never rewritten, is still listed in the gap: the contender finds the
generation claimed and stands back. A renewal whose write failed is
verified again before the next commit.
"""

from __future__ import annotations

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


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _managers(store: MemoryStore, clock: Clock) -> tuple[LeaseManager, LeaseManager, DeleteThenMove]:
    holder_relay, contender_relay = DeleteThenMove(store), DeleteThenMove(store)
    for relay in (holder_relay, contender_relay):
        relay.open()
    holder_relay.mkdir(layout.LEASES)
    envelope = plain_envelope()
    holder = LeaseManager(holder_relay, envelope, client_id="a" * 32, label="holder", timeout=60)
    contender = LeaseManager(contender_relay, envelope, client_id="b" * 32, label="contender", timeout=60,
                             clock=clock)
    return holder, contender, holder_relay


def _contend_in_the_gap(contender: LeaseManager, outcome: list[object]) -> Callable[[], None]:
    """The hook that runs the contender's attempt while the record is
    missing; its outcome (a lease, or what it raised) goes to ``outcome``."""

    def attempt() -> None:
        try:
            outcome.append(contender.acquire("race"))
        except Exception as exc:  # recorded for the assertions
            outcome.append(exc)

    return attempt


@pytest.mark.parametrize("rewrite", ["renewal", "release"])
def test_a_contender_in_the_gap_of_a_rewrite_stands_back(rewrite: str) -> None:
    store = MemoryStore()
    holder, contender, holder_relay = _managers(store, Clock())
    lease = holder.acquire("sync")
    outcome: list[object] = []
    holder_relay.between = _contend_in_the_gap(contender, outcome)
    if rewrite == "renewal":
        lease.renew()
    else:
        lease.release()
    assert isinstance(outcome[0], LeaseBusy), f"the contender took generation {lease.generation} too: {outcome[0]}"
    assert "being claimed" in str(outcome[0])
    record = holder.read(holder_relay, lease.generation)
    assert record is not None and record.token == lease.record.token
    if rewrite == "renewal":
        lease.check()  # still the holder
        lease.release()
    else:
        assert record.released
        assert contender.acquire("sync").generation == lease.generation + 1


def test_a_renewal_cut_after_the_delete_is_verified_before_the_next_commit() -> None:
    store = MemoryStore()
    clock = Clock()
    holder, contender, holder_relay = _managers(store, clock)
    lease: Lease = holder.acquire("sync")
    outcome: list[object] = []
    holder_relay.between = _contend_in_the_gap(contender, outcome)
    holder_relay.fail_move = True
    with pytest.raises(RelayConnectionError):
        lease.renew()
    assert isinstance(outcome[0], LeaseBusy)  # the gap did not let the contender in
    with pytest.raises(LeaseLost):
        lease.check()  # the record is gone: the holder commits nothing more under it
    lease.release()
    # the holder's claim, alone, goes stale like a record
    with pytest.raises(LeaseBusy):
        contender.acquire("sync")
    clock.now += 61
    assert contender.acquire("sync").generation == lease.generation + 1
