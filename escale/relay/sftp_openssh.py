"""SFTP through the OpenSSH client program: the SSH session runs in ``ssh``.

:class:`OpenSshPipe` starts ``ssh -s HOST sftp`` with one end of a Unix
socket pair as its standard input and output, and offers the other end with
the few socket-like methods paramiko's SFTP client uses (``send``, ``recv``,
``settimeout``, ``close``, ``get_name``). SSH's key exchange, encryption and
packet handling then run in C in the child process, on another core, and
Python only frames SFTP packets: for big transfers that costs a fraction of
the CPU time of paramiko's transport (doc/configuration.rst, ``ssh client``).

Security is the same as paramiko's path in :mod:`escale.relay.sftp`:
``ssh`` reads no configuration file (``-F /dev/null``), asks nothing
(``BatchMode``), offers only the configured key (``IdentitiesOnly``, no
agent), checks the host key against escale's known_hosts file only
(``StrictHostKeyChecking=yes``, no global file, never writing to the file),
and forwards nothing. ssh's own messages go to the log (at debug level),
never to the terminal.

Lifetime: the child is started in a session of its own (a Ctrl-C at the
terminal reaches escale, which then closes its relays, not ssh), and is
ended and reaped by :meth:`OpenSshPipe.close` (or when the pipe object is
collected): no process is left behind.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import subprocess
import tempfile
import weakref
from typing import IO

log = logging.getLogger(__name__)

#: bytes taken by one ``recv`` at most: about one SFTP read reply. A bigger
#: size costs a buffer that big allocated (and shrunk) at every call.
RECV_MAX = 256 * 1024
#: bytes asked for each end's socket buffers (the kernel caps them at
#: ``net.core.wmem_max``/``rmem_max``): with the default (about 200 KiB) ssh
#: moves a transfer in small reads and writes, and spends half as much CPU
#: again as with this
SOCKET_BUFFER = 1024 * 1024
#: seconds a closing ssh is given to end its session before it is killed
_CLOSE_GRACE = 2.0
#: ciphers put first (``^``: ahead of ssh's own list): AES-GCM, which modern
#: processors run in hardware, ahead of ssh's default ChaCha20-Poly1305
_CIPHERS = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com"
#: key exchanges put first: X25519, what paramiko's path negotiates. ssh's
#: default (sntrup761x25519, post-quantum hybrid) costs its client about
#: 0.1 s of CPU per connection, more than the rest of the login together.
_KEX = "^curve25519-sha256,curve25519-sha256@libssh.org"
_VERSION_LINE = re.compile(r"Remote protocol version ([0-9.]+), remote software version (\S.*)$")


def ssh_program() -> str | None:
    """The OpenSSH client on PATH, or None."""
    return shutil.which("ssh")


def config_path(path: str) -> str | None:
    """``path`` as one value of an ``ssh -o`` option (quoted, ``%`` doubled:
    ssh expands %-tokens in file names); None when it cannot be written so
    (a double quote or a line break in it)."""
    if any(c in path for c in '"\n\r'):
        return None
    return '"' + path.replace("%", "%%") + '"'


def ssh_command(program: str, *, host: str, port: int, username: str, key_file: str, known_hosts: str,
                host_key_name: str, timeout: float, keepalive: int) -> list[str] | None:
    """The ``ssh`` command line of an SFTP session to ``username@host:port``
    authenticated by ``key_file`` only, host key checked against the
    entries of ``known_hosts`` for ``host_key_name`` only (``HostKeyAlias``:
    without it, OpenSSH also accepts an entry written for port 22 when the
    host is an address); None when a value cannot be passed to ssh safely
    (the caller then uses paramiko)."""
    key, known = config_path(key_file), config_path(known_hosts)
    if key is None or known is None or not host or "@" in host or host.startswith("-") or any(
            c.isspace() or c in '"%' for c in host + username + host_key_name):
        return None
    options = {
        "BatchMode": "yes",
        "IdentitiesOnly": "yes",
        "IdentityAgent": "none",
        "IdentityFile": key,
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UserKnownHostsFile": known,
        "HostKeyAlias": host_key_name,
        "GlobalKnownHostsFile": "/dev/null",
        "StrictHostKeyChecking": "yes",
        "UpdateHostKeys": "no",
        "CheckHostIP": "no",
        "ConnectTimeout": str(max(1, round(timeout))),
        "ServerAliveInterval": str(keepalive),
        "ServerAliveCountMax": "3",
        "ClearAllForwardings": "yes",
        "ForwardAgent": "no",
        "ForwardX11": "no",
        "Compression": "no",
        "Ciphers": _CIPHERS,
        "KexAlgorithms": _KEX,
        "User": username,
        "Port": str(port),
    }
    argv = [program, "-F", "/dev/null", "-T", "-v"]
    for name, value in options.items():
        argv += ["-o", f"{name}={value}"]
    return [*argv, "-s", "--", host, "sftp"]


class OpenSshPipe:
    """An ``ssh`` child process running the sftp subsystem, seen as a socket.

    ``send``/``recv`` move bytes of the SFTP session; both raise TimeoutError
    after ``settimeout``'s seconds without progress, ``recv`` answers
    ``b""`` once ssh has ended (the session is over), ``send`` raises
    ConnectionError then. OSError from :meth:`start` when ssh cannot run.
    """

    def __init__(self, argv: list[str], timeout: float) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="escale-ssh-")  # noqa: SIM115 - closed by close()
        mine, theirs = socket.socketpair()
        for end in (mine, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        try:
            self.proc = subprocess.Popen(argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=self._stderr,
                                         close_fds=True, start_new_session=True)
        except BaseException:
            mine.close()
            self._stderr.close()
            raise
        finally:
            theirs.close()
        self._sock = mine
        self._sock.settimeout(timeout)
        self._closed = False
        self._finalizer = weakref.finalize(self, _reap, self.proc, mine, self._stderr, False)

    # ---------------------------------------------------------- socket-like

    def send(self, data: bytes | memoryview) -> int:
        return self._sock.send(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(min(size, RECV_MAX))

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def get_name(self) -> str:
        return f"ssh[{self.proc.pid}]"

    def close(self) -> None:
        """End the session: ssh is given a moment to end it cleanly (it sees
        its input end), then killed; reaped in every case. Its messages go
        to the log. Idempotent."""
        self.end(graceful=True)

    # ---------------------------------------------------------- process

    def is_active(self) -> bool:
        """Whether ssh still runs (and the pipe is open)."""
        return not self._closed and self.proc.poll() is None

    def end(self, graceful: bool) -> None:
        """Close the pipe and reap ssh: after up to a short grace time when
        ``graceful`` (the session is ended in order), else killed at once (a
        session found broken or silent). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        _reap(self.proc, self._sock, self._stderr, graceful)

    def messages(self) -> list[str]:
        """What ssh has written to its standard error so far, line by line."""
        if self._stderr.closed:
            return []
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace").splitlines()

    def wait_exit(self, timeout: float) -> int | None:
        """ssh's exit status once it has ended (up to ``timeout`` seconds), else None."""
        try:
            return int(self.proc.wait(timeout))
        except subprocess.TimeoutExpired:
            return None

    def server_version(self) -> str:
        """The server's SSH version string (``SSH-2.0-OpenSSH_9.2``) as ssh
        reported it; empty when not reported."""
        for line in self.messages():
            match = _VERSION_LINE.search(line)
            if match:
                return f"SSH-{match.group(1)}-{match.group(2)}"
        return ""

    def problem(self) -> str:
        """ssh's last message that is not one of its ``-v`` debug lines: the
        reason it gave for ending (empty when none)."""
        lines = [line.strip() for line in self.messages()
                 if line.strip() and not line.startswith(("debug1:", "debug2:", "debug3:"))]
        return lines[-1] if lines else ""


def _reap(proc: subprocess.Popen[bytes], sock: socket.socket, stderr: IO[bytes], graceful: bool) -> None:
    """Close ``sock`` and end ``proc`` (a grace time first when ``graceful``),
    wait for it, and log what it wrote to ``stderr``."""
    sock.close()
    if proc.poll() is None:
        if graceful:
            try:
                proc.wait(_CLOSE_GRACE)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    try:
        stderr.seek(0)
        text = stderr.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        text = ""
    finally:
        stderr.close()
    for line in text.splitlines():
        if line.strip() and not line.startswith(("debug1:", "debug2:", "debug3:")):
            log.debug("ssh[%d]: %s", proc.pid, line.strip())
    log.debug("ssh[%d] ended with status %s", proc.pid, proc.returncode)


def diagnose(lines: list[str]) -> str:
    """What ssh's messages say went wrong: ``host key``, ``auth``,
    ``refused``, ``timeout``, ``subsystem`` or ``other``."""
    text = "\n".join(line for line in lines if not line.startswith(("debug2:", "debug3:")))
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return "host key"
    if "Permission denied" in text or "Too many authentication failures" in text:
        return "auth"
    if "Connection refused" in text:
        return "refused"
    if "timed out" in text.lower():
        return "timeout"
    if "subsystem request failed" in text:
        return "subsystem"
    return "other"


__all__ = ["OpenSshPipe", "config_path", "diagnose", "ssh_command", "ssh_program"]
