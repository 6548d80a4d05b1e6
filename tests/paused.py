"""Waiting for a real process to reach its pause point (``ESCALE_PAUSE_AT``)."""

from __future__ import annotations

import time


def wait_stopped(pid: int, timeout: float = 90.0) -> None:
    """Return once process ``pid`` is stopped (state T in /proc: it reached its
    pause step and sent itself SIGSTOP). AssertionError if it ended first or
    did not stop within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rpartition(")")[2].split()[0]
        if state in ("T", "t"):
            return
        if state == "Z":
            raise AssertionError("the escale process ended before reaching its pause point")
        time.sleep(0.05)
    raise AssertionError("the escale process never paused")
