"""Runs every configured client: once, or forever with back-off.

Each client runs in its own thread. A pass that fails (an escale error, or an
unexpected exception: a bug) is logged, counted in the client's status and
retried after a back-off that doubles from its ``refresh`` up to 10 minutes; it
never stops the other clients, and a client's thread only ends when asked to.
With ``watch = yes`` (the default) a client's thread also watches its local
folder between passes and starts a pass once local changes have settled
(:mod:`escale.daemon.watch`); ``run_once`` never watches.
:meth:`Runner.stop` asks every client to stop after the object it is
transferring (the state database is always up to date).
:meth:`Runner.stop_client` and :meth:`Runner.start_client` do the same for one
client while the others go on (``escalectl stop CLIENT``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from escale.backoff import Backoff
from escale.config.settings import ClientSettings, Config
from escale.errors import EX_OK, EX_SOFTWARE, ClientBusy, EscaleError
from escale.sync.client import PassReport, SyncClient

if TYPE_CHECKING:  # imported when a daemon watches: escale --once does not pay for it
    from escale.daemon.watch import FolderWatch

log = logging.getLogger(__name__)

#: The longest wait before retrying a failed pass (the first wait is ``refresh``).
MAX_BACKOFF = 600.0
#: The longest wait between two passes of a client. ``refresh`` is at most a
#: week in a configuration file; settings made otherwise are cut to this, which
#: ``threading.Event.wait`` always accepts.
MAX_DELAY = 7 * 86400.0
#: With a watch, the wait before retrying a pass that found the relay busy (the
#: change that started it would otherwise wait for the periodic pass).
BUSY_RETRY = 2.0
#: With a watch, the longest a pass that comes due waits past its time for
#: local changes to settle (a file being written is not sent half-done; a
#: folder that is never quiet is still synced).
SETTLE_LIMIT = 60.0


def _bounded(delay: float) -> float:
    """``delay`` within ``[0, MAX_DELAY]`` (a NaN or infinite one becomes MAX_DELAY)."""
    if not math.isfinite(delay) or delay > MAX_DELAY:
        return MAX_DELAY
    return max(delay, 0.0)


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
    pass_failures: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    client_stops: dict[str, threading.Event] = field(default_factory=dict)
    threads: dict[str, threading.Thread] = field(default_factory=dict)
    _threads_lock: threading.Lock = field(default_factory=threading.Lock)
    #: the watch of each running client with ``watch = yes`` (see :mod:`escale.daemon.watch`)
    watches: dict[str, FolderWatch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for settings in self.config.clients:
            self.add_client(settings)

    def add_client(self, settings: ClientSettings) -> None:
        """Make client ``settings`` known (not started: see :meth:`start_client`);
        a client added after the start (``escalectl start CLIENT`` on a section
        the daemon did not load) is appended to :attr:`config`. Raises
        ValueError when a client of that name is known already."""
        with self._threads_lock:
            if settings.name in self.clients:
                raise ValueError(f"client [{settings.name}] is loaded already")
            self.client_stops[settings.name] = threading.Event()
            self.clients[settings.name] = SyncClient(
                settings, stop=self.client_stops[settings.name], allow_mass_deletion=self.allow_mass_deletion,
                lease_wait=0.0)
            self.statuses[settings.name] = ClientStatus(settings.name)
            if all(c.name != settings.name for c in self.config.clients):
                self.config = Config(self.config.path, self.config.globals, (*self.config.clients, settings))

    def run_once(self, names: list[str] | None = None, lease_wait: float | None = None) -> int:
        """One pass of each client (in file order); the exit code: 0 when all
        succeeded, else the highest error's exit code. Each failure is logged
        and also kept in :attr:`failures` as one line for the command to print
        (:attr:`pass_failures` holds the passes that failed as a whole; their
        log records carry ``escale_once_failure``, so that a command printing
        the line itself can leave the record out of standard error). A failed
        pass is notified (:attr:`notify`) under the daemon's rule: a
        non-transient error or an internal error, once. A client whose lock is
        held by another process (ClientBusy) is not a failure: its name goes
        to :attr:`busy`, logged at INFO, and the exit code is left alone."""
        code = EX_OK
        self.failures = []
        self.pass_failures = []
        self.busy = []
        reported = {"escale_once_failure": True}
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
            except ClientBusy as exc:
                log.info("[%s] skipped: %s", name, exc)
                self.busy.append(name)
                continue
            except EscaleError as exc:
                status.last_report = client.last_report
                log.error("[%s] %s", name, exc, extra=reported)
                self.failures.append(f"[{name}] {exc}")
                self.pass_failures.append(f"[{name}] {exc}")
                code = max(code, exc.exit_code)
                self._failed(name, str(exc), notify=not exc.transient)
            except Exception as exc:  # a bug in one client must not stop the others
                status.last_report = client.last_report
                log.exception("[%s] pass aborted by an internal error", name, extra=reported)
                self.failures.append(f"[{name}] internal error: {exc!r}")
                self.pass_failures.append(f"[{name}] internal error: {exc!r}")
                code = max(code, EX_SOFTWARE)
                self._failed(name, f"internal error: {exc!r}", notify=True)
            status.passes += 1
        return code

    def _failed(self, name: str, message: str, *, notify: bool) -> None:
        """Count a failed pass of client ``name`` and tell the user (the notifier's
        own failure is logged, never raised)."""
        status = self.statuses[name]
        status.failures += 1
        status.last_error = message
        if notify and self.notify is not None:
            try:
                self.notify(self.clients[name].settings, message)
            except Exception:
                log.exception("[%s] could not send the failure notification", name)

    @staticmethod
    def _retry_schedule(refresh: float) -> Backoff:
        """Waits after failed passes: ``refresh``, then doubling (at least 1 s) up to MAX_BACKOFF."""
        return Backoff(refresh, MAX_BACKOFF, floor=1.0)

    def _step(self, name: str, waits: Backoff) -> float:
        """One pass of client ``name`` and its bookkeeping; returns the delay
        before the next pass. Never raises an Exception: a failed pass, expected
        or not, is recorded and retried after the next wait of ``waits`` (which
        starts again after a pass that worked). A pass skipped because another
        escale process works on the client (ClientBusy: a cron ``--once``, a dry
        run, ``escalectl fix``) is no failure: logged at INFO, tried again
        after ``refresh``."""
        client = self.clients[name]
        status = self.statuses[name]
        refresh = client.settings.refresh
        try:
            report = client.run_pass(lock_wait=0.0)
            status.last_report, status.last_error = report, None
            status.passes += 1
            if report.changed or report.errors:
                log.info("[%s] pass done: %s", name, report.summary())
            waits.reset()
            return refresh
        except ClientBusy as exc:
            log.info("[%s] pass skipped (next in %.0fs): %s", name, _bounded(refresh), exc)
            return refresh
        except EscaleError as exc:
            status.last_report = client.last_report
            log.error("[%s] pass failed (retry in %.0fs): %s", name, _bounded(waits.current), exc)
            self._failed(name, str(exc), notify=not exc.transient)
        except Exception as exc:  # a bug must not take this client or the others down
            log.exception("[%s] pass aborted by an internal error (retry in %.0fs)", name, _bounded(waits.current))
            self._failed(name, f"internal error: {exc!r}", notify=True)
        return waits.next()

    def _loop(self, name: str) -> None:
        """Client ``name``'s thread: passes every ``refresh`` seconds until stopped.

        A failing pass is retried with a back-off doubling up to MAX_BACKOFF; an
        error outside the pass (in the bookkeeping itself) is logged and retried
        the same way, so the thread only ends when asked to. Waits are cut to
        :data:`MAX_DELAY`. With ``watch = yes`` a pass also starts as soon as
        local changes have settled (see :meth:`_pause`).
        """
        status = self.statuses[name]
        waits = self._retry_schedule(self.clients[name].settings.refresh)
        stop = self.client_stops[name]
        status.running = True
        watch = self._open_watch(name)
        try:
            while not stop.is_set() and not self.stop_event.is_set():
                try:
                    if watch is not None:
                        watch.pass_started()
                    passes = status.passes
                    delay = self._step(name, waits)
                    report = status.last_report
                    # only a pass that ran to its end now (not one that failed or was skipped) found the relay busy
                    if (watch is not None and watch.active and status.passes > passes and report is not None
                            and report.busy):
                        delay = min(delay, max(BUSY_RETRY, watch.delay))
                    delay = _bounded(delay)
                    status.next_pass = time.time() + delay
                    self._pause(name, delay, watch)
                except Exception as exc:  # _step catches its own: a bug here must not end the client
                    log.exception("[%s] client loop error (retry in %.0fs)", name, _bounded(waits.current))
                    status.last_error = f"internal error: {exc!r}"
                    delay = _bounded(waits.next())
                    status.next_pass = time.time() + delay
                    stop.wait(delay)
        except BaseException as exc:
            status.last_error = f"client thread ended: {exc!r}"
            log.critical("[%s] client thread ended by %r; 'escalectl start %s' restarts it", name, exc, name)
            raise
        finally:
            status.running = False
            if watch is not None:
                if self.watches.get(name) is watch:
                    del self.watches[name]
                watch.close()

    def _open_watch(self, name: str) -> FolderWatch | None:
        """Client ``name``'s watch, started (before the first pass, so that changes
        made during it are seen), when its settings ask for one; None otherwise,
        or when it could not even be set up (a bug: logged, periodic passes go on)."""
        client = self.clients[name]
        if not client.settings.watch:
            return None
        try:
            from escale.daemon.watch import watch_for  # imported here: see the module imports

            watch = watch_for(client.settings, client.state_dir, log_file=self.config.globals.log_file)
            watch.start()
        except Exception:
            log.exception("[%s] could not watch the local folder; periodic passes only", name)
            return None
        self.watches[name] = watch
        return watch

    def _pause(self, name: str, delay: float, watch: FolderWatch | None) -> None:
        """Wait ``delay`` seconds before client ``name``'s next pass, or until it
        is asked to stop. With a watch (``watch = yes``), return as soon as local
        changes have settled, unless the last pass failed: a failing client keeps
        its back-off. When the ``delay`` ends while local changes have not
        settled (a file may still be being written), wait for them up to
        :data:`SETTLE_LIMIT` seconds more. A watch that could not start yet (no
        local folder) is tried again at each pause."""
        stop = self.client_stops[name]
        if watch is None or not watch.start():
            stop.wait(delay)
            return
        deadline = time.monotonic() + delay
        postponed = False
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                if postponed or not watch.changes_pending():
                    return
                postponed = True
                deadline = time.monotonic() + SETTLE_LIMIT
                self.statuses[name].next_pass = time.time() + SETTLE_LIMIT  # at the latest: status tells so
                log.debug("[%s] periodic pass postponed until local changes settle (at most %.0fs): %s", name,
                          SETTLE_LIMIT, ", ".join(sorted(watch.changed)))
                continue
            if watch.wait(left, stop) and (postponed or self.statuses[name].last_error is None):
                log.debug("[%s] local changes settled: pass now (%s)", name, ", ".join(sorted(watch.changed)))
                return

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

        A client still finishing after a stop request is waited for first
        (without holding up the start or loading of other clients meanwhile).
        Raises KeyError for an unknown name.
        """
        stop = self.client_stops[name]
        while True:
            with self._threads_lock:
                if self.stop_event.is_set():
                    return False
                thread = self.threads.get(name)
                if thread is None or not thread.is_alive():
                    stop.clear()
                    thread = threading.Thread(target=self._loop, args=(name,), name=f"escale-{name}")
                    self.threads[name] = thread
                    thread.start()
                    return True
                if not stop.is_set():
                    return False
            thread.join()

    def stop_client(self, name: str, timeout: float | None = None) -> bool:
        """Ask client ``name`` to stop after its current object and wait up to
        ``timeout`` seconds; True once its thread has ended. Raises KeyError."""
        self.client_stops[name].set()
        thread = self.threads.get(name)
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True
