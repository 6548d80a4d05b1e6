"""The one back-off schedule: a wait that doubles after each failure, up to a cap.

A layer-free helper (it imports nothing of escale) for every retry loop: the
relay retry wrapper, the FTP and WebDAV guards, the daemon's failing clients.
"""

from __future__ import annotations

import random


class Backoff:
    """Successive waits: ``first``, then each one doubled, never above ``cap``.

    ``floor``: each doubled wait is at least this (a ``first`` of 0 still grows).
    ``jitter``: ``(low, high)`` factors; each wait returned is multiplied by a
    random factor between them, so that clients that failed together do not
    retry together. The default ``(1.0, 1.0)`` returns the schedule unchanged.
    Not thread-safe: one schedule per loop.
    """

    def __init__(
        self, first: float, cap: float, *, floor: float = 0.0, jitter: tuple[float, float] = (1.0, 1.0)
    ) -> None:
        self.first = first
        self.cap = cap
        self.floor = floor
        self.jitter = jitter
        self._current = first

    @property
    def current(self) -> float:
        """The wait the next :meth:`next` returns (before jitter)."""
        return self._current

    def next(self) -> float:
        """The wait before the next attempt (with jitter); the schedule moves on."""
        wait = self._current
        self._current = min(self.cap, max(wait * 2, self.floor))
        low, high = self.jitter
        if low == high == 1.0:
            return wait
        return wait * (low + random.random() * (high - low))

    def reset(self) -> None:
        """Start again from ``first`` (after a success)."""
        self._current = self.first
