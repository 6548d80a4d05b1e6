"""A progress bar for long ``escalectl`` operations: on a terminal only.

::

    with Progress(total=len(objects), label="backup") as bar:
        for obj in objects:
            ...
            bar.advance()            # or bar.advance(n)

    with Progress(total_bytes, "restore", unit="bytes") as bar:
        bar.advance(len(chunk))

Drawing is tqdm's (label, percentage, bar, counts, rate and time left). The
contract kept on top of it: the bar goes to standard error, at most ten times
a second, and only when that stream is a terminal (``stream.isatty()``); in a
pipe, a log file or under ``--json`` (``enabled=False``) nothing at all is
written, so output stays parseable. ``total`` may be None (unknown): a
counter is shown instead of a bar. Leaving the ``with`` block (or
:meth:`Progress.close`) draws the final state and ends the line; nothing when
not drawing. :attr:`Progress.done` counts the units advanced whether drawn or
not. Not thread-safe: advance from one thread.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Literal, NoReturn, TextIO

if TYPE_CHECKING:  # imported when a bar is drawn: a pass without one does not pay for it
    from tqdm import tqdm

Unit = Literal["items", "bytes"]

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


def _screen(stream: TextIO) -> tuple[int | None, int | None]:
    """The terminal's columns and lines, each 80/24 when it reports 0 (a
    pseudo-terminal whose size was never set says 0x0, and tqdm then draws
    nothing at all); None when the stream has no terminal size."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None, None
    return size.columns or 80, size.lines or 24


class Progress:
    """A progress display for ``total`` units of work (None: unknown).

    ``enabled`` None means "when ``stream`` is a terminal"; ``stream`` defaults
    to the standard error of the moment the bar is made.
    """

    def __init__(self, total: int | None, label: str, *, unit: Unit = "items", stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.label = label
        self.unit = unit
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._total = total
        self._bar: tqdm[NoReturn] | None = None
        if enabled:
            from tqdm import tqdm  # imported here: see the module imports

            scaled = unit == "bytes"
            self._bar = tqdm(total=total, desc=label, file=self.stream, mininterval=INTERVAL,
                             ncols=_screen(self.stream)[0], nrows=_screen(self.stream)[1],
                             unit="B" if scaled else " items", unit_scale=scaled, unit_divisor=1000,
                             leave=True)

    @property
    def total(self) -> int | None:
        """The units of work in all (None: unknown); may be changed while running."""
        return self._total

    @total.setter
    def total(self, total: int | None) -> None:
        self._total = total
        if self._bar is not None and self._bar.total != total:
            self._bar.total = total
            self._bar.refresh()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done; redraws when due."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        """Draw the final state and end the line. Idempotent."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.enabled = False
