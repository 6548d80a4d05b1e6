"""Contenders on a server without atomic create: someone always wins.

Issue 9, item 18: the lease race test failed twice on a loaded machine with
"nobody ever got the lease" (rclone's FTP and WebDAV servers). On a server that
can only check, then write, contenders overwrite each other's record of
generation ``g+1``; the one whose token the record holds after the settle wins.
The hole was a record whose writer then failed (a listing error after its
write): nobody held the lease, yet everyone saw a fresh record and waited for
it to go stale. Now a contender that does not become the holder withdraws
(marks its record released when the record still holds its token).

The relay here is the memory backend made as weak as the weakest server: its
exclusive create is a check, then an overwrite, and the contenders run in lock
step (every contender checks before anyone writes, and the settle is a barrier
that every write has passed). The clock never moves, so a record that blocks
would block for good: each round must have exactly one winner.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import BinaryIO

import pytest

from escale.crypto import plain_envelope
from escale.errors import LeaseBusy, RelayConnectionError, RelayExists
from escale.protocol import layout
from escale.protocol.lease import Lease, LeaseManager, Observation
from escale.relay.base import Entry
from escale.relay.memory import MemoryRelay, MemoryStore

pytestmark = pytest.mark.timeout(120)

CONTENDERS = 6
ROUNDS = 5


class CheckThenPut(MemoryRelay):
    """A memory relay whose exclusive create is not atomic (check, then put),
    with all contenders meeting between the check and the put."""

    def __init__(self, store: MemoryStore, checked: threading.Barrier) -> None:
        super().__init__(store)
        self.capabilities = replace(self.capabilities, exclusive_create=False)
        self.checked = checked
        self.fail_next_list = False

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if exclusive:
            exists = self.exists(name)
            self.checked.wait(timeout=30)  # everyone has checked: nobody saw another's write
            if exists:
                raise RelayExists(f"relay object exists: {name}", name=name)
        super()._put(name, source, False)

    def _list(self, folder: str) -> list[Entry]:
        if self.fail_next_list:
            self.fail_next_list = False
            raise RelayConnectionError(f"listing {folder}: connection reset (injected)")
        return super()._list(folder)


class Arena:
    """One repository and CONTENDERS clients (each with its own observations)."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.observations: list[dict[int, Observation]] = [{} for _ in range(CONTENDERS)]

    def observer(self) -> tuple[MemoryRelay, LeaseManager]:
        relay = MemoryRelay(self.store)
        relay.open()
        return relay, LeaseManager(relay, plain_envelope(), client_id="f" * 32, label="observer", timeout=60)

    def race(self, *, fail_after_settle: bool) -> list[tuple[int, int]]:
        """One round of lock-step acquisitions; returns (contender, generation)
        of each winner, after letting the winners go."""
        checked = threading.Barrier(CONTENDERS)
        settled = threading.Barrier(CONTENDERS)
        relays = [CheckThenPut(self.store, checked) for _ in range(CONTENDERS)]
        for relay in relays:
            relay.open()
        wins: list[tuple[int, Lease]] = []
        errors: list[BaseException] = []
        guard = threading.Lock()

        def contend(index: int) -> None:
            relay = relays[index]

            def settle(_: float) -> None:
                settled.wait(timeout=30)  # every write has landed
                relay.fail_next_list = fail_after_settle

            manager = LeaseManager(relay, plain_envelope(), client_id=f"{index:032x}", label=f"c{index}",
                                   timeout=60, settle=1.0, clock=lambda: 100.0, sleep=settle,
                                   observations=self.observations[index])
            try:
                lease = manager.acquire("race")
            except (LeaseBusy, RelayConnectionError):
                return
            except BaseException as exc:  # reported below
                errors.append(exc)
                return
            with guard:
                wins.append((index, lease))

        threads = [threading.Thread(target=contend, args=(i,)) for i in range(CONTENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        result = [(index, lease.generation) for index, lease in wins]
        for _, lease in wins:
            lease.release()
        for relay in relays:
            relay.close()
        return result


def test_lock_step_always_has_one_winner() -> None:
    arena = Arena()
    for round_ in range(ROUNDS):
        winners = arena.race(fail_after_settle=False)
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert winners[0][1] == round_ + 1


def test_a_writer_that_fails_after_writing_does_not_block_the_next_round() -> None:
    """Every contender's listing fails right after the settle: nobody wins
    that round, and the one whose token the record holds withdraws, so the
    very next round (the clock has not moved) has its winner."""
    arena = Arena()
    assert arena.race(fail_after_settle=True) == []
    relay, observer = arena.observer()
    record = observer.read(relay, 1)
    assert record is not None and record.released, "the failed writer left a live-looking record"
    winners = arena.race(fail_after_settle=False)
    assert len(winners) == 1 and winners[0][1] == 2, winners


def test_failed_rounds_leave_only_released_records() -> None:
    arena = Arena()
    for _ in range(3):
        assert arena.race(fail_after_settle=True) == []
    relay, observer = arena.observer()
    assert [e.name for e in relay.list(layout.LEASES)] == [layout.lease_name(g) for g in (1, 2, 3)]
    for generation in (1, 2, 3):
        record = observer.read(relay, generation)
        assert record is not None and record.released
    winners = arena.race(fail_after_settle=False)
    assert len(winners) == 1 and winners[0][1] == 4
