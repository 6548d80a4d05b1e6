"""Contenders on a server whose exclusive put does not decide: never two holders.

Where exclusive create is a check, then a write (the rclone remotes, rclone's
FTP and SFTP servers), or where a rewrite is a delete and a move (WebDAV),
contenders claim a generation first (rule 2 of :mod:`escale.protocol.lease`):
each puts a claim object of its own name, lists ``lease/``, and goes on to
write the record only when no other claim or record of that generation (or
above) is listed. Before claims, a contender whose write landed later than
another's settle overwrote a record the other had already read back as its
lease: generation 1 was held twice on rclone's SFTP remote on 2026-12-01.

The relay here is the memory backend made as weak as the weakest server (its
exclusive put is a check, then a write), and every relay request of every
contender waits for its turn: the test decides the order in which the
requests of the contenders interleave, one request at a time, including
between the check and the write of an exclusive put. Whatever the order,
at most one contender may hold the lease, and a loser leaves no claim
behind. The clock never moves, so anything that blocked would block for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escale.crypto import plain_envelope
from escale.errors import LeaseBusy, RelayExists
from escale.protocol import layout
from escale.protocol.lease import Lease, LeaseManager, list_leases, write_released
from escale.protocol.objects import LeaseRecord
from escale.relay.base import Entry
from escale.relay.memory import MemoryRelay, MemoryStore

pytestmark = pytest.mark.timeout(120)

TURN_TIMEOUT = 30.0


class Turns:
    """Lets one contender at a time make its next relay request, in the
    order ``choose`` picks among those waiting for their turn."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.condition = threading.Condition()
        self.waiting: set[int] = set()
        self.done: set[int] = set()
        self.go: int | None = None

    def wait_turn(self, index: int) -> None:
        """Called by contender ``index`` before each relay request."""
        with self.condition:
            self.waiting.add(index)
            self.condition.notify_all()
            if not self.condition.wait_for(lambda: self.go == index, timeout=TURN_TIMEOUT):
                raise AssertionError(f"contender {index} never got its turn")
            self.go = None
            self.waiting.discard(index)

    def finish(self, index: int) -> None:
        with self.condition:
            self.done.add(index)
            self.condition.notify_all()

    def run(self, choose: Callable[[list[int]], int]) -> None:
        """Give turns until every contender has finished."""
        while True:
            with self.condition:
                settled = self.condition.wait_for(
                    lambda: self.go is None and len(self.waiting) + len(self.done) == self.count,
                    timeout=TURN_TIMEOUT)
                assert settled, "a contender neither finished nor asked for a turn"
                if len(self.done) == self.count:
                    return
                self.go = choose(sorted(self.waiting))
                self.condition.notify_all()


class Weak(MemoryRelay):
    """A memory relay whose exclusive put is a check, then a write, each a
    request of its own; every request waits for its turn when ``turns`` is set."""

    def __init__(self, store: MemoryStore, turns: Turns | None = None, index: int = 0) -> None:
        super().__init__(store)
        self.capabilities = replace(self.capabilities, exclusive_create=False)
        self.turns = turns
        self.index = index

    def _turn(self) -> None:
        if self.turns is not None:
            self.turns.wait_turn(self.index)

    def _list(self, folder: str) -> list[Entry]:
        self._turn()
        return super()._list(folder)

    def _get(self, name: str, sink: BinaryIO) -> None:
        self._turn()
        super()._get(name, sink)

    def _delete(self, name: str) -> None:
        self._turn()
        super()._delete(name)

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        self._turn()
        if exclusive:
            exists = self.exists(name)  # no turn of its own: MemoryRelay.exists is a _stat
            self._turn()
            if exists:
                raise RelayExists(f"relay object exists: {name}", name=name)
        super()._put(name, source, False)


def _setup(start: str) -> MemoryStore:
    """A repository whose ``lease/`` is empty, or holds a released generation 1."""
    store = MemoryStore()
    relay = MemoryRelay(store)
    relay.open()
    relay.mkdir(layout.LEASES)
    if start == "released":
        write_released(relay, plain_envelope(), LeaseRecord(
            generation=1, holder="e" * 32, label="earlier", host="elsewhere", pid=1, operation="sync",
            token="0" * 32, beat=0))
    return store


def _contend(store: MemoryStore, count: int, choose: Callable[[list[int]], int]) -> list[Lease]:
    """``count`` contenders try once each, their requests in ``choose``'s
    order; the leases taken (held: nobody releases)."""
    turns = Turns(count)
    won: list[Lease] = []
    errors: list[BaseException] = []

    def contend(index: int) -> None:
        relay = Weak(store, turns, index)
        relay.open()
        manager = LeaseManager(relay, plain_envelope(), client_id=f"{index + 1:032x}", label=f"c{index}",
                               timeout=60, clock=lambda: 100.0)
        try:
            won.append(manager.acquire("race"))
        except LeaseBusy:
            pass
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            turns.finish(index)

    threads = [threading.Thread(target=contend, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    turns.run(choose)
    for thread in threads:
        thread.join(TURN_TIMEOUT)
    assert not errors, errors
    return won


def _check_outcome(store: MemoryStore, won: list[Lease]) -> None:
    """At most one holder; its record is its own; no loser's claim is left."""
    assert len(won) <= 1, f"{len(won)} holders: generations {[lease.generation for lease in won]}"
    relay = MemoryRelay(store)
    relay.open()
    claims = list_leases(relay).claims
    left = {token for tokens in claims.values() for token in tokens}
    if won:
        lease = won[0]
        manager = LeaseManager(relay, plain_envelope(), client_id="f" * 32, label="observer", timeout=60)
        record = manager.read(relay, lease.generation)
        assert record is not None and record.token == lease.record.token and not record.released
        assert left == {lease.record.token}, f"claims left besides the holder's: {claims}"
    else:
        assert not left, f"claims left although nobody holds the lease: {claims}"


@settings(max_examples=80, deadline=None)
@given(data=st.data(), count=st.integers(2, 4), start=st.sampled_from(["empty", "released"]))
def test_any_interleaving_has_at_most_one_holder(data: st.DataObject, count: int, start: str) -> None:
    store = _setup(start)
    won = _contend(store, count, lambda ready: data.draw(st.sampled_from(ready)))
    _check_outcome(store, won)


@pytest.mark.parametrize("stall_at", range(1, 7))
def test_a_contender_stalled_at_any_request_while_another_takes_the_lease(stall_at: int) -> None:
    """Contender 0 stalls before its ``stall_at``-th request while contender
    1 makes every request of its attempt; then contender 0 goes on (the
    2026-12-01 case was a stall between the check and the write)."""
    store = _setup("released")
    turns_of_0 = [0]

    def choose(ready: list[int]) -> int:
        if 0 in ready and (turns_of_0[0] + 1 < stall_at or 1 not in ready):
            turns_of_0[0] += 1
            return 0
        return 1

    won = _contend(store, 2, choose)
    assert len(won) == 1, "someone must hold the lease: the stalled contender or the other"
    _check_outcome(store, won)


def test_contenders_in_lock_step_all_back_off_and_one_alone_wins_at_once() -> None:
    """Claims made in lock step see each other: everyone backs off (a pass
    tries again after a pause with jitter) and withdraws its claim, so a
    contender alone right after wins without waiting for anything to go
    stale (the clock has not moved)."""
    store = _setup("released")
    turns = [0] * 4

    def lock_step(ready: list[int]) -> int:
        index = min(ready, key=lambda i: (turns[i], i))  # the one that is behind the others
        turns[index] += 1
        return index

    won = _contend(store, 4, lock_step)
    assert won == []
    _check_outcome(store, won)
    won = _contend(store, 1, lambda ready: ready[0])
    assert len(won) == 1 and won[0].generation == 2
    _check_outcome(store, won)
