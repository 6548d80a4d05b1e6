"""Runs every configured client: once, or forever with back-off.

Each client runs in its own thread. A pass that fails is logged, and the client
is retried after a back-off that doubles from its ``refresh`` up to 10 minutes;
it never stops the other clients. :meth:`Runner.stop` asks every client to stop
after the object it is transferring (the state database is always up to date).
:meth:`Runner.stop_client` and :meth:`Runner.start_client` do the same for one
client while the others go on (``escalectl stop CLIENT``).
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
    failures: list[str] = field(default_factory=list)
    client_stops: dict[str, threading.Event] = field(default_factory=dict)
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    _threads_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for settings in self.config.clients:
            self.client_stops[settings.name] = threading.Event()
            self.clients[settings.name] = SyncClient(
                settings, stop=self.client_stops[settings.name], allow_mass_deletion=self.allow_mass_deletion,
                lease_wait=0.0)
            self.statuses[settings.name] = ClientStatus(settings.name)

    def run_once(self, names: list[str] | None = None, lease_wait: float | None = None) -> int:
        """One pass of each client (in file order); the exit code: 0 when all
        succeeded, else the highest error's exit code. Each failure is logged
        and also kept in :attr:`failures` as one line for the command to print."""
        code = EX_OK
        self.failures = []
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
                    self.failures.extend(f"[{name}] {error}" for error in report.errors)
            except EscaleError as exc:
                status.last_error = str(exc)
                status.last_report = client.last_report
                log.error("[%s] %s", name, exc)
                self.failures.append(f"[{name}] {exc}")
                code = max(code, exc.exit_code)
            status.passes += 1
        return code

    def _loop(self, name: str) -> None:
        client = self.clients[name]
        status = self.statuses[name]
        settings = client.settings
        backoff = settings.refresh
        stop = self.client_stops[name]
        status.running = True
        while not stop.is_set() and not self.stop_event.is_set():
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
            except Exception as exc:  # a bug must not take the other clients down
                status.failures += 1
                status.last_error = f"internal error: {exc!r}"
                delay = backoff
                backoff = min(MAX_BACKOFF, max(backoff * 2, 1.0))
                log.exception("[%s] pass aborted by an internal error (retry in %.0fs)", name, delay)
                if self.notify is not None:
                    self.notify(settings, f"internal error: {exc!r}")
            status.next_pass = time.time() + delay
            stop.wait(delay)
        status.running = False

    def run_forever(self) -> None:
        """Run every client until :meth:`stop`; returns once all have stopped.

        Clients stopped one by one (:meth:`stop_client`) do not end it.
        """
        for name in self.clients:
            self.start_client(name)
        while not self.stop_event.wait(0.5):
            pass
        for thread in list(self.threads.values()):
            while thread.is_alive():
                thread.join(0.5)

    def stop(self) -> None:
        """Ask every client to stop after its current object; returns at once."""
        self.stop_event.set()
        for event in self.client_stops.values():
            event.set()

    def client_state(self, name: str) -> str:
        """``running``, ``stopping`` (finishing its current object) or ``stopped``."""
        thread = self.threads.get(name)
        if thread is None or not thread.is_alive():
            return "stopped"
        return "stopping" if self.client_stops[name].is_set() else "running"

    def start_client(self, name: str) -> bool:
        """Start client ``name``'s thread; False when it already runs.

        A client still finishing after a stop request is waited for first.
        Raises KeyError for an unknown name.
        """
        stop = self.client_stops[name]
        with self._threads_lock:
            if self.stop_event.is_set():
                return False
            thread = self.threads.get(name)
            if thread is not None and thread.is_alive():
                if not stop.is_set():
                    return False
                thread.join()
            stop.clear()
            thread = threading.Thread(target=self._loop, args=(name,), name=f"escale-{name}")
            self.threads[name] = thread
            thread.start()
            return True

    def stop_client(self, name: str, timeout: float | None = None) -> bool:
        """Ask client ``name`` to stop after its current object and wait up to
        ``timeout`` seconds; True once its thread has ended. Raises KeyError."""
        self.client_stops[name].set()
        thread = self.threads.get(name)
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True
