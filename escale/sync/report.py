"""What a pass tells the outside: its report, its progress, its warnings.

:class:`PassReport` is filled by every phase of a pass and read by the daemon,
``escalectl status`` and the tests; :class:`TransferProgress` counts the
transfers for a progress bar; :class:`Announcer` logs each anomaly loudly once
per process and adds it to every report that sees it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from escale.sync.planner import Action

#: Action kinds counted as transfers for progress display.
TRANSFERS = frozenset({"pull", "conflict", "pull_copy", "delete_local", "push", "push_copy", "push_delete"})


@dataclass
class PassReport:
    """What one pass did. ``ok`` is False when the pass stopped on an error."""

    client: str
    pushed: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    deleted_local: list[str] = field(default_factory=list)
    deleted_remote: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: paths skipped or refused this pass and relay anomalies (rollbacks, stale
    #: receivers, diverged copies): one human line each, shown by ``escalectl status``
    warnings: list[str] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    pending_up: int = 0
    pending_down: int = 0
    pending_up_bytes: int = 0
    pending_down_bytes: int = 0
    relay_bytes: int = 0
    busy: bool = False
    ok: bool = True
    started: float = 0.0
    finished: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.pushed or self.pulled or self.deleted_local or self.deleted_remote or self.conflicts)

    def summary(self) -> str:
        parts = [f"{len(self.pushed)} sent", f"{len(self.pulled)} received"]
        if self.deleted_local or self.deleted_remote:
            parts.append(f"{len(self.deleted_local) + len(self.deleted_remote)} deleted")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} conflicts")
        if self.reclaimed:
            parts.append(f"{len(self.reclaimed)} reclaimed")
        if self.held:
            parts.append(f"{len(self.held)} deletions held")
        if self.errors:
            parts.append(f"{len(self.errors)} errors")
        if self.busy:
            parts.append("relay busy")
        return ", ".join(parts)


class TransferProgress:
    """The transfers of one pass, reported as ``callback(done, total)``.

    ``total`` counts the plan's actions of a :data:`TRANSFERS` kind; the
    callback is called once with ``(0, total)`` by :meth:`start` (when there is
    anything to transfer) and after each transfer done by :meth:`advance`.
    """

    def __init__(self, total: int = 0, callback: Callable[[int, int], None] | None = None) -> None:
        self.done = 0
        self.total = total
        self.callback = callback

    def start(self) -> None:
        if self.total and self.callback is not None:
            self.callback(0, self.total)

    def advance(self, action: Action) -> None:
        """Count ``action`` as done if it is a transfer."""
        if action.kind in TRANSFERS and self.total:
            self.done += 1
            if self.callback is not None:
                self.callback(self.done, self.total)


class Announcer:
    """Logs anomalies of one client loudly once per process.

    A daemon passes every ``refresh`` seconds: an anomaly that lasts would fill
    the log. The first time a line is announced in this process it is logged at
    its level; later announcements log it at DEBUG. Every announcement adds the
    line to the pass's warnings, so each report still shows it.
    """

    def __init__(self, client: str, logger: logging.Logger) -> None:
        self.client = client
        self.log = logger
        self._announced: set[str] = set()

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is asked about in this process."""
        if key in self._announced:
            return False
        self._announced.add(key)
        return True

    def __call__(self, report: PassReport, line: str, *, level: int = logging.WARNING) -> None:
        """Log ``line`` (first time in this process at ``level``, then DEBUG)
        and add it to the pass's warnings."""
        report.warnings.append(line)
        if self.first_time(line):
            self.log.log(level, "[%s] %s", self.client, line)
        else:
            self.log.debug("[%s] %s", self.client, line)
