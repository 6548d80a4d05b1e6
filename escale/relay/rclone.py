"""The ``rclone`` backend: any rclone remote (S3, Dropbox, Drive, ...) as the relay.

An ``rclone rcd`` process serves the open relays of this process that use
the same rclone binary, configuration and timeout (:class:`_RcdPool`: a
pass's transfer connections share the rcd of its main connection), on a
unix socket in a folder only this user may enter (no rc authentication: the
folder is the access control; see :class:`_Rcd`), or, for an rclone without
unix sockets, bound to 127.0.0.1 on a port the kernel picks, with a random
rc user and password handed over in its environment
(``RCLONE_RC_USER``/``RCLONE_RC_PASS``: never on its command line). It
stops when the last relay using it closes, and dies with escale (a
parent-death signal, armed from one long-lived thread: :class:`_Spawner`).
Every operation is one HTTP request to its remote-control API, on the
relay's own kept-alive connection, so small operations cost no process
start. The remote's own credentials stay in the rclone configuration
file (``spec.rclone_config``, passed as ``RCLONE_CONFIG``).

Where the repository is: ``spec.rclone_remote`` names the remote, optionally
with a base path (``name`` or ``name:base/path``; for the cloud protocol names
such as ``s3`` the remote defaults to the protocol name), and ``spec.directory``
is the folder inside it.

Operations: ``list`` uses ``operations/list``; ``stat`` asks
``operations/stat`` for an object only (``filesOnly``: one lookup; rclone's
plain stat of a name that is no object lists the whole parent folder, tens of
milliseconds in a folder of thousands), then, when there is none, lists the
name itself to tell a folder from nothing (a missing folder answers at once);
``get`` streams the object through the rc server's ``--rc-serve`` file serving;
``get_many`` (a group of small reads, declared as ``group_get``) sends those
GETs pipelined, up to :data:`_PIPELINE` at once on the relay's connection, and
reads the answers in order (one round trip per group, and less of the rcd's
CPU than one GET after the other; see :meth:`RcloneRelay._get_many`);
``delete_many`` (``group_delete``) is one ``job/batch`` of
``operations/deletefile`` calls per group;
``put`` sends a multipart upload (``operations/uploadfile``): streamed in 1 MiB
chunks, or, for a seekable source of at most 256 KiB, from memory as one body
(fewer sends and wake-ups per request). Every call goes over one kept-alive
HTTP connection (:class:`_Http`, on :mod:`http.client`: a third of the
client-side cost of ``requests`` per call), so a call costs one round trip to
the rcd, not a connection or a process. rclone's "corrupted on transfer" (its
hash check after an upload) is transient: a retry decides. On a local disk
(``IsLocal``) that check is skipped (``IgnoreChecksum`` for the upload): the
disk's hash is taken of the very stream rclone hashes, so it cannot differ,
and the two MD5 passes were most of the rcd's work on a big upload. What
escale reads back is authenticated by the envelope either way.

Where an upload is atomic by itself (object stores: rclone's ``BucketBased``
remotes that do not declare ``PartialUploads``; an S3 PUT shows the whole new
object or the old one), ``put`` uploads straight to the final name: one
request, and no copy (S3 has no rename: a move there is a copy plus a delete).
Elsewhere it uploads to a :data:`TEMP_PREFIX` name in the target's folder, then
moves it into place with ``operations/movefile`` (destination check off, so
that the move is the remote's own server-side move or copy, which replaces the
target whole on the remotes that have one; on remotes that allow duplicate
names, such as Google Drive, the old target is deleted first, and atomic put is
not declared). rclone has no "fail if the target exists" primitive (nor does it
send S3's conditional ``If-None-Match`` writes), so the exclusive ``put`` and
``rename`` check the target first, as late as they can (after the upload,
right before the move): they are not race-free, and the capabilities say so.
The check looks up an object only (the ``filesOnly`` stat above).

:meth:`Relay.put_fresh` (small payloads under fresh names) is one multipart
upload per folder straight to the names: no temporaries, look-ups or moves
(except on remotes that allow duplicate names, where it goes through the
commits below).

:meth:`Relay.put_commits` (a group of exclusive puts) costs a few requests
whatever the group's size, through rclone's ``job/batch`` (rclone 1.70 and
later; older ones get one put after the other): one multipart upload per
folder carries every item to its temporary name, one batch looks up every
final name, and one batch moves each temporary whose name is free into
place, in order, and deletes the others. On object stores: the lookups, then
one upload per folder straight to the free names. rclone's local backend
writes an upload to a ``.partial`` name and renames it since 1.63, but only on
its copy path, not documented for the rc upload (and not before 1.63):
escale's own temporary and move stay for every remote that is no object store.

On an object store a folder is only a prefix of object names
(:attr:`RcloneRelay.folders_are_prefixes`): ``mkdir`` and ``rmdir`` do nothing
that lasts, an empty folder does not exist, ``stat`` of a folder answers
whether an object lies below it, and ``list`` of a missing folder is empty
rather than RelayNotFound. The protocol never relies on an empty folder: it
decides from objects (doc/protocol.rst, *Object stores*).

Capabilities are read from the remote with ``operations/fsinfo`` when the relay
opens (before that, :attr:`RcloneRelay.capabilities` declares nothing).

Timeouts: each HTTP request to the rcd has a timeout derived from
``spec.timeout``, and the rcd itself runs with ``--timeout``/``--contimeout`` set
to it for the remote's network calls. A dead rcd is a transient
:class:`RelayConnectionError`; reopening the relay starts a new one.
"""

from __future__ import annotations

import base64
import collections
import ctypes
import dataclasses
import http.client
import json
import logging
import os
import posixpath
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, BinaryIO, cast
from urllib.parse import quote, urlencode, urlsplit

from escale.errors import (
    EscaleError,
    RelayConnectionError,
    RelayError,
    RelayExists,
    RelayNotFound,
    RelayPermissionDenied,
    RelayQuotaExceeded,
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
    join,
    object_refusal,
    parent_of,
)
from escale.relay.spec import RelaySpec

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
#: Objects up to this size are uploaded from memory in one piece (see _upload).
_SMALL_UPLOAD = 256 * 1024
#: rclone's "modification time not supported" precision: 100 years, in ns.
_NO_MODTIME_NS = 100 * 365 * 24 * 3600 * 10**9
#: An rc call may wait on the remote through a few of rclone's own low-level retries.
_RC_READ_FACTOR = 3
#: rc ``_config`` of an upload to a local disk (see RcloneRelay._upload)
_IGNORE_CHECKSUM = '{"IgnoreChecksum": true}'
#: Items of a put_commits group handled per round of requests (bounds a request's size and time).
_GROUP = 256
#: Lookups (and deletions) a ``job/batch`` runs at once.
_LOOKUPS = 8
#: GETs of a group read (:meth:`RcloneRelay.get_many`) sent at once on one
#: connection before their answers are read (HTTP/1.1 pipelining), and the
#: most bytes those requests may take together: far below what the socket's
#: buffers hold, so that sending them never waits for the rcd, which may
#: itself wait for us to read its answers.
_PIPELINE = 32
_PIPELINE_BYTES = 32 * 1024
#: The largest error answer read off a pipelined connection (its status and
#: headers are parsed by http.client, with its own bounds on lines).
_ERROR_BODY = 64 * 1024
#: the rcds' socket folders (in the temporary folder), and the age past which an empty one is left over
_FOLDER_PREFIX = "escale-rcd-"
_STALE_FOLDER = 600.0
#: sun_path's size on Linux, with its terminating NUL
_UNIX_PATH_MAX = 108
_LISTENING = re.compile(r"Serving remote control on (http://[^\s/]+)/")

#: What is declared before the remote has been asked (nothing is promised).
UNKNOWN_CAPABILITIES = Capabilities(
    atomic_put=False,
    exclusive_create=False,
    rename_overwrite=False,
    rename_exclusive=False,
    mtime_precision=None,
    usage=False,
)

_NOT_FOUND = ("not found", "no such file", "does not exist", "doesn't exist", "not a directory")
_NO_PERMISSION = ("permission denied", "access denied", "forbidden", "unauthorized")
_NO_SPACE = ("quota", "no space left", "insufficient storage", "storage full")
_NETWORK = (
    "connection refused",
    "connection reset",
    "broken pipe",
    "i/o timeout",
    "timeout",
    "deadline exceeded",
    "no route to host",
    "network is unreachable",
    "unexpected eof",
    "connection lost",
    "handshake failed",
)

def fs_string(remote: str, directory: str) -> str:
    """The rclone ``remote:path`` of the repository folder ``directory`` in ``remote``.

    ``remote`` is a configured remote's name, optionally with a base path
    (``name:base``), or an on-the-fly remote (``:backend`` or ``:backend:base``).
    """
    if remote.startswith(":"):  # on-the-fly remote, ":backend" or ":backend:base"
        head, _, base = remote[1:].partition(":")
        name = ":" + head
    else:
        name, _, base = remote.partition(":")
    directory = directory.strip()
    if base and directory:
        path = posixpath.join(base, directory)
    else:
        path = base or directory
    return f"{name}:{path}"


def _temporary_beside(name: str) -> str:
    """A fresh temporary name in ``name``'s folder."""
    folder = parent_of(name)
    base = TEMP_PREFIX + secrets.token_hex(8)
    return f"{folder}/{base}" if folder else base


def _read_if_small(source: BinaryIO, limit: int) -> bytes | None:
    """The rest of ``source`` when it is seekable and at most ``limit`` bytes
    long (its position then at the end); None otherwise (nothing read)."""
    try:
        start = source.tell()
        end = source.seek(0, os.SEEK_END)
        source.seek(start)
    except (AttributeError, OSError, ValueError):
        return None
    if end - start > limit:
        return None
    return source.read()


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when we die.

    Without it, an ``escale`` killed with SIGKILL would leave its ``rclone rcd``
    running. ``prctl`` is resolved here, in the parent, so that the hook only
    makes one foreign call between fork and exec (no import, no allocation).
    Elsewhere than Linux: None (no hook).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return hook


def _sweep_stale_folders() -> None:
    """Remove the rcd folders that an escale killed outright left behind.

    A stopped rcd removes its socket; its folder goes with :meth:`_Rcd.discard`,
    which a process killed with SIGKILL never runs. An empty folder of ours
    untouched for :data:`_STALE_FOLDER` seconds is such a leftover (a live
    rcd's folder holds its socket, and rmdir leaves a folder that is not
    empty). Never raises."""
    root = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(_FOLDER_PREFIX)]
    except OSError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(root, name)
        try:
            info = os.lstat(path)
            if info.st_uid == os.getuid() and now - info.st_mtime > _STALE_FOLDER:
                os.rmdir(path)
        except OSError:
            continue


class _NoUnixSocket(Exception):
    """This rclone could not serve its rc on a unix socket (it exited)."""


def _accepts(path: str) -> bool:
    """Whether a unix socket at ``path`` takes a connection now."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


class _NoBatch(RelayError):
    """This rclone has no ``job/batch`` (before 1.70): callers fall back to one call at a time."""


class _Rcd:
    """One ``rclone rcd`` process started by us, and how to reach it.

    It listens on a unix socket in a folder of its own that only this user
    may enter (mode 0700, from :func:`tempfile.mkdtemp`), without rc
    authentication: the folder's mode is the access control (only this user
    and root reach it, who can read the rclone configuration anyway), and
    rclone's basic authentication cost about 0.2 ms of its CPU per call. An
    rclone that cannot listen there (no unix socket support), or a socket
    path too long for the kernel, gets 127.0.0.1 on a port the kernel picks,
    with a random rc user and password handed over in its environment.
    """

    def __init__(self, binary: str, config: str | None, timeout: float) -> None:
        self.binary, self.config, self.timeout = binary, config, timeout
        #: open relays using this process (see _RcdPool)
        self.users = 0
        self.url = ""
        #: the unix socket it serves on ("" when on 127.0.0.1)
        self.socket_path = ""
        #: the rc credentials (None on the unix socket)
        self.auth: tuple[str, str] | None = None
        _sweep_stale_folders()
        self.folder = tempfile.mkdtemp(prefix=_FOLDER_PREFIX)
        path = os.path.join(self.folder, "rc.sock")
        try:
            if len(os.fsencode(path)) < _UNIX_PATH_MAX:
                try:
                    self._start(path)
                    return
                except _NoUnixSocket:
                    log.debug("rclone %s serves no unix socket: rc on 127.0.0.1 with credentials", binary)
            self._start("")
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def _start(self, socket_path: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_RC_")}
        env.update(
            RCLONE_TIMEOUT=f"{self.timeout:g}s",
            RCLONE_CONTIMEOUT=f"{self.timeout:g}s",
            RCLONE_LOW_LEVEL_RETRIES="2",
        )
        if socket_path:
            listen = ["--rc-addr", f"unix://{socket_path}", "--rc-no-auth"]
        else:
            user, password = secrets.token_hex(16), secrets.token_hex(32)
            env.update(RCLONE_RC_USER=user, RCLONE_RC_PASS=password)
            self.auth = (user, password)
            listen = ["--rc-addr", "127.0.0.1:0"]
        if self.config:
            env["RCLONE_CONFIG"] = os.path.expanduser(self.config)
        argv = [self.binary, "rcd", *listen, "--rc-serve", "--log-level", "NOTICE"]
        try:
            self.proc = _spawn(lambda: subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            ))
        except FileNotFoundError as exc:
            raise RelayError(f"rclone binary {self.binary!r} not found (check 'rclone binary')") from exc
        except OSError as exc:
            raise RelayError(f"cannot run rclone binary {self.binary!r}: {exc.strerror or exc}") from exc
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_log, name=f"rclone-rcd-{self.proc.pid}", daemon=True)
        self._reader.start()
        if socket_path:
            # rclone says nothing when it listens on a unix socket: it is
            # ready when the socket takes a connection (or dead when it exits)
            deadline = time.monotonic() + self.timeout
            while not self._ready.is_set() and time.monotonic() < deadline:
                if _accepts(socket_path):
                    self.socket_path, self.url = socket_path, "http://localhost"
                    break
                self._ready.wait(0.005)
            if not self.url and self._ready.is_set():
                # its log closed: the process is ending, and may not have
                # been reaped yet; judge it once it has ended
                try:
                    self.proc.wait(self.timeout)
                except subprocess.TimeoutExpired:
                    pass
            if not self.url and not self.alive():
                self.stop()
                raise _NoUnixSocket(_one_line(self.tail[-1]) if self.tail else "no output")
        else:
            self._ready.wait(self.timeout)
        if not self.url:
            last = _one_line(self.tail[-1]) if self.tail else "no output"
            self.stop()
            raise RelayConnectionError(f"rclone rcd did not start within {self.timeout:g}s ({last})")
        log.debug("rclone rcd pid %d serving on %s", self.proc.pid, self.socket_path or self.url)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_log(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            if not self.url and not self.socket_path:
                match = _LISTENING.search(line)
                if match:
                    self.url = match.group(1)
                    self._ready.set()
                    continue
            log.debug("rclone rcd %d: %s", self.proc.pid, line)
        self._ready.set()  # the process ended: stop waiting for it

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Terminate the process (ours, by pid); never raises."""
        try:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        except OSError:
            pass
        finally:
            if self._reader is not threading.current_thread():
                self._reader.join(2)
            if self.proc.stderr is not None:
                self.proc.stderr.close()

    def discard(self) -> None:
        """:meth:`stop`, and remove its socket's folder; never raises."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)



class _Spawner:
    """One long-lived thread that starts every rcd of this process.

    Linux sends the parent-death signal (:func:`_die_with_parent`) when the
    *thread* that forked the child ends, not the process. An rcd shared by
    several connections (:class:`_RcdPool`) must not die with the worker
    thread that happened to open the first of them, so rcds are forked from
    this thread, which lives as long as the process (a daemon thread: it ends
    only with the process, and the rcds with it).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] | None = None
        self._pid = 0

    def run(self, start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        """``start()`` (a Popen) run on the spawner thread; its result or its exception."""
        with self._lock:
            if self._jobs is None or self._pid != os.getpid():  # none yet, or a forked child
                self._jobs = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(target=self._serve, args=(self._jobs,), name="rclone-spawner", daemon=True).start()
            jobs = self._jobs
        done = threading.Event()
        outcome: list[subprocess.Popen[bytes] | BaseException] = []

        def job() -> None:
            try:
                outcome.append(start())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
                outcome.append(exc)
            done.set()

        jobs.put(job)
        done.wait()
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            jobs.get()()


_spawn = _Spawner().run


class _HttpFailed(Exception):
    """The HTTP exchange with the rcd failed (``timed_out``: no answer in time)."""

    def __init__(self, cause: BaseException, timed_out: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause_name = type(cause).__name__
        self.timed_out = timed_out


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over the rcd's unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Http:
    """One kept-alive HTTP/1.1 connection to an rcd, with its credentials.

    Not shared between threads (one per relay). A failed exchange closes the
    connection (the next call opens a new one) and raises :class:`_HttpFailed`.
    A response must be read to its end (or :meth:`drop` called) before the
    next request.
    """

    def __init__(self, rcd: _Rcd, connect_timeout: float) -> None:
        self._conn: http.client.HTTPConnection
        if rcd.socket_path:
            self._conn = _UnixConnection(rcd.socket_path, connect_timeout)
        else:
            where = urlsplit(rcd.url)
            self._conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port,
                                                    timeout=connect_timeout)
        #: the Host header http.client sends on this connection (repeated on pipelined requests)
        self._host = "localhost" if rcd.socket_path else f"{self._conn.host}:{self._conn.port}"
        self._headers = {}
        if rcd.auth is not None:
            token = base64.b64encode(f"{rcd.auth[0]}:{rcd.auth[1]}".encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._connect_timeout = connect_timeout

    def _ready(self, read_timeout: float) -> socket.socket:
        """The connection's socket, connected if it was not (within the
        connect timeout), with ``read_timeout`` for what follows; OSError."""
        conn = self._conn
        if conn.sock is None:
            conn.timeout = self._connect_timeout
            conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        return conn.sock

    def send(self, method: str, path: str, body: bytes | Iterator[bytes] | None, headers: dict[str, str],
             read_timeout: float) -> http.client.HTTPResponse:
        """Send one request and read the status and headers of its answer."""
        conn = self._conn
        try:
            self._ready(read_timeout)
            chunked = body is not None and not isinstance(body, bytes)
            conn.request(method, path, body=body, headers={**self._headers, **headers}, encode_chunked=chunked)
            return conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _HttpFailed(exc, isinstance(exc, TimeoutError)) from exc

    def read(self, response: http.client.HTTPResponse, size: int = -1) -> bytes:
        """Read from ``response`` (all of it by default)."""
        try:
            return response.read() if size < 0 else response.read(size)
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise _HttpFailed(exc, isinstance(exc, TimeoutError)) from exc

    def drop(self) -> None:
        """Forget the connection (a response left unread)."""
        self._conn.close()

    def send_gets(self, paths: Sequence[str], read_timeout: float) -> BinaryIO:
        """Send a GET of each of ``paths`` in one write (HTTP/1.1 pipelining:
        the rcd answers them one after the other, in order, on this
        connection); a reader of the answers, to be read with
        :meth:`read_answer` (every one, or the connection dropped) and then
        closed. The connection must be idle (no answer left unread)."""
        try:
            sock = self._ready(read_timeout)
            extra = "".join(f"{key}: {value}\r\n" for key, value in self._headers.items())
            head = f" HTTP/1.1\r\nHost: {self._host}\r\nAccept-Encoding: identity\r\n{extra}\r\n"
            sock.sendall("".join(f"GET {path}{head}" for path in paths).encode("ascii"))
            return sock.makefile("rb")
        except OSError as exc:
            self._conn.close()
            raise _HttpFailed(exc, isinstance(exc, TimeoutError)) from exc

    def read_answer(self, reader: BinaryIO, limit: int) -> _Answer:
        """The next answer from ``reader`` (see :meth:`send_gets`), its body
        read when it is at most ``limit`` bytes long (an error's: at most
        :data:`_ERROR_BODY`). A malformed answer, a closed connection or a
        timeout close the connection and raise :class:`_HttpFailed`."""
        try:
            return _read_answer(reader, limit)
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise _HttpFailed(exc, isinstance(exc, TimeoutError)) from exc

    def close(self) -> None:
        self._conn.close()


@dataclasses.dataclass(frozen=True)
class _Answer:
    """One HTTP answer read off a pipelined connection: ``body`` is None when
    it was longer than the reader accepted (left unread); ``reusable``: the
    connection can carry the next answer (it was read whole, and the rcd
    keeps the connection open)."""

    status: int
    reason: str
    body: bytes | None
    reusable: bool


class _AnswerStream:
    """The connection's one buffered reader, lent to each pipelined answer's
    :class:`http.client.HTTPResponse` in turn (which parses the status,
    headers and body, Content-Length or chunked, reading no further than its
    own answer): closing an answer leaves it open for the next one."""

    def __init__(self, reader: BinaryIO) -> None:
        self.reader = reader

    def makefile(self, mode: str) -> _AnswerStream:
        return self

    def readline(self, size: int = -1) -> bytes:
        return self.reader.readline(size)

    def read(self, size: int = -1) -> bytes:
        return self.reader.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        return self.reader.readinto(buffer)  # type: ignore[attr-defined, no-any-return]

    def close(self) -> None:
        """Nothing: the reader belongs to the whole pipelined round."""


def _read_answer(reader: BinaryIO, limit: int) -> _Answer:
    """Read one answer off ``reader`` with the standard library's parser; see
    :meth:`_Http.read_answer`. Raises http.client.HTTPException or OSError."""
    response = http.client.HTTPResponse(cast(socket.socket, _AnswerStream(reader)), method="GET")
    response.begin()
    reusable = not response.will_close
    accepted = limit if response.status == 200 else _ERROR_BODY
    if response.length is not None and response.length > accepted:
        return _Answer(response.status, response.reason, None, False)  # refused from its stated size, unread
    body = bytearray()
    while len(body) <= accepted:  # to the body's end (then the response closes itself) or past the limit
        piece = response.read(accepted + 1 - len(body))
        if not piece:
            break
        body += piece
    if len(body) > accepted:
        return _Answer(response.status, response.reason, None, False)
    return _Answer(response.status, response.reason, bytes(body), reusable)


class _RcdPool:
    """The rcds of this process, one per (binary, configuration, timeout),
    shared by every open relay that needs the same one (a pass's transfer
    connections use the rcd of its main connection: no process each).

    Each relay keeps its own HTTP connection (its :class:`_Http`); the
    rcd serves concurrent calls. A relay takes the rcd when it opens and gives
    it back when it closes (or is collected unclosed, or at interpreter exit);
    the last one out stops the process. A dead rcd is never handed out: the
    next relay to open starts a new one, while the relays still holding the
    dead one get transient errors and reopen.
    """

    def __init__(self) -> None:
        # reentrant: a relay collected unclosed gives its rcd back from the
        # garbage collector, which may run while this thread holds the lock
        self._lock = threading.RLock()
        self._running: dict[tuple[str, str | None, float], _Rcd] = {}

    def take(self, binary: str, config: str | None, timeout: float) -> _Rcd:
        key = (binary, config, timeout)
        with self._lock:
            rcd = self._running.get(key)
            if rcd is None or not rcd.alive():
                rcd = _Rcd(binary, config, timeout)  # raises: nothing registered
                self._running[key] = rcd
            rcd.users += 1
            return rcd

    def give_back(self, key: tuple[str, str | None, float], rcd: _Rcd) -> None:
        """One user fewer; the last one stops the process. Never raises."""
        with self._lock:
            rcd.users -= 1
            if rcd.users > 0:
                return
            if self._running.get(key) is rcd:
                del self._running[key]
        rcd.discard()


_POOL = _RcdPool()


class RcloneRelay(Relay):
    """A repository in folder ``directory`` of rclone remote ``remote``."""

    scheme = "rclone"

    def __init__(self, spec: RelaySpec) -> None:
        super().__init__()
        remote = spec.rclone_remote or (spec.protocol if spec.protocol != "rclone" else None)
        if not remote:
            raise RelayError("rclone relay needs an rclone remote name ('rclone remote')")
        self.remote = remote
        self.fs = fs_string(remote, spec.directory)
        self.binary = spec.rclone_binary or "rclone"
        self.config = spec.rclone_config
        self.timeout = spec.timeout
        self.capabilities = UNKNOWN_CAPABILITIES
        self._rcd: _Rcd | None = None
        self._http: _Http | None = None
        self._duplicates = False  # the remote allows two objects of one name
        #: An object store: a folder is a name prefix (no empty folder, no
        #: folder of its own), and every upload is atomic (see _put).
        self.folders_are_prefixes = False
        self._atomic_uploads = False
        #: the remote is a local disk: rclone's check of an upload's hash
        #: compares two hashes of one stream (see _upload), so it is skipped
        self._local_disk = False
        #: rclone has ``job/batch`` (1.70 and later); cleared at its first refusal
        self._has_batch = True
        # Stops the rcd if this relay is dropped unclosed, or at interpreter exit.
        self._reaper: weakref.finalize[Any, Any] | None = None

    def describe(self) -> str:
        if self.fs.startswith(":"):  # an on-the-fly remote may carry options: show its type only
            return f"rclone:{self.fs[1:].split(',')[0].split(':')[0]}"
        return f"rclone:{self.fs}"

    @property
    def rcd_pid(self) -> int | None:
        """Pid of the running rclone rcd (None when closed)."""
        return self._rcd.pid if self._rcd is not None else None

    # ----------------------------------------------------------- rc calls

    def _translate(self, status: int, message: str, name: str) -> RelayError:
        text = message.lower()
        what = name or "/"
        detail = _one_line(message)
        if status == 404 or any(s in text for s in _NOT_FOUND):
            return RelayNotFound(f"no such relay object: {what}", name=name)
        if any(s in text for s in _NO_PERMISSION):
            return RelayPermissionDenied(f"{self.describe()} refused access to {what}: {detail}", name=name)
        if any(s in text for s in _NO_SPACE):
            return RelayQuotaExceeded(f"{self.describe()} is full: {detail}", name=name)
        if "connection refused" in text:
            # rclone (Go) says "dial tcp HOST:PORT: connect: connection refused"
            dialed = re.search(r"dial tcp (\S+?):? connect: connection refused", message)
            where = f" to {dialed.group(1)}" if dialed else ""
            return RelayConnectionError(f"{self.describe()}: connection refused{where}", name=name)
        if "corrupted on transfer" in text:
            # rclone's hash check after an upload failed: the object damaged on
            # the way, or replaced by a concurrent writer at that instant (S3
            # answers with the other upload's hash). Transient: a retry decides.
            return RelayConnectionError(f"{self.describe()}: {what} did not arrive intact: {detail}", name=name)
        if any(s in text for s in _NETWORK):
            return RelayConnectionError(f"{self.describe()}: remote unreachable: {detail}", name=name)
        return RelayError(f"{self.describe()}: rclone failed on {what}: {detail}", name=name)

    def _request_failed(self, exc: _HttpFailed, name: str) -> RelayError:
        rcd = self._rcd
        if exc.timed_out:
            return RelayTimeout(f"{self.describe()}: rclone rcd gave no answer within the timeout", name=name)
        if rcd is None or not rcd.alive():
            return RelayConnectionError(f"{self.describe()}: rclone rcd process died", name=name)
        return RelayConnectionError(f"{self.describe()}: rclone rcd unreachable: {exc.cause_name}", name=name)

    def _base(self) -> _Http:
        if self._rcd is None or self._http is None:
            raise RelayConnectionError(f"{self.describe()}: not connected")
        return self._http

    def _rc(self, command: str, params: dict[str, Any], name: str = "") -> dict[str, Any]:
        """POST one rc command; its JSON answer, or the translated error."""
        return self._post(f"/{command}", json.dumps(params).encode(), "application/json", name)

    def _post(self, path: str, body: bytes | Iterator[bytes], content_type: str, name: str) -> dict[str, Any]:
        """POST ``body`` to the rcd; the JSON answer, or the translated error."""
        http_ = self._base()
        try:
            response = http_.send("POST", path, body, {"Content-Type": content_type},
                                  self.timeout * _RC_READ_FACTOR)
            data = http_.read(response)
        except _HttpFailed as exc:
            raise self._request_failed(exc, name) from exc
        return self._answer(response.status, response.reason, data, name)

    def _answer(self, status: int, reason: str, data: bytes, name: str) -> dict[str, Any]:
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if status == 200:
            return body
        if status == 401:
            raise RelayConnectionError(f"{self.describe()}: rclone rcd refused our credentials")
        message = str(body.get("error") or reason or status)
        raise self._translate(status, message, name)

    # ----------------------------------------------------------- lifecycle

    def _connect(self) -> None:
        self._disconnect()
        self._rcd = _POOL.take(self.binary, self.config, self.timeout)
        self._reaper = weakref.finalize(self, _POOL.give_back, (self.binary, self.config, self.timeout), self._rcd)
        # 127.0.0.1 only, straight to the rcd (no proxy from the environment)
        self._http = _Http(self._rcd, self.timeout)
        try:
            info = self._rc("operations/fsinfo", {"fs": self.fs})
            self.capabilities = _capabilities(info)
            if not self._has_batch:
                self.capabilities = dataclasses.replace(self.capabilities, group_put=False, group_delete=False)
            features = info.get("Features") or {}
            self._duplicates = bool(features.get("DuplicateFiles"))
            self.folders_are_prefixes = bool(features.get("BucketBased"))
            self._atomic_uploads = _uploads_atomic(features)
            self._local_disk = bool(features.get("IsLocal"))
        except RelayError:
            self._disconnect()
            raise
        log.debug("opened %s (rcd pid %d): %s", self.describe(), self._rcd.pid, self.capabilities)

    def _disconnect(self) -> None:
        connection, reaper = self._http, self._reaper
        self._rcd = self._http = self._reaper = None
        if connection is not None:
            connection.close()
        if reaper is not None:
            reaper()  # stops the rcd, once

    # ----------------------------------------------------------- operations

    def _entry(self, name: str, item: dict[str, Any]) -> Entry:
        is_dir = bool(item.get("IsDir"))
        size = 0 if is_dir else max(0, int(item.get("Size") or 0))
        mtime = _parse_time(item.get("ModTime")) if self.capabilities.mtime_precision is not None else None
        return Entry(name=name, size=size, mtime=mtime, is_dir=is_dir)

    def _list(self, folder: str) -> list[Entry]:
        answer = self._rc(
            "operations/list", {"fs": self.fs, "remote": folder, "opt": {"noMimeType": True}}, folder
        )
        entries: dict[str, Entry] = {}
        for item in answer.get("list") or []:
            base = str(item.get("Name") or posixpath.basename(str(item.get("Path", ""))))
            name = f"{folder}/{base}" if folder else base
            if name in entries:
                # One name listed twice: an object in the middle of being replaced
                # (rclone serve s3 shows both) or a remote with duplicate names.
                # A name addresses one object: list it once.
                log.debug("%s listed %r twice in %r", self.describe(), base, folder or "/")
                continue
            entries[name] = self._entry(name, item)
        return list(entries.values())

    def _stat(self, name: str) -> Entry:
        # rclone's stat of a name that is not an object lists the whole parent
        # folder to look for a folder of that name (tens of ms in a folder of
        # thousands): ask for objects only (one lookup), then, only when there
        # is none, whether ``name`` is a folder by listing it (a missing
        # folder answers at once; an existing one costs its own listing).
        item = self._rc("operations/stat", _stat_params(self.fs, name), name).get("item")
        if isinstance(item, dict):
            return self._entry(name, item)
        if self._folder_exists(name):
            return Entry(name=name, size=0, mtime=None, is_dir=True)
        raise RelayNotFound(f"no such relay object: {name}", name=name)

    def _folder_exists(self, name: str) -> bool:
        """Whether folder ``name`` exists: it can be listed (on an object store,
        where a folder is a name prefix: some object's name starts with ``name/``)."""
        try:
            answer = self._rc(
                "operations/list",
                {"fs": self.fs, "remote": name, "opt": {"noMimeType": True, "noModTime": True}},
                name,
            )
        except RelayNotFound:
            return False
        return bool(answer.get("list")) if self.folders_are_prefixes else True

    def _object_exists(self, name: str) -> bool:
        """Whether an object (not a folder) is stored as ``name``: one lookup."""
        item = self._rc("operations/stat", _stat_params(self.fs, name), name).get("item")
        return isinstance(item, dict)

    def _object_path(self, name: str) -> str:
        return f"/[{quote(self.fs, safe='/:')}]/{quote(name, safe='/')}"

    def _get(self, name: str, sink: BinaryIO) -> None:
        http_ = self._base()
        done = False
        try:
            response = http_.send("GET", self._object_path(name), None, {}, self.timeout)
            if response.status != 200:
                self._answer(response.status, response.reason, http_.read(response), name)
            length = response.getheader("Content-Length") or ""
            check_size(sink, int(length) if length.isascii() and length.isdigit() else None)
            while chunk := http_.read(response, _CHUNK):
                sink.write(chunk)
            done = True
        except _HttpFailed as exc:
            raise self._request_failed(exc, name) from exc
        finally:
            if not done:
                http_.drop()  # an answer left unread cannot be followed by a request

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        """Pipelined GETs (:meth:`_Http.send_gets`): up to :data:`_PIPELINE`
        requests sent at once on the relay's connection, then their answers
        read in order, so that a group costs about one round trip to the rcd
        per :data:`_PIPELINE` objects instead of one per object (the rcd's
        own work per object halves too: fewer wake-ups). An object above
        ``limit`` (its Content-Length says so before its body) is refused
        without being read; its body left unread, the connection is dropped
        and the names after it are asked again on a new one."""
        found: list[bytes | EscaleError] = []
        while len(found) < len(names):
            found += self._get_round(names[len(found):], limit)
        return found

    def _get_round(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        """The answers to the first names of ``names`` (at least one; as many
        as one pipelined round sends, fewer when an answer leaves the
        connection unusable), each its content or its own refusal. A
        transient failure raises (the connection dropped)."""
        http_ = self._base()
        paths: list[str] = []
        size = 0
        for name in names[:_PIPELINE]:
            path = self._object_path(name)
            size += len(path) + 200  # the request line and headers
            if paths and size > _PIPELINE_BYTES:
                break
            paths.append(path)
        found: list[bytes | EscaleError] = []
        name = names[0]
        try:
            reader = http_.send_gets(paths, self.timeout)
            try:
                for name in names[:len(paths)]:
                    answer = http_.read_answer(reader, limit)
                    found.append(self._got(answer, name, limit))
                    if not answer.reusable:
                        http_.drop()
                        break
            finally:
                reader.close()
        except _HttpFailed as exc:
            raise self._request_failed(exc, name) from exc
        except BaseException:
            http_.drop()  # answers left unread
            raise
        return found

    def _got(self, answer: _Answer, name: str, limit: int) -> bytes | EscaleError:
        """What one pipelined GET of ``name`` found: its content, or its own
        refusal (raised when it is not about that object alone)."""
        if answer.status == 200:
            if answer.body is None:
                return BoundedSink(name, limit).too_large()
            return answer.body
        try:
            self._answer(answer.status, answer.reason, answer.body or b"", name)
        except RelayError as exc:
            if object_refusal(exc):
                return exc
            raise
        # a success other than 200 (no content to read): not what rclone serves for an object
        return RelayError(f"{self.describe()}: rclone answered {answer.status} to a read of {name}", name=name)

    def _upload(self, folder: str, filename: str, source: BinaryIO, name: str) -> None:
        """Stream ``source`` as ``folder/filename`` with a multipart upload
        (errors name relay object ``name``). The file name travels percent-encoded
        (RFC 7578/2231 ``filename*``), so that any valid relay name survives."""
        boundary = "escale-" + secrets.token_hex(16)
        head = _part_head(boundary, filename)
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                yield chunk
            yield tail

        small = _read_if_small(source, _SMALL_UPLOAD)
        # A small object goes as one bytes body: http.client then sends headers
        # and body in one send, where a streamed (chunked) body costs several
        # sends and wake-ups per request.
        data: bytes | Iterator[bytes] = head + small + tail if small is not None else body()
        self._post_upload(folder, boundary, data, name)

    def _upload_many(self, folder: str, files: Sequence[tuple[str, bytes]], name: str) -> None:
        """Upload several small objects into ``folder`` in one multipart
        request (one part per ``(filename, data)``; rclone stores each part as
        its own object, one after the other). Errors name relay object ``name``;
        when it raises, any of the objects may have been stored."""
        boundary = "escale-" + secrets.token_hex(16)
        pieces: list[bytes] = []
        for filename, data in files:
            pieces += [_part_head(boundary, filename), data, b"\r\n"]
        pieces[-1] = f"\r\n--{boundary}--\r\n".encode()
        self._post_upload(folder, boundary, b"".join(pieces), name)

    def _post_upload(self, folder: str, boundary: str, data: bytes | Iterator[bytes], name: str) -> None:
        params = {"fs": self.fs, "remote": folder}
        if self._local_disk:
            # rclone checks an upload by comparing the hash it took of the
            # stream with the hash the remote reports. A local disk reports
            # the hash it took of that same stream while writing it: the check
            # cannot fail, and costs two MD5 passes (about 60 % of the rcd's
            # work on a big object). Remotes that hash what they stored keep it.
            params["_config"] = _IGNORE_CHECKSUM
        self._post(f"/operations/uploadfile?{urlencode(params)}", data,
                   f"multipart/form-data; boundary={boundary}", name)

    def _move_params(self, source: str, target: str) -> dict[str, Any]:
        """``operations/movefile`` parameters: ``source`` onto ``target``, replacing it."""
        if self._duplicates:
            # Where one folder may hold two objects of one name (Google Drive),
            # the target must be looked up and removed first: not atomic.
            config = {"IgnoreTimes": True}
        else:
            # No comparison with an existing target: a same-size, same-second
            # target must still be replaced, and by one move, not delete+move.
            config = {"NoCheckDest": True}
        return {"srcFs": self.fs, "srcRemote": source, "dstFs": self.fs, "dstRemote": target, "_config": config}

    def _move(self, source: str, target: str) -> None:
        """Server-side move of ``source`` onto ``target`` (replacing it)."""
        self._rc("operations/movefile", self._move_params(source, target), source)

    def _delete_quietly(self, name: str) -> None:
        try:
            self._rc("operations/deletefile", {"fs": self.fs, "remote": name}, name)
        except RelayError:
            log.debug("could not remove temporary %s on %s", name, self.describe())

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        folder, _, base = name.rpartition("/")
        if self._atomic_uploads:
            # An object store's PUT replaces the object whole, or not at all:
            # no temporary name, no server-side copy (S3 has no rename).
            if exclusive and self._object_exists(name):
                raise RelayExists(f"relay object exists: {name}", name=name)
            self._upload(folder, base, source, name)
            return
        temp = _temporary_beside(name)
        try:
            self._upload(folder, posixpath.basename(temp), source, name)
            # The one check that matters comes last, right before the move: a
            # check before the upload would only cost one more request.
            if exclusive and self._object_exists(name):
                raise RelayExists(f"relay object exists: {name}", name=name)
            self._move(temp, name)
        except BaseException:
            if self._rcd is not None and self._rcd.alive():
                self._delete_quietly(temp)
            raise

    def _batch(self, inputs: list[dict[str, Any]], name: str, concurrency: int) -> list[dict[str, Any]]:
        """Run rc calls (each input names its command in ``_path``) in one
        ``job/batch`` request, at most ``concurrency`` at a time (1: in order,
        each after the previous one ended); their answers, in order. A failed
        call's answer is an rc error (``error`` and ``status`` keys, see
        :func:`_failed`): the batch goes on after it. Raises the translated
        error when the batch itself fails, and RelayError when an answer is
        not what rclone documents."""
        try:
            answer = self._rc("job/batch", {"inputs": inputs, "concurrency": concurrency}, name)
        except RelayNotFound as exc:  # a batch answers 404 only when rclone has no job/batch
            self._has_batch = False
            self.capabilities = dataclasses.replace(self.capabilities, group_put=False, group_delete=False)
            raise _NoBatch(f"{self.describe()}: rclone has no job/batch") from exc
        results = answer.get("results")
        if not isinstance(results, list) or len(results) != len(inputs):
            raise RelayError(f"{self.describe()}: rclone answered a batch of {len(inputs)} calls "
                             "with something else", name=name)
        return [r if isinstance(r, dict) else {"error": "no answer", "status": 500} for r in results]

    def _put_commits(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """The group in a few requests for any number of items (per slice of
        :data:`_GROUP` items): one upload per folder of every item to a
        temporary name, one batch of lookups of the final names, then one batch
        that moves each temporary whose name is free into place, in order, and
        deletes the others. On an object store (atomic uploads): the lookups,
        then one upload per folder, straight to the free names. An item whose
        name came earlier in the group is answered False (as the second of two
        puts would be). The lookups come after the uploads and right before the
        moves, as in :meth:`_put`: not race-free, as the capabilities say.
        Without ``job/batch`` (rclone before 1.70), one put after the other."""
        if not items or not self._has_batch:
            return super()._put_commits(items)
        created: list[bool] = []
        for start in range(0, len(items), _GROUP):
            created += self._put_group(items[start:start + _GROUP])
        return created

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Straight to the names, one multipart upload per folder (per slice
        of :data:`_GROUP` items): no temporary, no lookup, no move. A name
        given twice in the call is written once, with its last item. Where a
        folder may hold two objects of one name (Google Drive), an upload
        onto a taken name would add a second object: the default (commits,
        then a replacing put of the names found taken) is kept there."""
        if self._duplicates:
            super()._put_fresh(items)
            return
        last = dict(items)
        names = list(last)
        for start in range(0, len(names), _GROUP):
            self._upload_by_folder([(n, posixpath.basename(n), last[n]) for n in names[start:start + _GROUP]])

    def _put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Replacing puts, each name once with its last item (per slice of
        :data:`_GROUP` names): on an object store, one upload per folder
        straight to the names (each object's PUT is atomic); elsewhere one
        upload per folder to temporaries, then one batch that moves each into
        place (a move replaces its target whole): no lookups. Where a folder
        may hold two objects of one name (Google Drive), and without
        ``job/batch``, the default (:meth:`Relay._put_many`)."""
        if self._duplicates or not self._has_batch:
            super()._put_many(items)
            return
        last = dict(items)
        names = list(last)
        for start in range(0, len(names), _GROUP):
            part = names[start:start + _GROUP]
            if self._atomic_uploads:
                self._upload_by_folder([(n, posixpath.basename(n), last[n]) for n in part])
                continue
            try:
                self._replace_through_temporaries(part, last)
            except _NoBatch:
                log.debug("%s: rclone has no job/batch; one put after the other", self.describe())
                super()._put_many([(n, last[n]) for n in names[start:]])
                return

    def _replace_through_temporaries(self, names: list[str], data: dict[str, bytes]) -> None:
        """Upload each name's data to a temporary beside it, then move every
        temporary onto its name in one batch; the first move refused is
        raised once the batch ran through. Temporaries left by a failure are
        deleted (best effort) before the error goes up."""
        temps = {n: _temporary_beside(n) for n in names}
        left = set(names)  # whose temporary may still exist
        try:
            self._upload_by_folder([(temps[n], posixpath.basename(temps[n]), data[n]) for n in names])
            calls = [{"_path": "operations/movefile", **self._move_params(temps[n], n)} for n in names]
            failure: RelayError | None = None
            for name, result in zip(names, self._batch(calls, names[0], _LOOKUPS), strict=True):
                error = _failed(result)
                if error is None:
                    left.discard(name)
                elif failure is None:
                    failure = self._translate(error[0], error[1], name)
            if failure is not None:
                raise failure
        except BaseException:
            if left and self._rcd is not None and self._rcd.alive():
                self._delete_quietly_many([temps[n] for n in names if n in left])
            raise

    def _put_group(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        first: dict[str, int] = {}
        for index, (name, _) in enumerate(items):
            first.setdefault(name, index)
        names = list(first)  # each name once, in order of first appearance
        try:
            if self._atomic_uploads:
                taken = self._objects_exist(names)
                free = [n for n in names if not taken[n]]
                self._upload_by_folder([(n, posixpath.basename(n), items[first[n]][1]) for n in free])
            else:
                taken = self._commit_through_temporaries(items, names, first)
        except _NoBatch:
            log.debug("%s: rclone has no job/batch; one put after the other", self.describe())
            return super()._put_commits(items)
        return [first[name] == index and not taken[name] for index, (name, _) in enumerate(items)]

    def _commit_through_temporaries(
        self, items: Sequence[tuple[str, bytes]], names: list[str], first: dict[str, int]
    ) -> dict[str, bool]:
        """Upload each name's data to a temporary, look the names up, move the
        temporaries of the free names into place (in order) and delete the
        others; whether each name was taken. Temporaries left by a failure are
        deleted (best effort) before the error goes up."""
        temps = {n: _temporary_beside(n) for n in names}
        left = set(names)  # whose temporary may still exist
        try:
            self._upload_by_folder([(temps[n], posixpath.basename(temps[n]), items[first[n]][1]) for n in names])
            taken = self._objects_exist(names)
            calls = [
                {"_path": "operations/deletefile", "fs": self.fs, "remote": temps[n]} if taken[n]
                else {"_path": "operations/movefile", **self._move_params(temps[n], n)}
                for n in names
            ]
            results = self._batch(calls, names[0], 1)
            failure: RelayError | None = None
            for name, result in zip(names, results, strict=True):
                error = _failed(result)
                if error is None:
                    left.discard(name)
                elif not taken[name] and failure is None:
                    failure = self._translate(error[0], error[1], name)
            if failure is not None:
                raise failure
            return taken
        except BaseException:
            if left and self._rcd is not None and self._rcd.alive():
                self._delete_quietly_many([temps[n] for n in names if n in left])
            raise

    def _upload_by_folder(self, files: list[tuple[str, str, bytes]]) -> None:
        """Upload ``(name, filename, data)`` items: one request per folder."""
        folders: dict[str, list[tuple[str, bytes]]] = {}
        for name, filename, data in files:
            folders.setdefault(parent_of(name), []).append((filename, data))
        for folder, group in folders.items():
            self._upload_many(folder, group, join(folder, group[0][0]))

    def _objects_exist(self, names: list[str]) -> dict[str, bool]:
        """Whether an object is stored under each name: one batch of lookups."""
        calls = [{"_path": "operations/stat", **_stat_params(self.fs, n)} for n in names]
        found = {}
        for name, result in zip(names, self._batch(calls, names[0], _LOOKUPS), strict=True):
            error = _failed(result)
            if error is not None:
                raise self._translate(error[0], error[1], name)
            found[name] = isinstance(result.get("item"), dict)
        return found

    def _delete_quietly_many(self, names: list[str]) -> None:
        calls = [{"_path": "operations/deletefile", "fs": self.fs, "remote": n} for n in names]
        try:
            if self._has_batch:
                self._batch(calls, names[0], _LOOKUPS)
                return
        except _NoBatch:
            pass
        except RelayError:
            log.debug("could not remove %d temporaries on %s", len(names), self.describe())
            return
        for name in names:
            self._delete_quietly(name)

    def _exists(self, name: str) -> bool:
        try:
            self._stat(name)
        except RelayNotFound:
            return False
        return True

    def _delete(self, name: str) -> None:
        self._rc("operations/deletefile", {"fs": self.fs, "remote": name}, name)

    def _delete_many(self, names: Sequence[str]) -> list[EscaleError | None]:
        """One ``job/batch`` of ``operations/deletefile`` calls per slice of
        :data:`_GROUP` names, :data:`_LOOKUPS` at a time; each call's error is
        that name's value (translated as one delete's would be), unless it
        is not about that object alone (a failed remote: raised, after the
        batch ran through). Without ``job/batch``, one delete after the other."""
        if not self._has_batch:
            return super()._delete_many(names)
        outcomes: list[EscaleError | None] = []
        try:
            for start in range(0, len(names), _GROUP):
                part = names[start:start + _GROUP]
                calls = [{"_path": "operations/deletefile", "fs": self.fs, "remote": n} for n in part]
                for name, result in zip(part, self._batch(calls, part[0], _LOOKUPS), strict=True):
                    error = _failed(result)
                    if error is None:
                        outcomes.append(None)
                        continue
                    refusal = self._translate(error[0], error[1], name)
                    if not object_refusal(refusal):
                        raise refusal
                    outcomes.append(refusal)
        except _NoBatch:
            log.debug("%s: rclone has no job/batch; one delete after the other", self.describe())
            return outcomes + super()._delete_many(names[len(outcomes):])
        return outcomes

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        if not overwrite:
            if not self._exists(source):
                raise RelayNotFound(f"no such relay object: {source}", name=source)
            if self._exists(target):
                raise RelayExists(f"relay object exists: {target}", name=target)
        self._move(source, target)

    def _mkdir(self, name: str) -> None:
        self._rc("operations/mkdir", {"fs": self.fs, "remote": name}, name)

    def _rmdir(self, name: str) -> None:
        self._rc("operations/rmdir", {"fs": self.fs, "remote": name}, name)

    def _usage(self) -> Usage | None:
        if not self.capabilities.usage:
            return None
        answer = self._rc("operations/about", {"fs": self.fs})
        total = answer.get("total")
        used = answer.get("used")
        free = answer.get("free")
        if used is None and total is not None and free is not None:
            used = int(total) - int(free)
        if used is None and total is None:
            return None
        return Usage(used=None if used is None else int(used), total=None if total is None else int(total))


def _part_head(boundary: str, filename: str) -> bytes:
    """The head of one multipart part carrying file ``filename`` (sent
    percent-encoded, RFC 7578/2231 ``filename*``: any valid relay name survives)."""
    return (
        f"--{boundary}\r\n"
        f"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''{quote(filename, safe='')}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def _stat_params(fs: str, name: str) -> dict[str, Any]:
    """``operations/stat`` of an object only: rclone then makes one lookup,
    where a plain stat of a missing name lists the parent folder."""
    return {"fs": fs, "remote": name, "opt": {"filesOnly": True, "noMimeType": True}}


def _failed(result: dict[str, Any]) -> tuple[int, str] | None:
    """``(status, message)`` when a ``job/batch`` answer is an rc error, else None."""
    if "error" not in result:
        return None
    status = result.get("status")
    return (status if isinstance(status, int) else 500), str(result.get("error"))


def _uploads_atomic(features: dict[str, Any]) -> bool:
    """Whether every upload to the remote appears whole or not at all by itself.

    That is an object store's PUT (S3, GCS, Azure Blob, B2, Swift: rclone
    calls them bucket-based), unless rclone says a failed upload can leave a
    partial object (``PartialUploads``: local disks, SFTP, FTP, SMB). Elsewhere
    an upload may be seen half-written, so it goes to a temporary name first.
    """
    return bool(features.get("BucketBased")) and not features.get("PartialUploads")


def _capabilities(info: dict[str, Any]) -> Capabilities:
    """What ``operations/fsinfo`` says the remote can do, as escale capabilities."""
    features = info.get("Features") or {}
    precision = info.get("Precision")
    if isinstance(precision, (int, float)) and 0 < precision < _NO_MODTIME_NS:
        mtime_precision: float | None = max(precision / 1e9, 1e-9)
    else:
        mtime_precision = None
    # A server-side move (or copy) puts the whole object in place in one step,
    # unless the remote allows duplicate names: then the old one is deleted first.
    whole = bool(features.get("Move") or features.get("Copy")) and not features.get("DuplicateFiles")
    return Capabilities(
        atomic_put=whole or _uploads_atomic(features),
        exclusive_create=False,
        rename_overwrite=whole,
        rename_exclusive=False,
        mtime_precision=mtime_precision,
        usage=bool(features.get("About")),
        # job/batch (rclone 1.70 and later; withdrawn at its first refusal, see _batch)
        group_put=True,
        # _get_many: pipelined GETs, which any rcd's HTTP server takes
        group_get=True,
        # _delete_many: job/batch, as group_put
        group_delete=True,
    )


def from_spec(spec: RelaySpec) -> RcloneRelay:
    """The rclone backend for ``spec`` (remote, folder, binary, configuration)."""
    return RcloneRelay(spec)
