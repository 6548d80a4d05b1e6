"""Where a daemon's pid file and control socket live, and telling live daemons from stale files.

One daemon runs per configuration file. Its files are named after a hash of the
configuration file's real path, in the user's runtime folder::

    $XDG_RUNTIME_DIR/escale/<hash>.pid      (when XDG_RUNTIME_DIR is an absolute folder)
    ~/.config/escale/run/<hash>.pid         (otherwise)
    ... <hash>.sock                         the control socket (see escale.daemon.control)
    ... <hash>.log                          the log of a detached daemon without 'log file'

The folder is created with mode 0700. A pid file holds the daemon's pid on its
first line and the configuration path on its second. The daemon holds an
exclusive ``flock`` on its pid file while it runs: a second daemon for the same
configuration cannot take it (AlreadyRunning), and the kernel drops the lock
when the process dies, however it dies.

A process is judged to be an escale daemon from ``/proc/<pid>/cmdline`` (the
program is ``escale`` or ``python -m escale.cli.main``). Pid files naming a dead
process, or a live process that is not escale, are stale and may be removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from dataclasses import dataclass

from escale.errors import AlreadyRunning, DaemonError
from escale.processes import pid_alive

#: Longest path an AF_UNIX socket address can hold on Linux (108 bytes with the NUL).
MAX_SOCKET_PATH = 107


def runtime_dir() -> str:
    """The folder of pid files and sockets (not created here)."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg) and os.path.isdir(xdg):
        return os.path.join(xdg, "escale")
    return os.path.join(os.path.expanduser("~"), ".config", "escale", "run")


@dataclass(frozen=True)
class InstancePaths:
    """The files of the daemon of one configuration file."""

    config: str
    folder: str
    pid_file: str
    socket: str
    log_file: str

    def ensure_folder(self) -> None:
        """Create the runtime folder (mode 0700); raises DaemonError."""
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise DaemonError(f"cannot create runtime folder {self.folder}: {exc.strerror or exc}") from None


def instance_paths(config_path: str) -> InstancePaths:
    """The pid file, socket and default log of the daemon serving ``config_path``."""
    config = os.path.realpath(os.path.expanduser(config_path))
    digest = hashlib.sha256(config.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    folder = runtime_dir()
    base = os.path.join(folder, digest)
    return InstancePaths(config, folder, base + ".pid", base + ".sock", base + ".log")


# --------------------------------------------------------------------------- processes


def cmdline(pid: int) -> list[str] | None:
    """The arguments of process ``pid``; None when unknown (gone, no /proc)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0") if part]


def start_time(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat).

    Recorded when a daemon is verified and compared again before a signal, so that
    a pid reused meanwhile by another process is never signalled.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def is_escale_command(args: list[str]) -> bool:
    """Whether a command line runs the ``escale`` command (not escalectl)."""
    for arg in args[:3]:
        if os.path.basename(arg) == "escale" or arg == "escale.cli.main" or arg.endswith("escale/cli/main.py"):
            return True
    return False


def config_in_cmdline(args: list[str]) -> str | None:
    """The real path given to ``-c``/``--config`` in an escale command line, if any."""
    for i, arg in enumerate(args):
        value: str | None = None
        if arg in ("-c", "--config") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            value = arg[2:]
        if value is not None:
            return os.path.realpath(value)
    return None


def is_escale_process(pid: int) -> bool | None:
    """True/False from /proc; None when /proc says nothing (not Linux, other user)."""
    args = cmdline(pid)
    if args is None:
        return None if pid_alive(pid) else False
    return is_escale_command(args)


# --------------------------------------------------------------------------- pid files


def read_pid_file(path: str) -> int | None:
    """The pid in pid file ``path``; None when missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(first) if first.isdigit() else None


def stale_reason(pid: int | None) -> str | None:
    """Why a pid file naming ``pid`` is stale, or None when it names a live escale process."""
    if pid is None:
        return "it holds no pid"
    if not pid_alive(pid):
        return f"process {pid} is not running"
    if is_escale_process(pid) is False:
        return f"process {pid} is not escale"
    return None


def remove_quietly(path: str) -> bool:
    """Unlink ``path`` if it exists; True when something was removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError:
        return False


class PidFile:
    """The pid file of a running daemon, held with ``flock`` for its lifetime."""

    def __init__(self, path: str, config: str) -> None:
        self.path = path
        self.config = config
        self._fd: int | None = None

    @property
    def fd(self) -> int | None:
        """The open descriptor (to keep across a detach), or None when not held."""
        return self._fd

    def acquire(self) -> None:
        """Take the pid file, or raise AlreadyRunning naming the live daemon.

        A stale pid file (its holder died: nobody holds the lock) is taken over.
        The pid written is the caller's; call :meth:`write_pid` again after a fork.
        """
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise DaemonError(f"cannot open pid file {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = read_pid_file(self.path)
                who = f" (pid {pid})" if pid else ""
                raise AlreadyRunning(
                    f"escale is already running for {self.config}{who}; "
                    f"stop it with 'escalectl -c {self.config} stop'") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)  # the file was removed by its previous holder meanwhile: retry
        self._fd = fd
        self.write_pid()

    def write_pid(self) -> None:
        """(Re)write the current pid and the configuration path."""
        assert self._fd is not None
        data = f"{os.getpid()}\n{self.config}\n".encode("utf-8", "surrogateescape")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        with contextlib.suppress(OSError):
            os.fsync(self._fd)

    def release(self) -> None:
        """Remove the pid file (if still ours) and drop the lock. Never raises."""
        if self._fd is None:
            return
        if read_pid_file(self.path) == os.getpid():
            remove_quietly(self.path)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
