"""Runs every configured client: once, or forever with back-off.

Each client runs in its own thread. A pass that fails is logged, and the client
is retried after a back-off that doubles from its ``refresh`` up to 10 minutes;
it never stops the other clients. :meth:`Runner.stop` asks every client to stop
after the object it is transferring (the state database is always up to date).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from escale.config.settings import ClientSettings, Config
from escale.errors import EX_OK, EX_SOFTWARE, EscaleError
from escale.sync.client import PassReport, SyncClient

log = logging.getLogger(__name__)

MAX_BACKOFF = 600.0


@dataclass
class ClientStatus:
    """What the daemon knows of one client, for ``escalectl status``."""

    name: str
    running: bool = False
    passes: int = 0
    failures: int = 0
    last_report: PassReport | None = None
    last_error: str | None = None
    next_pass: float = 0.0


@dataclass
class Runner:
    """All clients of one configuration."""

    config: Config
    allow_mass_deletion: bool = False
    notify: Callable[[ClientSettings, str], None] | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    statuses: dict[str, ClientStatus] = field(default_factory=dict)
    clients: dict[str, SyncClient] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for settings in self.config.clients:
            self.clients[settings.name] = SyncClient(
                settings, stop=self.stop_event, allow_mass_deletion=self.allow_mass_deletion,
                lease_wait=0.0)
            self.statuses[settings.name] = ClientStatus(settings.name)

    def run_once(self, names: list[str] | None = None, lease_wait: float | None = None) -> int:
        """One pass of each client (in file order); the exit code: 0 when all
        succeeded, else the highest error's exit code."""
        code = EX_OK
        for name, client in self.clients.items():
            if names and name not in names:
                continue
            if lease_wait is not None:
                client.lease_wait = lease_wait
            status = self.statuses[name]
            try:
                report = client.run_pass()
                status.last_report, status.last_error = report, None
                if report.busy:
                    log.warning("[%s] relay busy: some changes wait for the next pass", name)
                log.info("[%s] pass done: %s", name, report.summary())
                if report.errors:
                    code = max(code, EX_SOFTWARE)
            except EscaleError as exc:
                status.last_error = str(exc)
                status.last_report = client.last_report
                log.error("[%s] %s", name, exc)
                code = max(code, exc.exit_code)
            status.passes += 1
        return code

    def _loop(self, name: str) -> None:
        client = self.clients[name]
        status = self.statuses[name]
        settings = client.settings
        backoff = settings.refresh
        status.running = True
        while not self.stop_event.is_set():
            try:
                report = client.run_pass(lock_wait=0.0)
                status.last_report, status.last_error = report, None
                status.passes += 1
                if report.changed or report.errors:
                    log.info("[%s] pass done: %s", name, report.summary())
                delay = settings.refresh
                backoff = settings.refresh
            except EscaleError as exc:
                status.failures += 1
                status.last_error = str(exc)
                status.last_report = client.last_report
                delay = backoff
                backoff = min(MAX_BACKOFF, max(backoff * 2, 1.0))
                log.error("[%s] pass failed (retry in %.0fs): %s", name, delay, exc)
                if self.notify is not None and not exc.transient:
                    self.notify(settings, str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug must not take the other clients down
                status.failures += 1
                status.last_error = f"internal error: {exc!r}"
                delay = backoff
                backoff = min(MAX_BACKOFF, max(backoff * 2, 1.0))
                log.exception("[%s] pass aborted by an internal error (retry in %.0fs)", name, delay)
                if self.notify is not None:
                    self.notify(settings, f"internal error: {exc!r}")
            status.next_pass = time.time() + delay
            self.stop_event.wait(delay)
        status.running = False

    def run_forever(self) -> None:
        """Run every client until :meth:`stop`; returns once all have stopped."""
        threads = [threading.Thread(target=self._loop, args=(name,), name=f"escale-{name}")
                   for name in self.clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)

    def stop(self) -> None:
        self.stop_event.set()
