"""A progress bar for long ``escalectl`` operations: on a terminal only.

::

    with Progress(total=len(objects), label="backup") as bar:
        for obj in objects:
            ...
            bar.advance()            # or bar.advance(n)

    with Progress(total_bytes, "restore", unit="bytes") as bar:
        bar.advance(len(chunk))

The bar is drawn on standard error, at most ten times a second, only when
standard error is a terminal (``stream.isatty()``); in a pipe, a log file or
under ``--json`` it prints nothing at all, so output stays parseable. ``total``
may be None (unknown): a counter is shown instead of a bar. On leaving the
``with`` block the line is finished with a newline (nothing when not drawing).
Not thread-safe: advance from one thread.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Literal, TextIO

Unit = Literal["items", "bytes"]

WIDTH = 30
#: Seconds between two redraws.
INTERVAL = 0.1


def human_size(size: int) -> str:
    """``size`` bytes for people: ``0 B``, ``999 B``, ``1.2 kB``, ``34.5 MB`` (powers of 1000)."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class Progress:
    """A progress display for ``total`` units of work (None: unknown)."""

    def __init__(self, total: int | None, label: str, *, unit: Unit = "items", stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._last_draw = 0.0
        self._drawn = False

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done; redraws when due."""
        self.done += n
        self._draw()

    def set_label(self, label: str) -> None:
        """Change the text before the bar (for example the current object)."""
        self.label = label
        self._draw()

    def close(self) -> None:
        """Draw the final state and end the line. Idempotent."""
        if self.enabled and self._drawn:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
            self.enabled = False

    def _amount(self, value: int) -> str:
        return human_size(value) if self.unit == "bytes" else str(value)

    def render(self) -> str:
        """The current line (without carriage return)."""
        if self.total:
            fraction = min(1.0, self.done / self.total)
            filled = int(WIDTH * fraction)
            bar = "#" * filled + "-" * (WIDTH - filled)
            return (f"{self.label} [{bar}] {fraction * 100:3.0f}% "
                    f"{self._amount(self.done)}/{self._amount(self.total)}")
        return f"{self.label} {self._amount(self.done)}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < INTERVAL:
            return
        self._last_draw = now
        self.stream.write("\r\033[K" + self.render())
        self.stream.flush()
        self._drawn = True
