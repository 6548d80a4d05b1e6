"""The control socket: how ``escalectl`` talks to a running daemon.

A local ``AF_UNIX`` stream socket (mode 0600, in a 0700 folder: only its owner
may connect; see :mod:`escale.daemon.pidfile` for where). The protocol is one
request line and one response line, each a UTF-8 JSON object, then the server
closes the connection::

    -> {"cmd": "ping"}
    <- {"ok": true, "pid": 1234, "config": "/home/me/.config/escale/escale.conf", ...}
    -> {"cmd": "stop", "clients": ["work"], "wait": 60}
    <- {"ok": false, "error": "no client [work] in ...", "exit_code": 64}

Commands (served by :class:`escale.daemon.service.Service`): ``ping``,
``status``, ``stop``, ``start`` and ``restart``; ``start``/``stop``/``restart``
take an optional ``clients`` list (without it, ``stop`` stops the whole daemon
and the others are refused) and ``wait``, the seconds to wait for a stopping
client to finish its current object. A failed request answers ``ok: false`` with a
one-line ``error`` and the ``exit_code`` escalectl should end with.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from escale.daemon.pidfile import MAX_SOCKET_PATH, remove_quietly
from escale.errors import EX_SOFTWARE, AlreadyRunning, DaemonError, EscaleError, NotRunning

log = logging.getLogger(__name__)

#: Longest request or response line accepted, in bytes.
MAX_LINE = 1 << 20

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def _check_path(path: str) -> None:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise DaemonError(
            f"control socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
            "set XDG_RUNTIME_DIR to a shorter folder")


def socket_answers(path: str, timeout: float = 2.0) -> bool:
    """Whether something accepts connections on socket ``path``."""
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


def _read_line(conn: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[:newline])
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_LINE:
            raise DaemonError("control message too long")
    return b"".join(chunks)


class ControlServer:
    """Serves the control socket at ``path`` with ``handler``, one thread per connection.

    :meth:`bind` (before a detach, so that errors reach the terminal) removes a
    stale socket file, refuses with AlreadyRunning when a live server answers,
    and creates the socket with mode 0600. :meth:`start` serves from a thread;
    :meth:`close` stops serving and removes the socket file.
    """

    def __init__(self, path: str) -> None:
        _check_path(path)
        self.path = path
        self._sock: socket.socket | None = None
        self._handler: Handler | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def bind(self) -> None:
        if os.path.lexists(self.path):
            if socket_answers(self.path):
                raise AlreadyRunning(f"an escale daemon already answers on {self.path}")
            log.info("removing stale control socket %s", self.path)
            remove_quietly(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as exc:
            sock.close()
            raise DaemonError(f"cannot create control socket {self.path}: {exc.strerror or exc}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock = sock

    def start(self, handler: Handler) -> None:
        assert self._sock is not None
        self._handler = handler
        self._thread = threading.Thread(target=self._serve, name="escale-control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                raise
            threading.Thread(target=self._answer, args=(conn,), name="escale-control-conn",
                             daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        assert self._handler is not None
        with conn:
            conn.settimeout(10.0)
            try:
                line = _read_line(conn)
                request = json.loads(line.decode("utf-8"))
                if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
                    raise DaemonError("control request must be a JSON object with a 'cmd' string")
                conn.settimeout(None)
                response = self._handler(request)
            except EscaleError as exc:
                response = {"ok": False, "error": str(exc), "exit_code": exc.exit_code}
            except (ValueError, UnicodeDecodeError):
                response = {"ok": False, "error": "control request is not one JSON line", "exit_code": 64}
            except OSError as exc:
                log.debug("control connection dropped: %s", exc)
                return
            except Exception as exc:  # the socket must keep serving
                log.exception("control request failed")
                response = {"ok": False, "error": f"internal error: {exc!r}", "exit_code": EX_SOFTWARE}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(response).encode("utf-8") + b"\n")

    def close(self) -> None:
        """Stop serving and remove the socket file. Never raises."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
            remove_quietly(self.path)


def request(path: str, cmd: str, *, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
    """Send one request to the daemon at socket ``path``; return its ``ok`` answer.

    Raises NotRunning when nothing listens there (missing socket, connection
    refused), DaemonError on a timeout or a malformed answer, and DaemonError
    carrying the daemon's ``exit_code`` when the daemon refused the request.
    """
    _check_path(path)
    payload = json.dumps({"cmd": cmd, **fields}).encode("utf-8") + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunning(f"no escale daemon answers on {path}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                raise NotRunning(f"no escale daemon answers on {path}") from None
            raise DaemonError(f"cannot reach the daemon on {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(payload)
            line = _read_line(sock)
        except TimeoutError:
            raise DaemonError(f"the daemon on {path} did not answer '{cmd}' within {timeout:g} s") from None
        except OSError as exc:
            raise DaemonError(f"control connection to {path} failed: {exc.strerror or exc}") from None
    try:
        answer = json.loads(line.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise DaemonError(f"the daemon on {path} sent a malformed answer") from None
    if not isinstance(answer, dict):
        raise DaemonError(f"the daemon on {path} sent a malformed answer")
    if not answer.get("ok"):
        error = DaemonError(str(answer.get("error") or f"the daemon refused '{cmd}'"))
        code = answer.get("exit_code")
        if isinstance(code, int):
            error.exit_code = code
        raise error
    return answer
