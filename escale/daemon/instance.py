"""The controlling side: find, start and stop the daemon of a configuration file.

Used by ``escalectl``. A daemon is *running* when its control socket answers a
``ping``. When the socket does not answer, the pid file decides:

* missing, naming a dead process, a process that is not escale, or an escale
  process started with another ``-c`` file: stale; the pid file and socket are
  removed (logged) and the daemon is not running;
* naming a live escale process: the daemon is *unresponsive* (stuck, or still
  starting); nothing is removed.

Only a process that is this daemon is ever signalled: its pid comes from the
pid file, ``/proc/<pid>/cmdline`` is an escale command, it answered on the
socket with that pid (or, when unresponsive, its command line names this
configuration file with ``-c``), and its start time is unchanged right before
each signal (no reused pid).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from escale.daemon import control
from escale.daemon.pidfile import (
    InstancePaths,
    cmdline,
    config_in_cmdline,
    instance_paths,
    is_escale_process,
    read_pid_file,
    remove_quietly,
    stale_reason,
    start_time,
)
from escale.errors import AlreadyRunning, DaemonError, NotRunning
from escale.processes import pid_alive

log = logging.getLogger(__name__)

#: Seconds between polls while waiting for a daemon to start or stop.
POLL = 0.05
#: Seconds given to SIGTERM before SIGKILL (less when the stop timeout is shorter).
TERM_GRACE = 10.0
#: Seconds a daemon has to answer a ping.
PING_TIMEOUT = 5.0
#: Seconds a starting daemon's pid may look dead before the start is judged failed.
STARTUP_GRACE = 2.0


@dataclass
class Daemon:
    """A live daemon: its pid, and its ``ping`` answer (None when unresponsive)."""

    paths: InstancePaths
    pid: int
    answer: dict[str, Any] | None = None
    started_at: str | None = field(default=None)

    @property
    def responsive(self) -> bool:
        return self.answer is not None

    def request(self, cmd: str, *, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        return control.request(self.paths.socket, cmd, timeout=timeout, **fields)


def clean_stale(paths: InstancePaths, reason: str) -> None:
    """Remove the pid file and the (non-answering) socket of a dead daemon."""
    if remove_quietly(paths.pid_file):
        log.info("removed stale pid file %s (%s)", paths.pid_file, reason)
    if not control.socket_answers(paths.socket) and remove_quietly(paths.socket):
        log.info("removed stale control socket %s", paths.socket)


def find_daemon(config_path: str) -> Daemon | None:
    """The daemon serving ``config_path``, or None (stale files cleaned on the way)."""
    paths = instance_paths(config_path)
    pid = read_pid_file(paths.pid_file)
    try:
        answer = control.request(paths.socket, "ping", timeout=PING_TIMEOUT)
    except NotRunning:
        answer = None
    except DaemonError as exc:  # accepted the connection but did not answer: stuck or stopped
        log.info("%s", exc)
        answer = None
    if answer is not None:
        live = answer.get("pid")
        if not isinstance(live, int):
            raise DaemonError(f"the daemon on {paths.socket} sent a malformed answer")
        return Daemon(paths, live, answer, start_time(live))
    if pid is None:
        if os.path.lexists(paths.pid_file) or os.path.lexists(paths.socket):
            clean_stale(paths, "no pid")
        return None
    reason = stale_reason(pid)
    if reason is None:
        args = cmdline(pid) or []
        other = config_in_cmdline(args)
        if other is not None and other != paths.config:
            reason = f"process {pid} serves another configuration"
    if reason is not None:
        clean_stale(paths, reason)
        return None
    return Daemon(paths, pid, None, start_time(pid))


def require_daemon(config_path: str) -> Daemon:
    """The responsive daemon of ``config_path``; NotRunning or DaemonError otherwise."""
    daemon = find_daemon(config_path)
    if daemon is None:
        raise NotRunning(f"escale is not running for {instance_paths(config_path).config}")
    if not daemon.responsive:
        raise DaemonError(
            f"escale (pid {daemon.pid}) holds {daemon.paths.pid_file} but does not answer on "
            f"{daemon.paths.socket}; it may be starting or stuck ('escalectl stop' ends it)")
    return daemon


def start_daemon(config_path: str, *, timeout: float = 60.0, verbose: int = 0,
                 clients: list[str] | None = None) -> Daemon:
    """Launch ``escale -d -c CONFIG`` and wait until its socket answers.

    With ``clients``, the daemon runs only those sections (``-r NAME`` each);
    ``escalectl start NAME`` adds others later.

    Raises AlreadyRunning when a daemon runs already, DaemonError (with the
    exit code of ``escale -d`` when it failed before detaching, its last
    error line in the message) when it does not come up within ``timeout``.
    """
    paths = instance_paths(config_path)
    running = find_daemon(config_path)
    if running is not None:
        raise AlreadyRunning(f"escale is already running for {paths.config} (pid {running.pid})")
    command = [sys.executable, "-m", "escale.cli.main", "-d", "-c", paths.config]
    for name in clients or []:
        command += ["-r", name]
    if verbose:
        command.append("-" + "v" * verbose)
    result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode("utf-8", "replace").splitlines()
                 if line.strip() and "warning:" not in line]
        detail = lines[-1] if lines else f"escale -d exited with code {result.returncode}"
        error = DaemonError(detail.removeprefix("escale: "))
        error.exit_code = result.returncode
        raise error
    deadline = time.monotonic() + timeout
    gone_since: float | None = None
    while True:
        try:
            answer = control.request(paths.socket, "ping", timeout=max(1.0, deadline - time.monotonic()))
            pid = int(answer["pid"])
            return Daemon(paths, pid, answer, start_time(pid))
        except NotRunning:
            pass
        now = time.monotonic()
        holder = read_pid_file(paths.pid_file)
        if holder is None or not pid_alive(holder):
            # The detaching parents exit before the daemon rewrites the pid file:
            # only a dead or missing pid that stays so for a while means failure.
            gone_since = gone_since if gone_since is not None else now
            if now - gone_since > STARTUP_GRACE:
                raise DaemonError(f"escale exited during startup for {paths.config}; see its log")
        else:
            gone_since = None
        if now > deadline:
            raise DaemonError(f"escale did not answer on {paths.socket} within {timeout:g} s")
        time.sleep(POLL)


def _still_same(daemon: Daemon) -> bool:
    """Whether ``daemon.pid`` is still the verified escale daemon process."""
    if not pid_alive(daemon.pid):
        return False
    if is_escale_process(daemon.pid) is False:
        return False
    return daemon.started_at is None or start_time(daemon.pid) == daemon.started_at


def _wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def stop_daemon(daemon: Daemon, *, timeout: float = 60.0,
                say: Callable[[str], None] | None = None) -> str:
    """Stop ``daemon`` gracefully, escalating to SIGTERM then SIGKILL.

    Graceful: the stop request on the socket (each client finishes the object
    it is transferring, its state saved). After ``timeout`` seconds, SIGTERM
    (the daemon then exits at once), after :data:`TERM_GRACE` more (or ``timeout``
    when shorter, at least one second) SIGKILL.
    Returns how it ended: ``stopped``, ``terminated`` or ``killed``. Raises
    DaemonError when the process cannot be verified as this daemon (nothing is
    signalled then) or survives SIGKILL.
    """
    notify = say or (lambda text: None)
    pid = daemon.pid
    term_grace = min(TERM_GRACE, max(1.0, timeout))
    if daemon.responsive:
        try:
            daemon.request("stop", timeout=10.0)
        except NotRunning:
            pass
    else:
        args = cmdline(pid) or []
        if config_in_cmdline(args) != daemon.paths.config:
            raise DaemonError(
                f"process {pid} in {daemon.paths.pid_file} does not answer on the control socket and cannot "
                "be verified as this escale daemon; not signalled")
        notify(f"escale (pid {pid}) does not answer on its control socket; sending SIGTERM")
        timeout = 0.0
    how = "stopped"
    if not _wait_gone(pid, timeout):
        for sig, grace, label in ((signal.SIGTERM, term_grace, "terminated"), (signal.SIGKILL, 5.0, "killed")):
            if not _still_same(daemon):
                break
            notify(f"escale (pid {pid}) still running; sending {sig.name}")
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            how = label
            if _wait_gone(pid, grace):
                break
        else:
            raise DaemonError(f"escale (pid {pid}) survived SIGKILL")
    clean_stale(daemon.paths, f"process {pid} {how}")
    return how
