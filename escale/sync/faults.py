"""A test-only hook that stops the process dead at a chosen mutating step.

Fault tests set ``ESCALE_CRASH_AT=N`` in the environment of a real ``escale``
process: the N-th call of :func:`step` (counting from 1) ends the process with
``os._exit(137)``, as abruptly as ``kill -9`` (no cleanup, no flush). With
``ESCALE_CRASH_LOG=FILE`` each step's name is appended to FILE first, so tests
can see which points were reached. ``ESCALE_PAUSE_AT=N`` instead stops the
whole process with ``SIGSTOP`` at the N-th step (every thread freezes, as on a
laptop that goes to sleep); it carries on from there when it receives
``SIGCONT``. Either variable may also hold a step's name instead of a number
(``ESCALE_PAUSE_AT="payload uploaded big.bin"``): the first step of that name.
Unset, :func:`step` only counts.

The steps are marked by the sync pass (:mod:`escale.sync.executor`,
:mod:`escale.sync.relay_phase`, the handoff of :mod:`escale.sync.delivery`) and, through the
``on_step`` hook of :class:`escale.protocol.repository.Repository`, inside the
protocol's multi-object operations (commit, retire, reclaim, clean-up).
"""

from __future__ import annotations

import os
import signal
import threading

_count = 0
#: steps are marked by transfer workers too: numbering them is one critical section
_lock = threading.Lock()
#: (crash log, crash at, pause at), read from the environment at the first step
_settings: tuple[str | None, str | None, str | None] | None = None


def _read_settings() -> tuple[str | None, str | None, str | None]:
    """The variables, read once per process (they are set when it starts). Called under ``_lock``."""
    global _settings
    if _settings is None:
        env = os.environ
        _settings = (env.get("ESCALE_CRASH_LOG") or None, env.get("ESCALE_CRASH_AT") or None,
                     env.get("ESCALE_PAUSE_AT") or None)
    return _settings


def steps_watched() -> bool:
    """Whether a fault test watches this process's steps (one of the
    variables is set). The sync pass then cuts its groups by count only, never
    by elapsed time: the same pass marks the same steps however busy the
    machine is, so a step numbered in a reference run is the same step when
    the test crashes the process there."""
    with _lock:
        return any(_read_settings())


def step(name: str) -> None:
    """Mark a mutating step; crash or pause here if this is the configured one.

    The variables are read once per process, at its first step: they are set
    when the process starts."""
    global _count
    with _lock:
        _count += 1
        number = _count
        log_path, crash_at, pause_at = _read_settings()
        if log_path is None and crash_at is None and pause_at is None:
            return
        if log_path:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(f"{number} {name}\n")
        # still under the lock: no other worker marks a later step first
        if _matches(crash_at, name, number):
            os._exit(137)
        if _matches(pause_at, name, number):
            os.kill(os.getpid(), signal.SIGSTOP)


_named_done: set[str] = set()


def _matches(target: str | None, name: str, number: int) -> bool:
    """Whether step ``number`` (called ``name``) is the one ``target`` (a
    number or a name) means. Called under ``_lock``."""
    if not target:
        return False
    if target.isdigit():
        return int(target) == number
    if target == name and target not in _named_done:
        _named_done.add(target)
        return True
    return False
