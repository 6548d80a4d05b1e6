"""Progress display for the whole-repository operations (backup, restore, migrate, fix).

The operations in :mod:`escale.ops` report progress through a callback
``on_progress(done, total)``; :class:`ProgressCallback` turns those calls into
the shared :class:`escale.cli.progress.Progress` bar, which is drawn only on a
terminal (never in a pipe, a log or under ``--json``).
"""

from __future__ import annotations

from types import TracebackType
from typing import TextIO

from escale.cli.progress import Progress


class ProgressCallback:
    """Use as ``on_progress``; close it (or use ``with``) when the operation ends.

    The bar is made on the first call; ``enabled`` and ``stream`` are passed to
    :class:`~escale.cli.progress.Progress` (None: standard error, drawn only on a terminal).
    """

    def __init__(self, label: str, *, enabled: bool | None = None, stream: TextIO | None = None) -> None:
        self.label = label
        self.enabled = enabled
        self.stream = stream
        self._bar: Progress | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = Progress(total, self.label, enabled=self.enabled, stream=self.stream)
        self._bar.total = total
        if done > self._bar.done:
            self._bar.advance(done - self._bar.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> ProgressCallback:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def progress_for(label: str, json_output: bool) -> ProgressCallback:
    """The progress callback of a command: silent under ``--json``."""
    return ProgressCallback(label, enabled=False if json_output else None)
