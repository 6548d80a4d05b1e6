"""Serving a configuration: pid file, control socket, signals, detaching.

``escale`` (no ``--once``) calls :func:`serve`. In the foreground and with
``-d`` alike it:

1. takes the configuration's pid file (AlreadyRunning, exit 75, when a live
   daemon holds it; a stale one is taken over) and binds the control socket
   (a stale socket file is removed), so that errors still reach the terminal;
2. with ``detach``, detaches with python-daemon (double fork, new session,
   working folder ``/``, umask 0o077, standard streams on /dev/null; the pid
   file, the socket and the log file stay open). Without ``log file`` a
   detached daemon logs to ``<runtime dir>/<hash>.log``;
3. runs every client (:class:`~escale.daemon.runner.Runner`) and answers
   ``escalectl`` on the socket (:class:`Service`) until a stop request, SIGTERM
   or SIGINT, after which each client finishes the object it is transferring
   and stops. A second SIGTERM/SIGINT while stopping exits at once (the
   transfer in progress is abandoned; its temporary file is cleaned up by the
   next pass, the user's files are untouched);
4. removes the socket and the pid file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from escale import __version__
from escale.config import check_client_folders, load_config
from escale.config.settings import ClientSettings, Config
from escale.daemon.control import ControlServer
from escale.daemon.logs import setup_logging
from escale.daemon.notify import Notifier
from escale.daemon.pidfile import InstancePaths, PidFile, instance_paths
from escale.daemon.runner import Runner
from escale.errors import EX_OK, EX_TEMPFAIL, DaemonError, UsageError
from escale.sync.client import state_dir_for
from escale.sync.scanner import is_internal

log = logging.getLogger(__name__)

#: Default seconds a per-client stop request waits for the client to finish.
CLIENT_STOP_TIMEOUT = 60.0


def _report_dict(runner: Runner, settings: ClientSettings) -> dict[str, Any]:
    status = runner.statuses[settings.name]
    report = status.last_report
    last: dict[str, Any] | None = None
    pending_known = False
    if report is not None:
        pending_known = report.ok
        last = {
            "started": report.started,
            "finished": report.finished,
            "ok": report.ok and not report.errors,
            "summary": report.summary(),
            "sent": len(report.pushed),
            "received": len(report.pulled),
            "conflicts": len(report.conflicts),
            "errors": len(report.errors),
            "bytes_up": report.bytes_up,
            "bytes_down": report.bytes_down,
            "busy": report.busy,
            # skipped paths, relay anomalies, stale receivers, missed versions
            "warnings": list(report.warnings),
        }
    return {
        "name": settings.name,
        "label": settings.label,
        "state": runner.client_state(settings.name),
        "mode": settings.mode,
        "relay": settings.relay.describe(),
        "local_path": settings.local_path,
        "passes": status.passes,
        "failures": status.failures,
        "last_pass": last,
        "pending_up": {"files": report.pending_up, "bytes": report.pending_up_bytes}
        if report is not None and pending_known else None,
        "pending_down": {"files": report.pending_down, "bytes": report.pending_down_bytes}
        if report is not None and pending_known else None,
        "relay_bytes": report.relay_bytes if report is not None and pending_known else None,
        "disk_quota": settings.disk_quota,
        "last_error": status.last_error,
        "next_pass": status.next_pass or None,
    }


class Service:
    """Answers control requests for one running :class:`Runner`."""

    def __init__(self, config: Config, runner: Runner, paths: InstancePaths, *, log_file: str | None) -> None:
        self.config = config
        self.runner = runner
        self.paths = paths
        self.log_file = log_file
        self.started = time.time()
        self.stopping = threading.Event()

    def request_stop(self, why: str) -> None:
        if not self.stopping.is_set():
            log.info("%s: stopping after the current transfers", why)
        self.stopping.set()
        self.runner.stop()

    def _identity(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "config": self.config.path, "version": __version__,
                "since": self.started, "log_file": self.log_file, "stopping": self.stopping.is_set()}

    def _names(self, request: dict[str, Any]) -> tuple[list[str], dict[str, ClientSettings]]:
        """The request's client names, each a section of the configuration
        file, and the settings of those the daemon did not load, read from the
        file again; UsageError for a name the file does not have either."""
        names = request.get("clients") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError("'clients' must be a list of section names")
        names = list(dict.fromkeys(names))
        loaded = {c.name for c in self.config.clients}
        unloaded: dict[str, ClientSettings] = {}
        missing = [n for n in names if n not in loaded]
        if missing:
            fresh = load_config(self.config.path)
            sections = {c.name: c for c in fresh.clients}
            for name in missing:
                if name not in sections:
                    raise UsageError(f"no section [{name}] in {self.config.path} "
                                     f"(sections: {', '.join(sections) or 'none'})")
                unloaded[name] = sections[name]
        return names, unloaded

    def _load(self, unloaded: dict[str, ClientSettings]) -> list[str]:
        """Add the clients of ``unloaded`` (read from the file again by
        :meth:`_names`) to the daemon; returns their names."""
        added = []
        for name, settings in unloaded.items():
            if name in self.runner.clients:
                continue
            check_client_folders(self.config.path, settings, state_dir_for(settings),
                                 log_file=self.config.globals.log_file, left_out=is_internal)
            try:
                self.runner.add_client(settings)
            except ValueError:  # loaded meanwhile by another request
                continue
            self.config = self.runner.config
            added.append(name)
            log.info("[%s] client loaded from %s", name, self.config.path)
        return added

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """Answer one request (see :mod:`escale.daemon.control`). Raises EscaleError to refuse."""
        cmd = request["cmd"]
        if cmd == "ping":
            return self._identity()
        if cmd == "status":
            answer = self._identity()
            answer["clients"] = [_report_dict(self.runner, c) for c in self.config.clients]
            return answer
        if cmd not in ("stop", "start", "restart"):
            raise UsageError(f"unknown control command {cmd!r}")
        names, unloaded = self._names(request)
        if not names:
            if cmd == "stop":
                self.request_stop("stop requested through the control socket")
                return self._identity()
            raise UsageError(f"'{cmd}' through the control socket needs client names")
        if self.stopping.is_set():
            raise DaemonError("the daemon is stopping")
        timeout = request.get("wait", CLIENT_STOP_TIMEOUT)
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise UsageError("'wait' must be a number of seconds")
        answer = self._identity()
        loaded = [n for n in names if n not in unloaded]
        if cmd == "stop":
            answer["not_loaded"] = [n for n in names if n in unloaded]
        elif unloaded:
            answer["loaded"] = self._load(unloaded)
        if cmd in ("stop", "restart"):
            stopped, busy = self._stop_clients(loaded, float(timeout))
            answer["stopped"], answer["still_stopping"] = stopped, busy
            if cmd == "restart":
                answer["started"] = [n for n in [*stopped, *answer.get("loaded", [])]
                                     if self.runner.start_client(n)]
        else:
            answer["started"] = [n for n in names if self.runner.start_client(n)]
            answer["already_running"] = [n for n in names if n not in answer["started"]]
        for name in answer.get("started", []):
            log.info("[%s] client started through the control socket", name)
        return answer

    def _stop_clients(self, names: list[str], timeout: float) -> tuple[list[str], list[str]]:
        for name in names:
            log.info("[%s] stop requested through the control socket", name)
            self.runner.client_stops[name].set()
        deadline = time.monotonic() + timeout
        stopped, busy = [], []
        for name in names:
            if self.runner.stop_client(name, max(0.0, deadline - time.monotonic())):
                stopped.append(name)
            else:
                busy.append(name)
        return stopped, busy


def _detach(config: Config, paths: InstancePaths, keep: list[int]) -> str | None:
    """Detach with python-daemon; returns the log file now in use."""
    import daemon  # python-daemon: imported here, only the detaching path needs it

    log_file = config.globals.log_file
    root = logging.getLogger()
    if not log_file:
        log_file = paths.log_file
        log.info("running in the background; log: %s", log_file)
        level = root.level
        setup_logging(dataclasses.replace(config.globals, log_file=log_file), config_path=config.path)
        root.setLevel(level)
        with contextlib.suppress(OSError):
            os.chmod(log_file, 0o600)
    else:
        log.info("running in the background; log: %s", log_file)
    streams = [h.stream.fileno() for h in root.handlers
               if isinstance(h, logging.FileHandler) and h.stream is not None]
    context = daemon.DaemonContext(working_directory="/", umask=0o077, detach_process=True,
                                   files_preserve=[*keep, *streams])
    context.open()
    return log_file


def serve(config: Config, *, detach: bool = False, allow_mass_deletion: bool = False) -> int:
    """Run every client of ``config`` until a stop request; return the exit code.

    Raises AlreadyRunning when a daemon serves ``config`` already, DaemonError
    when the pid file or socket cannot be created (nothing was started then).
    """
    paths = instance_paths(config.path)
    paths.ensure_folder()
    pidfile = PidFile(paths.pid_file, paths.config)
    pidfile.acquire()
    server: ControlServer | None = None
    try:
        server = ControlServer(paths.socket)
        server.bind()
        runner = Runner(config, allow_mass_deletion=allow_mass_deletion,
                        notify=Notifier(config_path=config.path))
        log_file = config.globals.log_file
        if detach:
            assert pidfile.fd is not None
            log_file = _detach(config, paths, [pidfile.fd, server.fileno()])
            pidfile.write_pid()
        service = Service(config, runner, paths, log_file=log_file)
        bound = server

        def on_signal(signum: int, frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if service.stopping.is_set():
                log.warning("received %s while stopping: exiting now", name)
                bound.close()
                pidfile.release()
                logging.shutdown()
                os._exit(EX_TEMPFAIL)
            service.request_stop(f"received {name}")

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        server.start(service.handle)
        log.info("escale %s (pid %d) running %d client(s) from %s; control socket %s", __version__,
                 os.getpid(), len(config.clients), config.path, paths.socket)
        runner.run_forever()
        log.info("escale stopped")
        return EX_OK
    finally:
        if server is not None:
            server.close()
        pidfile.release()
