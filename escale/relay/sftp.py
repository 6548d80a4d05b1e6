"""The ``sftp`` backend: a repository folder on an SSH server.

Transport (``spec.ssh_client``): the SSH session is paramiko's, in this
process, or an OpenSSH ``ssh`` child's (:mod:`escale.relay.sftp_openssh`),
whose standard input and output carry the SFTP packets; either way the SFTP
requests below are framed here, by the same code. ``auto`` takes ``ssh``
when it is on PATH and the relay logs in with a key and no password. The
``ssh`` route gives the same errors as paramiko's (a host key ssh refuses is
checked again through paramiko, which names it), and its child is ended and
reaped when the session is dropped or closed.

Connection: one TCP connection per relay, every step bounded by ``spec.timeout``
(TCP connect, SSH banner, key exchange, authentication, and each SFTP request
through the channel timeout). A dead or silent server raises
:class:`RelayConnectionError` (transient) instead of hanging.

Host key: checked against a known_hosts file (``spec.known_hosts``, default
``~/.ssh/known_hosts``), with OpenSSH's ``[host]:port`` form for ports other than
22 and hashed entries understood. An unknown or changed key raises
:class:`HostKeyError` before anything is sent beyond the key exchange; a key is
never accepted automatically.

Authentication: the private key ``spec.ssh_key`` (or ``spec.keyfile``), then the
password ``spec.password`` if the key was refused or none is configured. A
refusal raises :class:`RelayPermissionDenied`; neither secret is logged.

Writes: ``put`` writes a :data:`TEMP_PREFIX` name in the target's folder, then
renames it into place. Which rename gives which guarantee depends on the server,
so the capabilities are declared after connecting (:attr:`SftpRelay.capabilities`
before ``open()`` holds what any SFTP server gives):

* ``posix-rename@openssh.com`` (probed at connect) replaces the target
  atomically: atomic ``put`` and ``rename(overwrite=True)``. Without it the
  target is removed first, so readers may briefly find nothing. ``rclone serve
  sftp`` offers it, but its readers can still see a missing or mixed object
  while a name is replaced, so no atomicity is declared for it.
* OpenSSH's sftp-server implements the plain SFTP rename of a file with
  ``link()`` + ``unlink()``: it fails atomically when the target exists, which
  gives race-free exclusive ``put`` and ``rename(overwrite=False)``. (On a file
  system without hard links OpenSSH itself falls back to check-then-rename.) On
  other servers the plain rename may overwrite, so the target is checked first
  and the exclusive flags are declared false.
* ``statvfs@openssh.com`` (probed at connect) gives :meth:`usage`.

Modification times have one-second precision (SFTP version 3).

Transfers: the TCP connection has Nagle's algorithm off (SFTP is many small
requests, each waiting for its answer); AES-GCM is asked first when the
server offers it (no separate MAC pass). Requests go through paramiko's
request plumbing without its file objects, several sent before the first
answer is waited for. A download sends its FSTAT with its first read, so
a small object costs two round trips (OPEN, then FSTAT and READ), and its
CLOSE is sent without waiting for the answer; a bigger one keeps up to
:data:`READ_AHEAD_BYTES` asked ahead from the calling thread (never
paramiko's ``prefetch``, which starts a thread per file and was seen to
stall). An upload sends its writes and its CLOSE without waiting, then
waits for every answer: a refused write fails the put before the rename,
so a partial temporary is never moved into place. On OpenSSH a group of
exclusive puts (:meth:`Relay.put_commits`) costs three round trips for the
whole group, as does a group of objects under fresh names
(:meth:`Relay.put_fresh`: every OPEN, then every write and close, then the
answers; no rename), and a group of small reads (:meth:`Relay.get_many`) about
three: every OPEN sent at once, then every FSTAT and first READ, then the
rest of any object bigger than one read, and the CLOSEs sent without
waiting. Reads and writes go in requests as big as the server says it takes
(``limits@openssh.com``, up to :data:`LARGEST_REQUEST`), else 32 KiB. A
listing on OpenSSH keeps :data:`READDIR_AHEAD` READDIR requests in flight
(its sftp-server carries out requests one at a time, in order, and answers
100 names each); elsewhere one at a time. Its answers are parsed here, the
name, size, time and kind of each entry (no paramiko attribute object).
"""

from __future__ import annotations

import collections
import errno
import functools
import logging
import os
import posixpath
import secrets
import socket
import stat as stat_module
import struct
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, BinaryIO, TypeVar, cast

import paramiko
from paramiko import sftp as paramiko_sftp

from escale.errors import (
    EscaleError,
    HostKeyError,
    ObjectTooLarge,
    RelayConnectionError,
    RelayError,
    RelayExists,
    RelayNotFound,
    RelayPermissionDenied,
    RelayTimeout,
)
from escale.relay.base import (
    TEMP_PREFIX,
    BoundedSink,
    Capabilities,
    Entry,
    Relay,
    Usage,
    check_size,
    object_refusal,
)
from escale.relay.sftp_openssh import OpenSshPipe, diagnose, ssh_command, ssh_program
from escale.relay.spec import RelaySpec

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_PORT = 22
_CHUNK = 1024 * 1024
#: bytes asked by one SFTP read or write request where the server tells no
#: limit (what every server accepts)
_READ_REQUEST = 32 * 1024
#: the largest read or write request sent, where the server's limits
#: (``limits@openssh.com``) allow it: fewer, bigger requests cost less CPU
#: on both ends (paramiko's per-message work, and its receive buffer, which
#: moves what it still holds at each read)
LARGEST_REQUEST = 256 * 1024
#: bytes asked ahead by a download (the replies themselves are held back by
#: the channel window, 2 MiB)
READ_AHEAD_BYTES = 8 * 1024 * 1024
_KEEPALIVE = 30  # seconds of silence before an SSH keepalive message
#: a channel ``recv`` size above the channel window: it takes all the channel holds
_RECV_ALL = 1 << 24
#: SFTP packet type of an extended reply (draft-ietf-secsh-filexfer-02, section 3).
_CMD_EXTENDED = 200
_CMD_EXTENDED_REPLY = 201
#: objects of one :meth:`Relay.get_many` open at once on the server (fewer
#: where it states a lower limit of open handles)
GROUP_HANDLES = 64
#: OPEN flags of a temporary: created for writing, refused if it exists (O_EXCL)
_CREATE_EXCLUSIVE = (paramiko_sftp.SFTP_FLAG_WRITE | paramiko_sftp.SFTP_FLAG_CREATE
                     | paramiko_sftp.SFTP_FLAG_TRUNC | paramiko_sftp.SFTP_FLAG_EXCL)

#: OPEN flags of an object written straight under its name: created, or truncated
_CREATE_REPLACING = (paramiko_sftp.SFTP_FLAG_WRITE | paramiko_sftp.SFTP_FLAG_CREATE
                     | paramiko_sftp.SFTP_FLAG_TRUNC)

#: What any SFTP version 3 server gives (declared before connecting).
GENERIC_CAPABILITIES = Capabilities(
    atomic_put=False,
    exclusive_create=False,
    rename_overwrite=False,
    rename_exclusive=False,
    mtime_precision=1.0,
    usage=False,
    group_get=True,  # _get_many: pipelined requests, which every SFTP server takes
    group_delete=True,  # _delete_many: pipelined removes, likewise
)


def known_hosts_name(host: str, port: int) -> str:
    """The host as OpenSSH writes it in known_hosts: ``[host]:port`` unless port 22."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def _key_label(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def check_host_key(host: str, port: int, key: paramiko.PKey, known_hosts: str) -> None:
    """Accept ``key`` for ``host``:``port`` only if ``known_hosts`` lists it.

    Raises HostKeyError (one line, saying how to trust the host) when the file
    has no key of that type for the host, or a different one.
    """
    entry_name = known_hosts_name(host, port)
    keys = paramiko.HostKeys()
    try:
        keys.load(known_hosts)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise HostKeyError(f"cannot read known hosts file {known_hosts}: {exc.strerror or exc}") from exc
    known: dict[str, paramiko.PKey] = dict(keys.lookup(entry_name) or {})
    expected = known.get(key.get_name())
    scan = f"ssh-keyscan -p {port} {host} >> {known_hosts}"
    if expected is None:
        others = ", ".join(sorted(known.keys()))
        also = f"; the file has only {others} keys for it" if others else ""
        raise HostKeyError(
            f"unknown host key for {entry_name} ({_key_label(key)}){also}; "
            f"verify it and add it with: {scan}"
        )
    if expected != key:
        raise HostKeyError(
            f"host key for {entry_name} CHANGED (server now offers {_key_label(key)}, "
            f"{known_hosts} has {_key_label(expected)}); this may be an attack: if the change "
            f"is expected, remove the old key with: ssh-keygen -R '{entry_name}' -f {known_hosts} "
            f"and add the new one with: {scan}"
        )


def _preferred_key_types(host: str, port: int, known_hosts: str, defaults: tuple[str, ...]) -> list[str]:
    """Host key algorithms with those known for the host first (as OpenSSH does)."""
    keys = paramiko.HostKeys()
    try:
        keys.load(known_hosts)
    except OSError:
        return list(defaults)
    known: dict[str, paramiko.PKey] = dict(keys.lookup(known_hosts_name(host, port)) or {})
    first: list[str] = []
    for key_type in known:
        names = ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if key_type == "ssh-rsa" else [key_type]
        first.extend(n for n in names if n in defaults and n not in first)
    return first + [n for n in defaults if n not in first]


#: Ciphers tried first, when paramiko has them: AES-GCM authenticates in the
#: same pass as it encrypts (no separate HMAC over every packet), which
#: costs less CPU per byte on both ends.
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _preferred_ciphers(supported: tuple[str, ...]) -> tuple[str, ...]:
    """paramiko's ciphers with :data:`FAST_CIPHERS` first.

    The client's order decides (RFC 4253, section 7.1): the first of these
    the server also offers is used, so a server without AES-GCM still gets
    paramiko's usual choice."""
    first = tuple(name for name in FAST_CIPHERS if name in supported)
    return first + tuple(name for name in supported if name not in first)


class SftpRelay(Relay):
    """A repository in folder ``spec.directory`` on SSH server ``spec.host``."""

    scheme = "sftp"

    def __init__(self, spec: RelaySpec) -> None:
        super().__init__()
        if not spec.host:
            raise RelayError("sftp relay needs a host address")
        self.host = spec.host
        self.port = spec.port or DEFAULT_PORT
        self.username = spec.username or _local_user()
        self._password = spec.password
        self.key_path = spec.ssh_key or spec.keyfile
        self.known_hosts = os.path.expanduser(spec.known_hosts or "~/.ssh/known_hosts")
        self.timeout = spec.timeout
        directory = spec.directory.rstrip("/")
        self.root = directory if directory or not spec.directory else "/"
        self.capabilities = GENERIC_CAPABILITIES
        self.server_version = ""
        self._transport: paramiko.Transport | None = None
        #: the ``ssh`` child carrying the session (``ssh client``), else None
        self._pipe: OpenSshPipe | None = None
        self._ssh_client = spec.ssh_client
        #: what carries the current session: ``openssh`` or ``paramiko`` (empty when closed)
        self.transport_kind = ""
        self._sftp: paramiko.SFTPClient | None = None
        self._openssh = False
        self._posix_rename = False
        #: bytes per read and per write request (:meth:`_probe_limits`)
        self._read_request = _READ_REQUEST
        self._write_request = _READ_REQUEST
        #: objects a group read keeps open at once (:meth:`_probe_limits`)
        self._group_handles = GROUP_HANDLES

    @property
    def _readdir_ahead(self) -> int:
        """READDIR requests a listing keeps in flight: :data:`READDIR_AHEAD`
        on OpenSSH (probed at connect), else one."""
        return READDIR_AHEAD if self._openssh else 1

    def describe(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}/{self.root.lstrip('/')}"

    # ----------------------------------------------------------- paths and errors

    def _path(self, name: str) -> str:
        if not name:
            return self.root or "."
        return posixpath.join(self.root, name) if self.root else name

    def _temp_beside(self, path: str) -> str:
        return posixpath.join(posixpath.dirname(path), TEMP_PREFIX + secrets.token_hex(8))

    def _connection_lost(self, message: str, exc: BaseException, *, timeout: bool = False) -> RelayError:
        """Drop the (now unusable) session and return the transient error to raise."""
        self._drop()
        cls = RelayTimeout if timeout else RelayConnectionError
        return cls(f"{self.describe()}: {message}: {exc or type(exc).__name__}")

    def _translate(self, exc: BaseException, name: str) -> RelayError:
        """Map a paramiko or socket exception about ``name`` to escale.errors."""
        what = name or "/"
        if isinstance(exc, TimeoutError):
            return self._connection_lost(f"no answer within {self.timeout:g}s", exc, timeout=True)
        if isinstance(exc, (EOFError, paramiko.SSHException, ConnectionError)):
            return self._connection_lost("connection lost", exc)
        if isinstance(exc, OSError):
            if exc.errno == errno.ENOENT:
                return RelayNotFound(f"no such relay object: {what}", name=name)
            if exc.errno in (errno.EACCES, errno.EPERM):
                return RelayPermissionDenied(f"permission denied on {self.describe()}: {what}", name=name)
            if not self._session_active():
                return self._connection_lost("connection lost", exc)
            detail = exc.strerror or (exc.args[0] if exc.args else "") or type(exc).__name__
            return RelayError(f"sftp server refused the operation on {what}: {detail}", name=name)
        return RelayError(f"sftp error on {what}: {exc}", name=name)

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            raise RelayConnectionError(f"{self.describe()}: not connected (connection lost)")
        return self._sftp

    def _call(self, name: str, action: Callable[[paramiko.SFTPClient], T]) -> T:
        sftp = self._client()
        try:
            return action(sftp)
        except RelayError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._translate(exc, name) from exc

    # ----------------------------------------------------------- lifecycle

    def _session_active(self) -> bool:
        """Whether the SSH session (paramiko's transport or the ssh child) still runs."""
        if self._pipe is not None:
            return self._pipe.is_active()
        return self._transport is not None and self._transport.is_active()

    def _openssh_command(self) -> list[str] | None:
        """The ``ssh`` command line when this connection goes through the
        OpenSSH client (``ssh client``: ``openssh``, or ``auto`` with a key
        file, no password, and ``ssh`` on PATH); None for paramiko.
        RelayError when ``openssh`` is asked and cannot be used."""
        choice = self._ssh_client
        if choice == "paramiko":
            return None
        program = ssh_program()
        usable = self.key_path is not None and (self._password is None or choice == "openssh")
        if choice == "auto" and (program is None or not usable):
            return None
        if program is None:
            raise RelayError(f"{self.describe()}: 'ssh client = openssh' but no ssh program in PATH")
        if self.key_path is None:
            raise RelayError(f"{self.describe()}: 'ssh client = openssh' needs 'ssh key' (ssh is run "
                             "without prompts: password logins go through 'ssh client = paramiko')")
        argv = ssh_command(program, host=self.host, port=self.port, username=self.username,
                           key_file=os.path.expanduser(self.key_path), known_hosts=self.known_hosts,
                           host_key_name=known_hosts_name(self.host, self.port), timeout=self.timeout,
                           keepalive=_KEEPALIVE)
        if argv is None and choice == "openssh":
            raise RelayError(f"{self.describe()}: the host, user or a file name cannot be passed to ssh; "
                             "use 'ssh client = paramiko'")
        return argv

    def _connect(self) -> None:
        self._drop()
        log.debug("connecting to %s", self.describe())
        argv = self._openssh_command()
        if argv is None:
            self._connect_paramiko()
        else:
            self._connect_openssh(argv)
        try:
            self._probe_capabilities()
            self._probe_limits()
        except RelayError:
            self._drop()
            raise
        log.debug("connected to %s (%s, through %s)", self.describe(), self.server_version, self.transport_kind)

    def _connect_openssh(self, argv: list[str]) -> None:
        """Open the SFTP session through an ``ssh`` child (:mod:`escale.relay.sftp_openssh`).

        Errors are those of the paramiko path: the key is read first (a
        missing or protected key is refused the same way); a host key that
        ssh refuses is checked again through paramiko, which raises the same
        HostKeyError (naming the offered key and the command that trusts
        it) before any authentication; refused logins, refused or silent
        connections map to the same classes."""
        assert self.key_path is not None
        _load_key(os.path.expanduser(self.key_path))
        where = f"{self.host}:{self.port}"
        try:
            pipe = OpenSshPipe(argv, self.timeout)
        except OSError as exc:
            raise RelayConnectionError(f"{self.describe()}: cannot run {argv[0]}: {exc.strerror or exc}") from exc
        self._pipe = pipe
        try:
            sftp = _SftpClient(pipe)  # the SFTP version exchange: ssh has connected and logged in
        except TimeoutError as exc:
            self._drop()
            raise RelayTimeout(f"{self.describe()}: no SFTP session from {where} within {self.timeout:g}s") from exc
        except (OSError, EOFError, paramiko.SSHException) as exc:
            pipe.wait_exit(self.timeout)
            messages, problem = pipe.messages(), pipe.problem()
            self._drop()
            cause = diagnose(messages)
            log.debug("ssh to %s failed (%s): %s", where, cause, problem)
            if cause == "host key":
                # ssh refused the host key: paramiko names it, and what to do, in
                # the very words of its own check (or connects, if the file has
                # changed since: then that session is used)
                self._connect_paramiko()
                return
            if self._ssh_client == "auto" and cause in ("auth", "other"):
                # the server answered, but this ssh did not get through (an old ssh
                # refusing an option, a key type it no longer offers...): paramiko
                # takes over for this relay, and gives the verdict if it fails too
                log.warning("%s: ssh could not open the session (%s); using paramiko instead "
                            "(set 'ssh client = paramiko' to skip ssh)", self.describe(), problem or cause)
                self._ssh_client = "paramiko"
                self._connect_paramiko()
                return
            if cause == "auth":
                raise RelayPermissionDenied(f"{self.describe()}: authentication failed for user {self.username} "
                                            f"(tried key {self.key_path})") from exc
            if cause == "refused":
                raise RelayConnectionError(f"{self.describe()}: connection refused to {where}") from None
            if cause == "timeout":
                raise RelayTimeout(f"{self.describe()}: no answer from {where} within {self.timeout:g}s") from exc
            if cause == "subsystem":
                raise RelayConnectionError(f"{self.describe()}: the server refused the sftp subsystem") from exc
            raise RelayConnectionError(f"{self.describe()}: ssh ended: {problem or exc}") from exc
        self._sftp = sftp
        self.transport_kind = "openssh"
        self.server_version = pipe.server_version()

    def _connect_paramiko(self) -> None:
        """Open the SSH session and its SFTP channel through paramiko."""
        where = f"{self.host}:{self.port}"
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except TimeoutError as exc:
            raise RelayTimeout(f"{self.describe()}: no answer from {where} within {self.timeout:g}s") from exc
        except ConnectionRefusedError:
            raise RelayConnectionError(f"{self.describe()}: connection refused to {where}") from None
        except OSError as exc:
            raise RelayConnectionError(
                f"{self.describe()}: cannot connect to {where}: {exc.strerror or exc}"
            ) from exc
        try:
            # SFTP requests are small messages that each wait for an answer:
            # without this, Nagle's algorithm holds them back behind unacknowledged
            # data (OpenSSH's own client sets it too)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # pragma: no cover - a socket that is not TCP
            pass
        transport = paramiko.Transport(sock)
        self._transport = transport
        try:
            transport.banner_timeout = self.timeout
            transport.handshake_timeout = self.timeout
            transport.auth_timeout = self.timeout
            options = transport.get_security_options()
            options.ciphers = _preferred_ciphers(tuple(options.ciphers))
            options.key_types = _preferred_key_types(
                self.host, self.port, self.known_hosts, tuple(options.key_types)
            )
            try:
                transport.start_client(timeout=self.timeout)
            except paramiko.SSHException as exc:
                if "banner" not in str(exc):
                    raise
                raise RelayTimeout(
                    f"{self.describe()}: no SSH banner from {where} within {self.timeout:g}s (is it an SSH server?)"
                ) from exc
            if transport.host_key is None:  # start_client returns at its timeout, key exchange unfinished
                raise RelayTimeout(f"{self.describe()}: no SSH handshake from {where} within {self.timeout:g}s")
            self.server_version = transport.remote_version
            check_host_key(self.host, self.port, transport.get_remote_server_key(), self.known_hosts)
            self._authenticate(transport)
            sftp = _SftpClient.from_transport(transport)
            if sftp is None:
                raise paramiko.SSHException("the server refused the sftp subsystem")
            transport.set_keepalive(_KEEPALIVE)  # keeps idle NAT/firewall state alive
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.timeout)
            self._sftp = sftp
            self.transport_kind = "paramiko"
        except RelayError:
            self._drop()
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            error = self._translate(exc, "")
            self._drop()
            raise error from exc

    def _authenticate(self, transport: paramiko.Transport) -> None:
        """Key first, then password; RelayPermissionDenied when all are refused."""
        tried = []
        if self.key_path:
            key = _load_key(os.path.expanduser(self.key_path))
            tried.append(f"key {self.key_path}")
            try:
                transport.auth_publickey(self.username, key)
                return
            except paramiko.AuthenticationException:
                pass
        if self._password is not None:
            tried.append("password")
            try:
                transport.auth_password(self.username, self._password)
                return
            except paramiko.AuthenticationException:
                pass
        if not tried:
            raise RelayPermissionDenied(
                f"{self.describe()}: no ssh key or password configured for user {self.username}"
            )
        raise RelayPermissionDenied(
            f"{self.describe()}: authentication failed for user {self.username} "
            f"(tried {' and '.join(tried)})"
        )

    def _probe_capabilities(self) -> None:
        """Learn what this server does, and declare it in :attr:`capabilities`."""
        self._openssh = self.server_version.startswith("SSH-2.0-OpenSSH")
        sftp = self._client()
        missing = self._path(TEMP_PREFIX + "probe-" + secrets.token_hex(8))
        try:
            sftp.posix_rename(missing, missing + "-2")
            self._posix_rename = True  # pragma: no cover - the probe names never exist
        except OSError as exc:
            if not self._session_active():
                raise self._translate(exc, "") from exc
            # ENOENT means the server understood the request and found nothing;
            # anything else (SSH_FX_OP_UNSUPPORTED) means no posix-rename.
            self._posix_rename = exc.errno == errno.ENOENT
        except (EOFError, paramiko.SSHException) as exc:
            raise self._translate(exc, "") from exc
        # the repository folder is not created on connect (Relay.create_root):
        # a missing one is probed through its nearest existing parent (same
        # file system as far as the server tells), a non-folder is refused
        probe = self._path("")
        try:
            kind = self._is_dir(sftp, probe)
            if kind is False:
                raise RelayError(f"{self.describe()}: the repository path is not a folder")
            while kind is None and posixpath.dirname(probe.rstrip("/")) not in ("", probe.rstrip("/")):
                probe = posixpath.dirname(probe.rstrip("/")) or "/"
                kind = self._is_dir(sftp, probe)
        except OSError as exc:
            raise self._translate(exc, "") from exc
        usage = self._statvfs(probe) is not None
        exclusive = self._openssh
        # rclone's server renames atomically on disk, but its virtual file system
        # lets a reader see the name missing, or a mix of the old and new content,
        # while the name is replaced (seen by the conformance suite).
        replaces_whole = self._posix_rename and not self.server_version.startswith("SSH-2.0-rclone")
        self.capabilities = Capabilities(
            atomic_put=replaces_whole,
            exclusive_create=exclusive,
            rename_overwrite=replaces_whole,
            rename_exclusive=exclusive,
            mtime_precision=1.0,
            usage=usage,
            group_put=exclusive,  # _put_commits: three round trips for a whole group on OpenSSH
            group_get=True,  # _get_many: a few round trips for a whole group
            group_delete=True,  # _delete_many: one round trip per group of removes
        )
        log.debug("%s server %r capabilities: %s", self.describe(), self.server_version, self.capabilities)

    def _drop(self, graceful: bool = False) -> None:
        """Forget the session and end it: an ssh child is killed at once
        (a broken or silent session), or given a moment to end the session
        in order when ``graceful`` (a close); reaped in every case."""
        sftp, transport, pipe = self._sftp, self._transport, self._pipe
        self._sftp = self._transport = self._pipe = None
        self.transport_kind = ""
        if pipe is not None:
            pipe.end(graceful)
        elif sftp is not None:
            try:
                sftp.close()
            except Exception:  # noqa: BLE001 - tearing down a broken session
                pass
        if transport is not None:
            try:
                transport.close()
            except Exception:  # noqa: BLE001 - tearing down a broken session
                pass

    def _disconnect(self) -> None:
        self._drop(graceful=True)

    # ----------------------------------------------------------- helpers

    def _entry(self, name: str, attrs: paramiko.SFTPAttributes) -> Entry:
        is_dir = stat_module.S_ISDIR(attrs.st_mode or 0)
        mtime = float(attrs.st_mtime) if attrs.st_mtime is not None else None
        return Entry(name=name, size=0 if is_dir else int(attrs.st_size or 0), mtime=mtime, is_dir=is_dir)

    def _is_dir(self, sftp: paramiko.SFTPClient, path: str) -> bool | None:
        """True/False for an existing folder/non-folder, None when missing."""
        try:
            return stat_module.S_ISDIR(sftp.stat(path).st_mode or 0)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def _makedirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        """Create folder ``path`` and its parents; an existing folder is fine."""
        if path in ("", ".", "/"):
            return
        try:
            sftp.mkdir(path)
            return
        except OSError as exc:
            first = exc
        state = self._is_dir(sftp, path)
        if state:
            return
        if state is False:
            raise RelayError(f"relay path exists and is not a folder: {path}", name=path)
        parent = posixpath.dirname(path)
        if parent == path:
            raise first
        self._makedirs(sftp, parent)
        try:
            sftp.mkdir(path)
        except OSError:
            if not self._is_dir(sftp, path):  # lost a race with another creator: fine
                raise

    def _exists(self, sftp: paramiko.SFTPClient, path: str) -> bool:
        return self._is_dir(sftp, path) is not None

    def _probe_limits(self) -> None:
        """Size the read and write requests to the server's limits when it
        tells them (``limits@openssh.com``: OpenSSH 8.7 and later), up to
        :data:`LARGEST_REQUEST`; else keep :data:`_READ_REQUEST`, what every
        server accepts (a server that answers reads short would cost a
        round trip per request)."""
        self._read_request = self._write_request = _READ_REQUEST
        self._group_handles = GROUP_HANDLES
        sftp = self._client()
        request: Callable[..., tuple[int, Any]] = sftp._request  # type: ignore[attr-defined]
        try:
            kind, msg = request(_CMD_EXTENDED, "limits@openssh.com")
        except OSError as exc:
            if not self._session_active():
                raise self._translate(exc, "") from exc
            return  # not offered: the defaults
        except (EOFError, paramiko.SSHException) as exc:
            raise self._translate(exc, "") from exc
        if kind != _CMD_EXTENDED_REPLY or msg is None:
            return
        try:
            _packet, read, write, handles = struct.unpack(">4Q", msg.get_bytes(32))
        except struct.error:
            return
        if handles:  # open handles the server allows: a group read keeps to half of them
            self._group_handles = max(1, min(GROUP_HANDLES, handles // 2))
        # 0 means "no limit stated"; a limit below the default is obeyed
        self._read_request = min(read, LARGEST_REQUEST) if read else _READ_REQUEST
        self._write_request = min(write, LARGEST_REQUEST) if write else _READ_REQUEST

    def _statvfs(self, path: str) -> Usage | None:
        """Space figures through ``statvfs@openssh.com``; None when unsupported."""
        sftp = self._client()
        request: Callable[..., tuple[int, Any]] = sftp._request  # type: ignore[attr-defined]
        try:
            kind, msg = request(_CMD_EXTENDED, "statvfs@openssh.com", path)
        except OSError as exc:
            if not self._session_active():
                raise self._translate(exc, "") from exc
            return None
        except (EOFError, paramiko.SSHException) as exc:
            raise self._translate(exc, "") from exc
        if kind != _CMD_EXTENDED_REPLY or msg is None:
            return None
        try:
            fields = struct.unpack(">11Q", msg.get_bytes(8 * 11))
        except struct.error:
            return None
        frsize, blocks, bavail = fields[1], fields[2], fields[4]
        total = blocks * frsize
        return Usage(used=total - bavail * frsize, total=total)

    # ----------------------------------------------------------- operations

    def _list(self, folder: str) -> list[Entry]:
        prefix = f"{folder}/" if folder else ""
        ahead = self._readdir_ahead

        def scan(sftp: paramiko.SFTPClient) -> list[Entry]:
            return [
                Entry(name=prefix + filename, size=0 if is_dir else size,
                      mtime=float(mtime) if mtime is not None else None, is_dir=is_dir)
                for filename, size, mtime, is_dir in _listed(sftp, self._path(folder), ahead)
                if filename not in (".", "..")
            ]

        return self._call(folder, scan)

    def _stat(self, name: str) -> Entry:
        return self._call(name, lambda s: self._entry(name, s.stat(self._path(name))))

    def _get(self, name: str, sink: BinaryIO) -> None:
        path = self._path(name)
        bounded: object = sink
        limit = bounded.limit if isinstance(bounded, BoundedSink) else None

        def fetch(sftp: paramiko.SFTPClient) -> None:
            client: Any = sftp  # paramiko's request plumbing is not in its type stubs
            handle = _open_handle(client, path, paramiko_sftp.SFTP_FLAG_READ)
            try:
                _read_whole(client, handle, sink, self._read_request, limit)
            finally:
                _close_unwaited(client, handle)

        self._call(name, fetch)

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        """A group of small reads in a few round trips, up to
        :attr:`_group_handles` objects open at once: every OPEN is sent, then
        (once the handles are in) every FSTAT and first READ (at most
        ``limit + 1`` bytes), then whatever an object bigger than that first
        read still needs, one object after the other; each handle's CLOSE is
        sent without waiting (:func:`_close_unwaited`). Every answer is
        checked: a refused OPEN, FSTAT or READ is that name's RelayNotFound,
        RelayPermissionDenied or RelayError; a stated size over ``limit`` is
        that name's ObjectTooLarge, refused before its content is kept. A
        lost connection or an answer out of the protocol raises for the
        whole group, as :meth:`_get` does."""
        if len(names) < 2:
            return super()._get_many(names, limit)
        found: list[bytes | EscaleError] = []
        for start in range(0, len(names), self._group_handles):
            part = names[start:start + self._group_handles]

            def read(sftp: paramiko.SFTPClient, part: Sequence[str] = part) -> list[bytes | EscaleError]:
                return self._read_group(sftp, part, limit)

            found.extend(self._call(part[0], read))
        return found

    def _refused(self, exc: OSError, name: str) -> EscaleError:
        """What a refused request about ``name`` alone is, as its value;
        raises when it is a lost connection instead."""
        error = self._translate(exc, name)
        if not object_refusal(error):
            raise error
        return error

    def _read_group(self, sftp: paramiko.SFTPClient, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        client: Any = sftp  # paramiko's request plumbing is not in its type stubs
        replies = _Replies()
        opening = [_ask_open(client, replies, self._path(name), paramiko_sftp.SFTP_FLAG_READ) for name in names]
        outcomes: list[bytes | EscaleError | None] = [None] * len(names)
        handles: dict[int, bytes] = {}
        try:
            for position, (name, num) in enumerate(zip(names, opening, strict=True)):
                try:
                    handles[position] = _handle_reply(client, replies, num)
                except OSError as exc:
                    outcomes[position] = self._refused(exc, name)
            first = max(1, min(self._read_request, limit + 1))
            asked = {position: (client._async_request(replies, paramiko_sftp.CMD_FSTAT, handle),
                                client._async_request(replies, paramiko_sftp.CMD_READ, handle,
                                                      paramiko_sftp.int64(0), first))
                     for position, handle in handles.items()}
            for position, (stat_num, read_num) in asked.items():
                name = names[position]
                sink = BoundedSink(name, limit)
                try:
                    try:
                        size = _size_reply(client, replies, stat_num)
                    finally:
                        data = _read_reply(client, replies, read_num)  # in every case: its answer is taken
                    check_size(sink, size)
                    _read_rest(client, handles[position], cast(BinaryIO, sink), data, size, first,
                               self._read_request)
                except ObjectTooLarge as exc:
                    outcomes[position] = exc
                except OSError as exc:
                    outcomes[position] = self._refused(exc, name)
                else:
                    outcomes[position] = sink.getvalue()
        finally:
            for handle in handles.values():
                _close_unwaited(client, handle)
        return [outcome if outcome is not None else RelayError(f"sftp: no answer for {name}", name=name)
                for name, outcome in zip(names, outcomes, strict=True)]

    def _upload_temp(self, sftp: paramiko.SFTPClient, path: str, source: BinaryIO) -> str:
        """Write ``source`` to a fresh temporary name beside ``path`` (created
        with O_EXCL), closed and every write acknowledged; return its name."""
        client: Any = sftp  # paramiko's request plumbing is not in its type stubs
        temp = self._temp_beside(path)
        try:
            handle = _open_handle(client, temp, _CREATE_EXCLUSIVE)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            self._makedirs(sftp, posixpath.dirname(path))
            handle = _open_handle(client, temp, _CREATE_EXCLUSIVE)
        try:
            _write_and_close(client, handle, source, self._write_request)
        except BaseException:
            self._remove_quietly(sftp, temp)
            raise
        return temp

    def _remove_quietly(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(path)
        except Exception:  # noqa: BLE001 - best-effort cleanup of our temporary file
            log.debug("could not remove temporary %s on %s", path, self.describe())

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        path = self._path(name)

        def write(sftp: paramiko.SFTPClient) -> None:
            temp = self._upload_temp(sftp, path, source)
            try:
                if exclusive:
                    self._move_exclusive(sftp, temp, path, name)
                else:
                    self._move_replacing(sftp, temp, path)
            except BaseException:
                self._remove_quietly(sftp, temp)
                raise

        self._call(name, write)

    def _move_exclusive(self, sftp: paramiko.SFTPClient, src: str, dst: str, target: str) -> None:
        """Rename ``src`` to ``dst`` unless ``dst`` exists (atomically on OpenSSH)."""
        if not self._openssh and self._exists(sftp, dst):
            raise RelayExists(f"relay object exists: {target}", name=target)
        try:
            sftp.rename(src, dst)
        except OSError as exc:
            if exc.errno not in (None, errno.EEXIST) or not self._exists(sftp, dst):
                raise
            raise RelayExists(f"relay object exists: {target}", name=target) from exc

    def _move_replacing(self, sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst`` (atomically with posix-rename)."""
        if self._posix_rename:
            sftp.posix_rename(src, dst)
            return
        try:
            sftp.rename(src, dst)
        except OSError as exc:
            if exc.errno == errno.ENOENT or not self._exists(sftp, dst):
                raise
            sftp.remove(dst)
            sftp.rename(src, dst)

    def _put_commits(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """On OpenSSH (exclusive rename by ``link()``): the whole group in
        three round trips instead of three per item. Every temporary is
        opened (O_EXCL) at once, then every write and close is sent, and
        only when all of them are acknowledged are the renames sent, in
        item order (the server carries them out in that order): a rename
        never moves an object that was not written whole. A rename refused
        because the name exists answers False. Elsewhere, one :meth:`_put`
        after the other."""
        if not self._openssh or len(items) < 2:
            return super()._put_commits(items)
        paths = [self._path(name) for name, _ in items]
        sftp = self._client()
        client: Any = sftp  # paramiko's request plumbing is not in its type stubs
        temps: list[str] = []  # opened, to remove if the group fails before its renames

        def written() -> list[str]:
            self._write_all(sftp, [self._temp_beside(path) for path in paths], [data for _, data in items],
                            _CREATE_EXCLUSIVE, temps)
            return list(temps)

        def renamed(written_temps: list[str]) -> list[bool]:
            replies = _Replies()
            nums = [client._async_request(replies, paramiko_sftp.CMD_RENAME, temp, path)
                    for temp, path in zip(written_temps, paths, strict=True)]
            created: list[bool] = []
            failure: BaseException | None = None
            for num, temp, path, (name, _) in zip(nums, written_temps, paths, items, strict=True):
                try:
                    _status_reply(client, replies, num)
                    created.append(True)
                    continue
                except OSError as exc:
                    if failure is None and exc.errno in (None, errno.EEXIST) and self._exists(sftp, path):
                        created.append(False)
                    elif failure is None:
                        failure = self._translate(exc, name)
                self._remove_quietly(sftp, temp)
            if failure is not None:
                raise failure
            return created

        def commit(_sftp: paramiko.SFTPClient) -> list[bool]:
            try:
                written_temps = written()
            except BaseException:
                for temp in temps:
                    self._remove_quietly(sftp, temp)
                raise
            return renamed(written_temps)

        return self._call(items[0][0], commit)

    def _write_all(self, sftp: paramiko.SFTPClient, targets: list[str], contents: Sequence[bytes], flags: int,
                   opened: list[str]) -> None:
        """Write each of ``contents`` to the path of the same rank in
        ``targets``, opened with ``flags``, in three round trips: every OPEN
        sent at once (a folder found missing is made, and that file opened
        again), then every write and close, then their answers. Each path
        opened is appended to ``opened`` as it is (for the caller to remove
        after a failure). Raises the first refusal once every handle is
        closed; nothing is written unless every file opened."""
        client: Any = sftp  # paramiko's request plumbing is not in its type stubs
        replies = _Replies()
        asked = [_ask_open(client, replies, target, flags) for target in targets]
        handles: list[bytes] = []
        failure: BaseException | None = None
        for target, num in zip(targets, asked, strict=True):
            try:
                try:
                    handle = _handle_reply(client, replies, num)
                except OSError as exc:
                    if exc.errno != errno.ENOENT or failure is not None:
                        raise
                    self._makedirs(sftp, posixpath.dirname(target))  # rare: a new folder
                    handle = _open_handle(client, target, flags)
            except OSError as exc:
                if failure is None:
                    failure = exc
                continue
            opened.append(target)
            handles.append(handle)
        if failure is not None:
            for handle in handles:
                _close_unwaited(client, handle)
            raise failure
        _write_and_close_all(client, handles, contents, self._write_request)

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Every item written straight under its name (created or truncated,
        no temporary, no rename) in three round trips for the group: the
        OPENs, then the writes and closes, then their answers. A write cut
        short leaves a part under the name, which no commit names."""
        last = dict(items)  # a name given twice: written once, with its last item
        names = list(last)

        def write(sftp: paramiko.SFTPClient) -> None:
            for start in range(0, len(names), self._group_handles):
                some = names[start:start + self._group_handles]
                self._write_all(sftp, [self._path(n) for n in some], [last[n] for n in some], _CREATE_REPLACING, [])

        self._call(names[0], write)

    def _delete(self, name: str) -> None:
        def remove(sftp: paramiko.SFTPClient) -> None:
            path = self._path(name)
            try:
                sftp.remove(path)
            except OSError:
                if self._is_dir(sftp, path):
                    raise RelayError(f"relay object is a folder, not deleted: {name}", name=name) from None
                raise

        self._call(name, remove)

    def _delete_many(self, names: Sequence[str]) -> list[EscaleError | None]:
        """Pipelined removes, up to :attr:`_group_handles` requests sent
        before their answers are read (one round trip per group); a refused
        remove is that name's RelayNotFound, RelayPermissionDenied or
        RelayError (a folder, told apart by a stat of that name alone, as
        :meth:`_delete` does). A lost connection raises for the whole call."""
        if len(names) < 2:
            return super()._delete_many(names)

        def remove(sftp: paramiko.SFTPClient, part: Sequence[str]) -> list[EscaleError | None]:
            client: Any = sftp  # paramiko's request plumbing is not in its type stubs
            replies = _Replies()
            asked = [client._async_request(replies, paramiko_sftp.CMD_REMOVE, self._path(n)) for n in part]
            outcomes: list[EscaleError | None] = []
            failed: list[int] = []
            for position, (name, num) in enumerate(zip(part, asked, strict=True)):
                try:
                    _status_reply(client, replies, num)
                    outcomes.append(None)
                except OSError as exc:
                    outcomes.append(self._refused(exc, name))
                    failed.append(position)
            for position in failed:  # every answer is in: a stat may be sent now
                if not isinstance(outcomes[position], RelayNotFound) and \
                        self._is_dir(sftp, self._path(part[position])):
                    name = part[position]
                    outcomes[position] = RelayError(f"relay object is a folder, not deleted: {name}", name=name)
            return outcomes

        found: list[EscaleError | None] = []
        for start in range(0, len(names), self._group_handles):
            part = names[start:start + self._group_handles]
            found.extend(self._call(part[0], functools.partial(remove, part=part)))
        return found

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        src, dst = self._path(source), self._path(target)

        def move(sftp: paramiko.SFTPClient) -> None:
            for attempt in (1, 2):
                try:
                    if overwrite:
                        self._move_replacing(sftp, src, dst)
                    else:
                        self._move_exclusive(sftp, src, dst, target)
                    return
                except OSError as exc:
                    # ENOENT: the source is missing, or the target's folder is.
                    if exc.errno != errno.ENOENT or attempt == 2:
                        raise
                    if not self._exists(sftp, src):
                        raise RelayNotFound(f"no such relay object: {source}", name=source) from exc
                    self._makedirs(sftp, posixpath.dirname(dst))

        self._call(source, move)

    def _mkdir(self, name: str) -> None:
        self._call(name, lambda s: self._makedirs(s, self._path(name)))

    def _rmdir(self, name: str) -> None:
        self._call(name, lambda s: s.rmdir(self._path(name)))

    def _usage(self) -> Usage | None:
        if not self.capabilities.usage:
            return None
        return self._statvfs(self._path(""))


#: READDIR requests kept in flight by a listing on a server that carries
#: out requests one at a time, in order (OpenSSH's sftp-server): each answer
#: holds up to 100 names there, so a folder of 100,000 names costs 1,000
#: answers, waited for one after the other without it
READDIR_AHEAD = 16
#: SFTP version 3 attribute flags (draft-ietf-secsh-filexfer-02, section 5)
_ATTR_SIZE, _ATTR_UIDGID, _ATTR_PERMISSIONS, _ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
_ATTR_EXTENDED = 0x80000000
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
#: the attributes OpenSSH states for every entry, in their order: size, uid
#: and gid, permissions, access and modification times
_ATTR_USUAL = _ATTR_SIZE | _ATTR_UIDGID | _ATTR_PERMISSIONS | _ATTR_ACMODTIME
_USUAL = struct.Struct(">QIIIII")


def _listed(sftp: paramiko.SFTPClient, path: str, ahead: int) -> Generator[tuple[str, int, int | None, bool]]:
    """The entries of folder ``path`` as ``(name, size, mtime, is_dir)``
    (size and mtime as the server states them, 0 and None when it does not),
    yielded as each READDIR answer is read: a folder of 100,000 names never
    holds an object per entry beyond the caller's. Consume it whole: the
    folder handle is closed at the end (or when the generator is closed).
    Requests: OPENDIR, READDIR until the end-of-folder status, CLOSE.

    ``ahead``: READDIR requests kept in flight (1: each waited for before
    the next is sent). More than one only where the server carries out the
    requests of a handle in order, one after the other: every answer is then
    the next part of the folder, and those asked after the end answer the
    end again (or, on a file system that lists a name made meanwhile after
    its end, that name: kept, as a name made during any listing may be);
    each is taken before the handle is closed.

    A name that is not UTF-8 is decoded with lone surrogates (paramiko's
    own listing fails the whole folder on it), which :meth:`Relay.list`
    refuses with one warning while the other names stay listed. An answer
    out of the protocol (a truncated entry, a packet of another type)
    raises SSHException, as a lost session does EOFError."""
    client: Any = sftp  # paramiko's request plumbing is not in its type stubs
    kind, msg = client._request(paramiko_sftp.CMD_OPENDIR, path)
    if kind != paramiko_sftp.CMD_HANDLE:
        raise paramiko.SSHException("sftp server answered an opendir without a handle")
    handle = msg.get_binary()
    replies = _Replies()
    waiting: collections.deque[int] = collections.deque()
    try:
        ended = False
        while not ended or waiting:
            while not ended and len(waiting) < ahead:
                waiting.append(client._async_request(replies, paramiko_sftp.CMD_READDIR, handle))
            try:
                kind, msg = _reply(client, replies, waiting.popleft())
            except EOFError:  # the end-of-folder status (a lost session raises from paramiko's reads)
                ended = True
                continue
            if kind != paramiko_sftp.CMD_NAME:
                raise paramiko.SSHException("sftp server answered a readdir without names")
            yield from _names(msg)
    finally:
        for num in waiting:  # a generator closed early: take the answers still due
            try:
                _reply(client, replies, num)
            except (EOFError, OSError, paramiko.SSHException):
                break
        client._request(paramiko_sftp.CMD_CLOSE, handle)


def _names(msg: paramiko.Message) -> Iterator[tuple[str, int, int | None, bool]]:
    """The entries of one NAME answer (its request number already read), as
    :func:`_listed` yields them, parsed from the packet's bytes."""
    data = msg.asbytes()
    at = msg.packet.tell()
    try:
        (count,) = _U32.unpack_from(data, at)
        at += 4
        for _ in range(count):
            (length,) = _U32.unpack_from(data, at)
            at += 4
            name = data[at:at + length].decode("utf-8", "surrogateescape")
            at += length
            (length,) = _U32.unpack_from(data, at)  # the "long name", for people: skipped
            at += 4 + length
            (flags,) = _U32.unpack_from(data, at)
            at += 4
            if flags == _ATTR_USUAL:  # what OpenSSH states for every entry: one unpack
                size, _uid, _gid, mode, _atime, mtime = _USUAL.unpack_from(data, at)
                at += _USUAL.size
                yield name, size, mtime, stat_module.S_ISDIR(mode)
                continue
            size, mode, mtime = 0, 0, None
            if flags & _ATTR_SIZE:
                (size,) = _U64.unpack_from(data, at)
                at += 8
            if flags & _ATTR_UIDGID:
                at += 8
            if flags & _ATTR_PERMISSIONS:
                (mode,) = _U32.unpack_from(data, at)
                at += 4
            if flags & _ATTR_ACMODTIME:
                (mtime,) = _U32.unpack_from(data, at + 4)
                at += 8
            if flags & _ATTR_EXTENDED:
                (pairs,) = _U32.unpack_from(data, at)
                at += 4
                for _ in range(2 * pairs):
                    (length,) = _U32.unpack_from(data, at)
                    at += 4 + length
            if at > len(data):  # a name or a skipped field cut short
                raise struct.error("an entry runs past the end of the answer")
            yield name, size, mtime, stat_module.S_ISDIR(mode)
    except struct.error as exc:
        raise paramiko.SSHException(f"sftp server sent a folder listing cut short ({exc})") from None


class _SftpClient(paramiko.SFTPClient):
    """paramiko's SFTP client, reading its packets through a buffer of its own.

    paramiko reads each SFTP packet from the channel with ``recv`` calls of
    the size still missing and joins the pieces by ``bytes +=``: a 256 KiB
    reply arriving in 32 KiB SSH packets is copied about four times over,
    and every partial ``recv`` moves what the channel still holds to the
    front of its buffer (up to the whole 2 MiB window). Here every ``recv``
    takes all the channel holds (:data:`_RECV_ALL`: more than the window)
    into one ``bytearray``, from which the packets are cut, each copied once,
    and a packet is sent through a view of it.
    Every packet is still read through :meth:`_read_packet`, so paramiko's own
    calls (open, stat, close, the answers it dispatches) and escale's
    pipelined reads share the one buffer and stay in step.
    """

    def __init__(self, sock: paramiko.Channel | OpenSshPipe) -> None:
        self._inbox = bytearray()
        super().__init__(cast(paramiko.Channel, sock))  # paramiko takes any socket-like object

    def _take(self, count: int) -> bytes:
        """The next ``count`` bytes of the session; EOFError when it ends first."""
        inbox = self._inbox
        while len(inbox) < count:
            more = self.sock.recv(_RECV_ALL)
            if not more:
                raise EOFError()
            if not inbox and len(more) == count:
                return bytes(more)
            inbox += more
        with memoryview(inbox) as view:
            taken = bytes(view[:count])
        del inbox[:count]  # a bytearray drops its head without moving the rest
        return taken

    def _write_all(self, out: bytes) -> None:
        """Send all of ``out`` (one SFTP packet): paramiko's own loop cuts what
        is left by ``out = out[n:]`` after each SSH packet's worth, a copy of
        the rest each time; a view of it is cut instead."""
        channel: Any = self.sock  # its send() slices what it is given: a view does (not in the stubs)
        view = memoryview(out)
        while view:
            sent = channel.send(view)
            if sent <= 0:
                raise EOFError()
            view = view[sent:]

    def _read_packet(self) -> tuple[int, bytes]:
        """The next SFTP packet: its type and its body (paramiko's contract);
        EOFError when the session ends within it, SFTPError for a length of
        16 MiB or more (held in memory otherwise, as paramiko would)."""
        header = self._take(4)
        size = int.from_bytes(header, "big")
        if header[0]:  # over 16 MiB: not an SFTP packet (paramiko's own check)
            raise paramiko.SFTPError("Garbage packet received")
        if size == 0:
            return 0, b""
        kind = self._take(1)[0]
        return kind, self._take(size - 1) if size > 1 else b""


class _Replies:
    """Where paramiko puts the replies to our read requests that arrive while
    it waits for another one (SFTP lets a server answer out of order)."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, msg: paramiko.Message, num: int) -> None:
        self.replies[num] = (kind, msg)


def _ask_open(client: Any, replies: _Replies, path: str, flags: int) -> int:
    """Send an OPEN of ``path`` whose answer goes to ``replies``; its number."""
    return int(client._async_request(replies, paramiko_sftp.CMD_OPEN, path, flags,
                                     paramiko.SFTPAttributes()))


def _reply(client: Any, replies: _Replies, num: int) -> tuple[int, paramiko.Message]:
    """The answer to request ``num`` (sent with ``replies`` as its receiver),
    waiting for it if it has not come yet. An error status raises what
    paramiko raises for it (OSError, with ENOENT or EACCES where the status
    says so; EOFError for SSH_FX_EOF)."""
    got = replies.replies.pop(num, None)
    if got is None:
        kind, msg = client._read_response(num)  # converts its own error status
        return int(kind), msg
    if got[0] == paramiko_sftp.CMD_STATUS:
        client._convert_status(got[1])  # (paramiko has read the request number)
    return got


def _status_reply(client: Any, replies: _Replies, num: int) -> None:
    """Wait for the status answering ``num``; raises on an error status."""
    kind, _msg = _reply(client, replies, num)
    if kind != paramiko_sftp.CMD_STATUS:
        raise paramiko.SSHException(f"sftp server answered a request with packet type {kind}, not a status")


def _handle_reply(client: Any, replies: _Replies, num: int) -> bytes:
    """The handle answering OPEN request ``num``; raises on an error status."""
    kind, msg = _reply(client, replies, num)
    if kind != paramiko_sftp.CMD_HANDLE:
        raise paramiko.SSHException(f"sftp server answered an open with packet type {kind}, not a handle")
    return bytes(msg.get_binary())


def _open_handle(client: Any, path: str, flags: int) -> bytes:
    """OPEN ``path`` with SFTP ``flags`` and wait for its handle (one round
    trip; no file object around it: the caller closes the handle)."""
    replies = _Replies()
    return _handle_reply(client, replies, _ask_open(client, replies, path, flags))


def _close_unwaited(client: Any, handle: bytes) -> None:
    """Send the CLOSE of ``handle`` without waiting for its answer, which
    paramiko drops when it reads it while waiting for a later request (the
    server carries out requests in order: the handle is closed before the
    next one). For handles whose close has nothing to tell (a read handle, or
    one abandoned after an error). A lost connection is left for the next
    request to report."""
    try:
        client._async_request(type(None), paramiko_sftp.CMD_CLOSE, handle)
    except (OSError, EOFError, paramiko.SSHException):
        pass


def _read_whole(client: Any, handle: bytes, sink: BinaryIO, request: int, limit: int | None) -> None:
    """Copy the file open as ``handle`` into ``sink``, whole.

    The size (FSTAT) and the first read go out together, so an object that
    fits in one read request costs one round trip after the open (the rest:
    :func:`_read_rest`). With ``limit`` (a :class:`BoundedSink`), a stated
    size over it is refused before any content is kept, and the first read
    asks at most ``limit + 1`` bytes."""
    replies = _Replies()
    first = request if limit is None else max(1, min(request, limit + 1))
    stat_num = client._async_request(replies, paramiko_sftp.CMD_FSTAT, handle)
    read_num = client._async_request(replies, paramiko_sftp.CMD_READ, handle, paramiko_sftp.int64(0), first)
    try:
        size = _size_reply(client, replies, stat_num)
    finally:
        data = _read_reply(client, replies, read_num)  # in every case: the session stays in step
    check_size(sink, size)
    _read_rest(client, handle, sink, data, size, first, request)


def _size_reply(client: Any, replies: _Replies, num: int) -> int | None:
    """The size in the attributes answering FSTAT request ``num`` (None when
    the server states none); raises on an error status."""
    kind, msg = _reply(client, replies, num)
    if kind != paramiko_sftp.CMD_ATTRS:
        raise paramiko.SSHException(f"sftp server answered a stat with packet type {kind}, not attributes")
    attributes: Any = paramiko.SFTPAttributes
    size = attributes._from_msg(msg).st_size
    return int(size) if size is not None else None


def _read_rest(client: Any, handle: bytes, sink: BinaryIO, data: bytes, size: int | None, first: int,
               request: int) -> None:
    """Given ``data``, the answer to a first read of ``first`` bytes at offset
    0 of the file open as ``handle`` whose FSTAT stated ``size``, write the
    whole file into ``sink``. The file is whole when that read came back
    short at exactly the stated size; otherwise the rest is read with reads
    in flight, then on until the server answers end of file (what the file
    gained since the FSTAT, or all of it when the server stated no size)."""
    if not data:
        if size:
            raise paramiko.SSHException("sftp server ended a file before the size it stated")
        return  # empty (end of file at offset 0)
    sink.write(data)
    done = len(data)
    if size is not None and done == size and done < first:
        return  # a short read ending at the stated size: the end
    if size is not None and size > done:
        done = _pipelined_read(client, handle, done, size, sink, request)
    replies = _Replies()
    while chunk := _read_reply(client, replies, client._async_request(
            replies, paramiko_sftp.CMD_READ, handle, paramiko_sftp.int64(done), request)):
        sink.write(chunk)
        done += len(chunk)


def _write_and_close(client: Any, handle: bytes, source: BinaryIO, request: int) -> None:
    """Write the rest of ``source`` to the file open as ``handle`` (writes of
    ``request`` bytes, up to :data:`READ_AHEAD_BYTES` unacknowledged), then
    close it; returns once the server has acknowledged every write and the
    close, and raises the first error status otherwise. The handle is
    closed in every case."""
    replies = _Replies()
    pending: collections.deque[int] = collections.deque()
    window = max(2, READ_AHEAD_BYTES // request)
    closing: int | None = None
    offset = 0
    try:
        while chunk := source.read(_CHUNK):
            whole = memoryview(chunk)  # cut without copies: paramiko copies each piece into its packet
            for start in range(0, len(chunk), request):
                piece = whole[start:start + request] if len(chunk) > request else chunk
                pending.append(client._async_request(replies, paramiko_sftp.CMD_WRITE, handle,
                                                     paramiko_sftp.int64(offset), piece))
                offset += len(piece)
                if len(pending) > window:
                    _status_reply(client, replies, pending.popleft())
        closing = client._async_request(replies, paramiko_sftp.CMD_CLOSE, handle)
        for num in pending:
            _status_reply(client, replies, num)
        _status_reply(client, replies, closing)
    finally:
        if closing is None:
            _close_unwaited(client, handle)


def _write_and_close_all(client: Any, handles: Sequence[bytes], contents: Sequence[bytes], request: int) -> None:
    """:func:`_write_and_close` for several small files at once: every write
    and close is sent, then every answer is waited for (one round trip for
    the group); raises the first error status once all answers are in, and
    every handle is closed in every case."""
    replies = _Replies()
    nums: list[int] = []
    sent = 0
    try:
        for handle, data in zip(handles, contents, strict=True):
            for start in range(0, len(data), request):
                nums.append(client._async_request(replies, paramiko_sftp.CMD_WRITE, handle,
                                                  paramiko_sftp.int64(start), data[start:start + request]))
            nums.append(client._async_request(replies, paramiko_sftp.CMD_CLOSE, handle))
            sent += 1
    finally:
        for handle in handles[sent:]:
            _close_unwaited(client, handle)
    failure: OSError | None = None
    for num in nums:
        try:
            _status_reply(client, replies, num)
        except OSError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def _pipelined_read(client: Any, handle: bytes, start: int, size: int, sink: BinaryIO,
                    request: int = _READ_REQUEST) -> int:
    """Copy bytes ``start`` to ``size`` of the file open as ``handle`` into
    ``sink`` with read requests of ``request`` bytes, up to
    :data:`READ_AHEAD_BYTES` in flight; returns the offset reached (less
    than ``size`` when the file ended sooner).

    Replaces paramiko's ``prefetch``, whose helper thread races with the
    reader: seen here to stall a 40 MB read for seconds, or until the channel
    timeout; it also starts a thread per file. Everything runs on the
    calling thread, the replies are written in file order, a short reply is
    completed by asking for the rest."""
    replies = _Replies()
    in_flight: collections.deque[tuple[int, int, int]] = collections.deque()  # (request, offset, length)

    def ask(offset: int, length: int) -> int:
        return int(client._async_request(replies, paramiko_sftp.CMD_READ, handle,
                                          paramiko_sftp.int64(offset), length))

    ahead = max(2, READ_AHEAD_BYTES // request)
    asked = done = start
    while done < size:
        while asked < size and len(in_flight) < ahead:
            length = min(request, size - asked)
            in_flight.append((ask(asked, length), asked, length))
            asked += length
        num, offset, length = in_flight.popleft()
        data = _read_reply(client, replies, num)
        while data and len(data) < length:  # a short reply: ask for the rest, in order
            sink.write(data)
            done, offset, length = done + len(data), offset + len(data), length - len(data)
            data = _read_reply(client, replies, ask(offset, length))
        if not data:
            break  # the file is shorter than its stat said
        sink.write(data)
        done += len(data)
    # collect what is still in flight (after an early end), so that the
    # session stays in step
    for num, _, _ in in_flight:
        _read_reply(client, replies, num)
    return done


def _read_reply(client: Any, replies: _Replies, num: int) -> bytes:
    """The data of read request ``num``; empty at the end of the file.
    Raises what paramiko raises for an error status."""
    try:
        kind, msg = _reply(client, replies, num)
    except EOFError:  # SSH_FX_EOF (a lost connection is an SSHException)
        return b""
    if kind != paramiko_sftp.CMD_DATA:
        raise paramiko.SSHException(f"sftp server answered a read with packet type {kind}, not data")
    return bytes(msg.get_binary())


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def _load_key(path: str) -> paramiko.PKey:
    """The private key at ``path``; RelayPermissionDenied when unusable."""
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException as exc:
        raise RelayPermissionDenied(
            f"ssh key {path} is protected by a passphrase; escale needs a key without one"
        ) from exc
    except FileNotFoundError as exc:
        raise RelayPermissionDenied(f"ssh key {path} does not exist") from exc
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise RelayPermissionDenied(f"ssh key {path} cannot be read: {type(exc).__name__}") from exc


def from_spec(spec: RelaySpec) -> SftpRelay:
    """The sftp backend for ``spec`` (host, port, directory, credentials)."""
    return SftpRelay(spec)


__all__ = ["SftpRelay", "check_host_key", "from_spec", "known_hosts_name"]
