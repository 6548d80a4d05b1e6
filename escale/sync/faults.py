"""A test-only hook that stops the process dead at a chosen mutating step.

Fault tests set ``ESCALE_CRASH_AT=N`` in the environment of a real ``escale``
process: the N-th call of :func:`step` (counting from 1) ends the process with
``os._exit(137)``, as abruptly as ``kill -9`` (no cleanup, no flush). With
``ESCALE_CRASH_LOG=FILE`` each step's name is appended to FILE first, so tests
can see which points were reached. ``ESCALE_PAUSE_AT=N`` instead stops the
whole process with ``SIGSTOP`` at the N-th step (every thread freezes, as on a
laptop that goes to sleep); it carries on from there when it receives
``SIGCONT``. Unset, :func:`step` only counts.

The steps are marked by :mod:`escale.sync.client` and, through the
``on_step`` hook of :class:`escale.protocol.repository.Repository`, inside the
protocol's multi-object operations (commit, retire, reclaim, clean-up).
"""

from __future__ import annotations

import os
import signal

_count = 0


def step(name: str) -> None:
    """Mark a mutating step; crash or pause here if this is the configured one."""
    global _count
    _count += 1
    log_path = os.environ.get("ESCALE_CRASH_LOG")
    if log_path:
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(f"{_count} {name}\n")
    target = os.environ.get("ESCALE_CRASH_AT")
    if target and int(target) == _count:
        os._exit(137)
    pause = os.environ.get("ESCALE_PAUSE_AT")
    if pause and int(pause) == _count:
        os.kill(os.getpid(), signal.SIGSTOP)
