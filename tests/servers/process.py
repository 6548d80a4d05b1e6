"""A test server run as a child process on a fixed 127.0.0.1 port.

:class:`ServerProcess` starts a command, polls the port until it accepts and
checks that the listening socket is the child's own (another process may take
a port found free in advance; :func:`start_on_free_port` then tries a fresh
one). It can be stopped and started again on the same port (``restart``), which
is what the conformance suite's reconnection test needs. Secrets are handed to
the child through its environment, never its command line. A server that does
not come up raises RuntimeError with the tail of its output: in CI that fails
the run.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

from tests.servers.target import free_port, listening_pids, wait_for_port

PASSWORD_ENV = "ESCALE_TEST_SERVER_PASSWORD"
"""The environment variable that hands a child server its user's password."""

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The checkout's top folder: a child run as ``python -m tests.servers.X`` starts there."""


class PortTakenError(RuntimeError):
    """The port accepts connections, but not our server's: another process took it."""


class ServerProcess:
    """One child server process listening on ``port``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        start_timeout: float = 20.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's life, closed by shutdown()

    def start(self) -> None:
        """Start the child and wait until its port accepts connections."""
        self._proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited at start: {self.output_tail()}")
            try:
                wait_for_port(self.port, timeout=0.5)
                if not listening_pids(self.port, [self._proc.pid]):
                    self.stop()
                    raise PortTakenError(f"{self.name}: port {self.port} is held by another process")
                return
            except PortTakenError:
                raise
            except RuntimeError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.name} server not listening on port {self.port}: {self.output_tail()}"
                    ) from None

    @property
    def pid(self) -> int | None:
        """The running child's pid (None when stopped)."""
        return None if self._proc is None else self._proc.pid

    def stop(self) -> None:
        """Terminate the child (by its pid only) and wait for it."""
        proc, self._proc = self._proc, None
        terminate(proc)

    def shutdown(self) -> None:
        """Stop for good and release the output file (end of the fixture)."""
        self.stop()
        self._log.close()

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        start_again(self.start)

    def output_tail(self, size: int = 2000) -> str:
        self._log.seek(0, os.SEEK_END)
        end = self._log.tell()
        self._log.seek(max(0, end - size))
        return self._log.read().decode("utf-8", "replace")


def terminate(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None) -> None:
    """End the child ``proc`` (ours, by its pid): SIGTERM, then SIGKILL after
    10 s; waits for it. Nothing when it is None or already ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def launch_logged(argv: list[str], env: dict[str, str], log_path: str, listening: re.Pattern[bytes], port: int,
                  what: str, log_tail: Callable[[], str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``argv`` with its output appended to ``log_path`` and wait (20 s at
    most) until a line it writes after the start matches ``listening`` with
    the port it listens on (``port``, or any when 0). Returns the process and
    its port; RuntimeError naming ``what`` when it exits or does not start
    (it is then ended)."""
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_tail()}")
        with open(log_path, "rb") as handle:
            handle.seek(offset)
            ports = listening.findall(handle.read())
        if ports and (port == 0 or int(ports[-1]) == port):
            return proc, int(ports[-1])
        time.sleep(0.05)
    terminate(proc)
    raise RuntimeError(f"{what} did not start: {log_tail()}")


def start_again(start: Callable[[], None], within: float = 10.0) -> None:
    """Call ``start`` until it returns, retrying on RuntimeError every 0.2 s
    (the port may linger a moment after the old process died); after
    ``within`` seconds the last RuntimeError is raised."""
    deadline = time.monotonic() + within
    while True:
        try:
            start()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start_on_free_port(make: Callable[[int], ServerProcess], attempts: int = 4) -> ServerProcess:
    """Start ``make(port)`` on a free port, with a fresh port when another
    process took the chosen one before the server could bind it."""
    error: RuntimeError | None = None
    for _ in range(attempts):
        server = make(free_port())
        try:
            server.start()
            return server
        except RuntimeError as exc:
            error = exc
    assert error is not None
    raise error


def child_arguments() -> argparse.ArgumentParser:
    """The command line every ``python -m tests.servers.X`` child server takes:
    ``--root DIR --port N --user U [--cert C --key K]`` (the password is in
    :data:`PASSWORD_ENV`); a child adds its own options."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    return parser
