"""Waiting for a busy lease: the one loop every lease holder uses.

:meth:`LeaseManager.acquire` tries once and raises LeaseBusy while another
client holds the lease. Both the sync pass and the whole-repository operations
want to try again for a while; :func:`acquire_with_wait` is that loop, so the
polling rule (how often, until when, when to give up) is written once.
Starting the heartbeat stays with the caller, which knows which connection
renews the lease.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

from escale.errors import LeaseBusy
from escale.protocol.lease import Lease, LeaseManager


def poll_interval(timeout: float) -> float:
    """Seconds between two attempts on a busy lease of lock timeout ``timeout``:
    a twentieth of it, at least 0.2 s and at most 2 s."""
    return min(2.0, max(0.2, timeout / 20))


def acquire_with_wait(
    manager: LeaseManager,
    operation: str,
    *,
    wait: float,
    stop: threading.Event | None = None,
    poll: float | None = None,
    on_wait: Callable[[LeaseBusy], None] | None = None,
) -> Lease:
    """Take ``manager``'s lease for ``operation``, trying again while it is busy.

    Tries at once, then again after each pause of ``poll`` seconds (None:
    :func:`poll_interval` of the manager's timeout), stretched or shortened
    by up to half at random (contenders whose claims met back off together;
    the jitter keeps them from meeting again), until ``wait`` seconds have
    passed since the call or ``stop`` is set; then re-raises the last
    LeaseBusy. ``on_wait(exc)`` is called before each pause. Every other error
    of an attempt is raised at once.
    The heartbeat is not started: the caller starts it on the lease returned.
    """
    pause = poll_interval(manager.timeout) if poll is None else poll
    deadline = time.monotonic() + wait
    while True:
        try:
            return manager.acquire(operation)
        except LeaseBusy as exc:
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                raise
            if on_wait is not None:
                on_wait(exc)
            time.sleep(pause * random.uniform(0.5, 1.5))
