"""Eight clients race for one lease: at most one holder at any instant.

Each of eight threads opens its own connection to the relay (as separate
clients would) and its own :class:`LeaseManager` (its own client id). In each
round the threads meet at a barrier, optionally wait a random jitter, and call
``acquire``; a winner notes the instant it got the lease and the instant it
lets go on one shared clock (``time.monotonic`` of this process), then
releases. Afterwards no two holding intervals may overlap. Liveness is
checked as a pass sees it: rounds go on past the fourth (up to twelve) while
nobody has held the lease yet, since one round may end with every racer
withdrawn where exclusive create is not atomic.

Backends whose exclusive put decides by itself (local folder, OpenSSH,
pyftpdlib's MKD guard) rely on it; the others (rclone remotes, rclone serve
ftp and sftp, WebDAV whose rewrite is a delete and a move) claim first
(doc/protocol.rst, *The lease*): each racer puts a claim of its own name,
lists, and writes the record only when no other claim is listed; a racer
that saw another's claim withdraws its own. The test uses each backend's own
relay class opened directly, so its declared capabilities (and no more)
decide which rule is in force; the figures (rounds, winners) are printed per
backend.

An attempt that fails with a relay error (rclone serve webdav sometimes appends
``Internal Server Error`` to a PROPFIND answer when an object vanishes while it
lists) counts as not holding: the pass that made it fails and is retried. Such
failures are counted and printed, never taken for a hold. A transient one (a
dropped connection, a request unanswered within the relay's timeout, as on a
busy host) leaves that racer's connection closed for good, so the racer
connects again before its next round, as the next pass would: otherwise a
stall of the server early on would silence every racer for the rest of the
test and look like a lease nobody can take. What each round saw is part of
the liveness failure's message.
"""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest

from escale.crypto import plain_envelope
from escale.errors import EscaleError, LeaseBusy
from escale.protocol import layout
from escale.protocol.lease import LeaseManager
from escale.relay import Relay
from tests.relay.backends import PROCESS_BACKENDS
from tests.servers.target import RelayTarget

CONTENDERS = 8
ROUNDS = 4
#: rounds run past ROUNDS while nobody has held the lease yet: where racers
#: claim, every racer of a round may lose (each sees another's claim), as a
#: pass would, and try again later; liveness is "some round wins"
MAX_ROUNDS = 12
TIMEOUT = 10.0  # lock timeout
#: odd rounds spread the racers' arrivals over this many seconds
SPREAD = 0.5
HOLD = 0.15


@pytest.mark.timeout(240)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_at_most_one_holder(request: pytest.FixtureRequest, backend: str) -> None:
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    folder = target.new_folder()
    relays: list[Relay] = []

    def close_all() -> None:  # whatever the outcome
        for relay in relays:
            relay.close()

    request.addfinalizer(close_all)
    for _ in range(CONTENDERS):
        relay = target.relay(folder)
        relays.append(relay)
        relay.open()
    relays[0].mkdir(layout.LEASES)  # as Repository.prepare() does before any lease
    managers = [LeaseManager(r, plain_envelope(), client_id=f"{i:032x}", label=f"racer{i}", timeout=TIMEOUT)
                for i, r in enumerate(relays)]
    barrier = threading.Barrier(CONTENDERS)
    intervals: list[tuple[float, float, int, int]] = []  # start, end, racer, generation
    busy = [0]
    failed: list[str] = []
    reopened = [0]
    #: what each round saw, racer by racer ("held", "busy", "failed"), for the liveness message
    seen: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    guard = threading.Lock()

    def reconnect(index: int) -> None:
        """Connect racer ``index`` again after a transient failure (its
        connection is gone, as the next pass's would not be); a failure to
        connect is that of its next attempt."""
        try:
            relays[index].open()  # reconnects
        except EscaleError:
            return
        with guard:
            reopened[0] += 1

    def race(index: int) -> None:
        rng = random.Random(index)
        manager = managers[index]
        try:
            for round_ in range(MAX_ROUNDS):
                barrier.wait(timeout=120)
                # every holder of the last round noted its hold before this barrier
                if round_ >= ROUNDS and intervals:
                    break
                if round_ % 2:  # odd rounds: arrivals spread out, as passes on several machines
                    time.sleep(rng.uniform(0, SPREAD))
                try:
                    lease = manager.acquire("race")
                except LeaseBusy:
                    with guard:
                        busy[0] += 1
                        seen.setdefault(round_, []).append("busy")
                    continue
                except EscaleError as exc:  # the attempt failed: not a holder (a pass would retry)
                    with guard:
                        failed.append(f"round {round_}, racer {index}: {type(exc).__name__}: {exc}")
                        seen.setdefault(round_, []).append("failed")
                    if exc.transient:
                        reconnect(index)
                    continue
                start = time.monotonic()
                time.sleep(HOLD)
                end = time.monotonic()
                with guard:
                    intervals.append((start, end, index, lease.generation))
                    seen.setdefault(round_, []).append("held")
                lease.release()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=race, args=(i,)) for i in range(CONTENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    print(f"\n[{backend}] exclusive create {relays[0].capabilities.exclusive_create}, claims "
          f"{managers[0].claims}: {ROUNDS}+ rounds x {CONTENDERS} racers, {len(intervals)} holds, "
          f"{busy[0]} refused, {len(failed)} failed with a relay error"
          + (f" (first error: {failed[0]})" if failed else "") + f", {reopened[0]} reconnected")
    intervals.sort()
    for (_, e1, r1, g1), (s2, _, r2, g2) in itertools.pairwise(intervals):
        assert s2 >= e1, (f"{backend}: racer {r1} (generation {g1}) and racer {r2} (generation {g2}) "
                          f"held the lease at the same time")
    generations = [g for *_, g in intervals]
    assert len(set(generations)) == len(generations), f"{backend}: two holders of one generation"
    rounds = "; ".join(f"round {r}: " + ", ".join(f"{seen[r].count(w)} {w}" for w in ("busy", "failed"))
                       for r in sorted(seen))
    assert intervals, (f"{backend}: nobody got the lease in {MAX_ROUNDS} rounds ({rounds}; "
                       f"errors: {failed[:3]})")
