"""The ``ftp`` and ``ftps`` backends (ftplib, passive mode).

Contract: a :class:`~escale.relay.base.Relay` over one FTP server; ``ftps`` is
explicit FTPS (control and data connections encrypted; certificate and host
name verified unless ``verify_ssl=False``). Puts are atomic (temporary name,
then ``RNFR``/``RNTO``). Exclusive create and rename are atomic only where the
server refuses ``MKD`` on an existing folder (probed at ``open()``); the
capabilities say which. ``5xx`` replies become the matching relay errors
(550 RelayNotFound, 530 RelayPermissionDenied, 552 RelayQuotaExceeded);
``4xx`` replies, socket errors, timeouts and TLS failures during a transfer are
RelayConnectionError (transient); an unverifiable certificate is
CertificateError. Every socket operation has the timeout ``spec.timeout``.

How each part is done (paths, MLSD or LIST, the MKD guard and its staleness)
and what each tested server guarantees: ``doc/protocol.rst``, "Servers and
their guarantees", "FTP and FTPS".
"""
from __future__ import annotations

import calendar
import ftplib
import io
import logging
import posixpath
import re
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, TypeVar

from escale.backoff import Backoff
from escale.errors import (
    CertificateError,
    ObjectTooLarge,
    RelayConnectionError,
    RelayError,
    RelayExists,
    RelayNotFound,
    RelayPermissionDenied,
    RelayProtocolError,
    RelayQuotaExceeded,
    RelayTimeout,
)
from escale.relay.base import TEMP_PREFIX, Capabilities, Entry, Relay, parent_of
from escale.relay.listing import unique_entries
from escale.relay.spec import RelaySpec
from escale.relay.tls import client_context

log = logging.getLogger(__name__)
T = TypeVar("T")

#: bytes asked per receive of a download
_BLOCK = 256 * 1024
#: bytes read from an upload's source at a time: a big object's sealing
#: upload hands blocks of up to 1 MiB on without a copy when asked this much
_SEND_BLOCK = 1024 * 1024
_MISSING_WORDS = ("no such", "not found", "not exist", "doesn't exist", "cannot find", "can't find")
_DENIED_WORDS = ("permission", "denied", "privilege", "not allowed", "access")

def _reply_code(exc: ftplib.Error) -> str:
    return str(exc)[:3]


def _is_missing_reply(exc: ftplib.Error) -> bool:
    text = str(exc).lower()
    if any(w in text for w in _DENIED_WORDS):
        return False
    return _reply_code(exc) in ("550", "450", "501") or any(w in text for w in _MISSING_WORDS)


def translate(exc: BaseException, relay: str, name: str, *, missing_ok: bool = True) -> RelayError:
    """Map a foreign exception raised on relay object ``name`` to escale's tree.

    ``missing_ok``: whether a bare 550 on this command means "missing" (true for
    reads, renames, deletes; false where 550 could mean anything).
    """
    what = name or "/"
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, ftplib.error_perm):
        code, text = _reply_code(exc), str(exc)
        low = text.lower()
        if code in ("530", "532"):
            return RelayPermissionDenied(f"{relay}: login refused: {text}", name=name)
        if code == "552":
            return RelayQuotaExceeded(f"{relay}: {what}: server storage full: {text}", name=name)
        if any(w in low for w in _MISSING_WORDS) or (missing_ok and code == "550" and not any(
            w in low for w in _DENIED_WORDS
        )):
            return RelayNotFound(f"no such relay object: {what} on {relay}", name=name)
        if any(w in low for w in _DENIED_WORDS):
            return RelayPermissionDenied(f"{relay}: {what}: {text}", name=name)
        return RelayError(f"{relay}: {what}: {text}", name=name)
    if isinstance(exc, ftplib.error_temp):
        if _reply_code(exc) == "452":
            return RelayQuotaExceeded(f"{relay}: {what}: server storage full: {exc}", name=name)
        return RelayConnectionError(f"{relay}: {what}: temporary failure: {exc}", name=name)
    if isinstance(exc, ftplib.error_reply):
        return RelayProtocolError(f"{relay}: {what}: unexpected reply: {exc}", name=name)
    if isinstance(exc, ftplib.error_proto):
        return RelayConnectionError(f"{relay}: {what}: garbled reply: {exc}", name=name)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(
            f"{relay}: server certificate not trusted: {exc.verify_message or exc}"
            " (set 'verify ssl' to a CA file, or to 'no' at your own risk)",
            name=name,
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return RelayTimeout(f"{relay}: {what}: no answer in time", name=name)
    if isinstance(exc, ssl.SSLError):
        return RelayConnectionError(f"{relay}: {what}: TLS failure: {exc}", name=name)
    if isinstance(exc, EOFError | ConnectionError):
        return RelayConnectionError(f"{relay}: {what}: connection lost: {exc or 'EOF'}", name=name)
    if isinstance(exc, OSError):
        return RelayConnectionError(f"{relay}: {what}: {exc.strerror or exc}", name=name)
    if isinstance(exc, UnicodeError):
        return RelayProtocolError(f"{relay}: {what}: server sent a name that is not UTF-8", name=name)
    return RelayError(f"{relay}: {what}: {type(exc).__name__}: {exc}", name=name)


_FOREIGN = (ftplib.Error, OSError, EOFError, UnicodeError)


def _parse_mlst_time(value: str) -> float | None:
    """``YYYYMMDDHHMMSS[.sss]`` (UTC) to a POSIX timestamp."""
    match = re.fullmatch(r"(\d{14})(?:\.(\d+))?", value.strip())
    if not match:
        return None
    try:
        stamp = time.strptime(match.group(1), "%Y%m%d%H%M%S")
    except ValueError:
        return None
    fraction = float("0." + match.group(2)) if match.group(2) else 0.0
    return calendar.timegm(stamp) + fraction


def _parse_facts(text: str) -> dict[str, str]:
    facts = {}
    for fact in text.split(";"):
        key, sep, value = fact.partition("=")
        if sep:
            facts[key.strip().lower()] = value
    return facts


_UNIX_LIST = re.compile(
    r"^(?P<type>[-dlbcps])[rwxsStTl\-]{9}\S*\s+\d+\s+\S+\s+\S+\s+(?P<size>\d+)\s+"
    r"\w{3}\s+\d{1,2}\s+(?:\d{1,2}:\d{2}|\d{4})\s(?P<name>.+)$"
)
_DOS_LIST = re.compile(
    r"^\d{2}-\d{2}-\d{2,4}\s+\d{1,2}:\d{2}(?:[AP]M)?\s+(?:(?P<dir><DIR>)|(?P<size>\d+))\s+(?P<name>.+)$",
    re.IGNORECASE,
)


def parse_mlsd_line(line: str) -> tuple[str, dict[str, str]] | None:
    """``(name, facts)`` from one ``MLSD`` line (``fact=value;... name``), or None
    when the line is not one (for example the rest of a name that held a line
    break). Fact names are lower case; the name is returned as is."""
    facts_text, sep, name = line.rstrip("\r\n").partition(" ")
    if not sep or not name or "=" not in facts_text:
        return None
    return name, _parse_facts(facts_text)


def parse_list_line(line: str) -> tuple[str, int, bool] | None:
    """``(name, size, is_dir)`` from one ``LIST`` line, or None for noise."""
    match = _UNIX_LIST.match(line)
    if match:
        kind, name = match.group("type"), match.group("name")
        if kind == "l":
            name = name.split(" -> ", 1)[0]
        return name, int(match.group("size")), kind == "d"
    match = _DOS_LIST.match(line)
    if match:
        is_dir = bool(match.group("dir"))
        return match.group("name"), 0 if is_dir else int(match.group("size")), is_dir
    return None


class FtpRelay(Relay):
    """A repository folder on an FTP or explicit-FTPS server."""

    #: Seconds after which a guard folder seen unchanged is judged stale.
    stale_guard_after: float

    def __init__(self, spec: RelaySpec) -> None:
        super().__init__()
        self.spec = spec
        self.scheme = spec.protocol
        self.tls = spec.protocol == "ftps"
        self._context = client_context(spec) if self.tls else None
        self._ftp: ftplib.FTP | None = None
        self._base = "/"
        self._features: set[str] = set()
        #: absolute folders this connection saw or made (see :meth:`_store`)
        self._folders: set[str] = set()
        self._warned_insecure = False
        self.stale_guard_after = 4 * spec.timeout + 5
        self.exclusive_mkdir = False
        self.capabilities = self._capabilities()

    def _capabilities(self) -> Capabilities:
        # The server that refuses MKD on an existing folder (pyftpdlib) also
        # serves whole versions to a reader racing an overwrite; the one that
        # accepts it (rclone serve ftp) was seen to fail such a read with
        # "551 Error reading file", whether the overwrite is a put or a
        # replacing rename, so it gets neither atomic_put nor rename_overwrite.
        return Capabilities(
            atomic_put=self.exclusive_mkdir,
            exclusive_create=self.exclusive_mkdir,
            rename_overwrite=self.exclusive_mkdir,
            rename_exclusive=self.exclusive_mkdir,
            mtime_precision=1.0,
            usage=False,
        )

    def describe(self) -> str:
        return self.spec.describe()

    # ----------------------------------------------------------- plumbing

    @property
    def ftp(self) -> ftplib.FTP:
        if self._ftp is None:
            raise RelayConnectionError(f"{self.describe()}: not connected")
        return self._ftp

    def _path(self, name: str) -> str:
        return posixpath.join(self._base, name) if name else self._base

    def _call(self, name: str, action: Callable[[], T], *, missing_ok: bool = True) -> T:
        try:
            return action()
        except _FOREIGN as exc:
            raise translate(exc, self.describe(), name, missing_ok=missing_ok) from exc

    # ----------------------------------------------------------- lifecycle

    def _connect(self) -> None:
        self._disconnect()
        spec = self.spec
        if self.tls and not spec.verify_ssl and not self._warned_insecure:
            self._warned_insecure = True
            log.warning("%s: server certificate NOT verified (verify ssl = no)", self.describe())
        ftp: ftplib.FTP
        if self.tls:
            ftp = ftplib.FTP_TLS(context=self._context, timeout=spec.timeout, encoding="utf-8")
        else:
            ftp = ftplib.FTP(timeout=spec.timeout, encoding="utf-8")
        try:
            self._call("", lambda: self._login(ftp), missing_ok=False)
        except BaseException:
            ftp.close()
            raise
        self._ftp = ftp
        self._open_repository()

    def _login(self, ftp: ftplib.FTP) -> None:
        spec = self.spec
        host, port = spec.host or "localhost", spec.port or 21
        try:
            ftp.connect(host, port)
        except ConnectionRefusedError:
            raise RelayConnectionError(f"{self.describe()}: connection refused to {host}:{port}") from None
        log.debug("%s: connected: %s", self.describe(), ftp.getwelcome())
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.auth()
        ftp.login(spec.username or "anonymous", spec.password or "")
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
        ftp.set_pasv(True)
        self._features = self._feat(ftp)
        self._folders = set()
        if "UTF8" in self._features:
            try:
                ftp.sendcmd("OPTS UTF8 ON")
            except ftplib.error_perm:
                pass
        if "MLST" in self._features:
            try:
                ftp.sendcmd("OPTS MLST type;size;modify;")
            except ftplib.error_perm:
                pass
        ftp.voidcmd("TYPE I")
        home = ftp.pwd()
        self._base = posixpath.normpath(posixpath.join(home or "/", spec.directory or "."))

    @staticmethod
    def _feat(ftp: ftplib.FTP) -> set[str]:
        try:
            reply = ftp.sendcmd("FEAT")
        except ftplib.error_perm:
            return set()
        features = set()
        for line in reply.splitlines()[1:]:
            if line.startswith(" ") and line.strip():
                features.add(line.split()[0].upper())
        return features

    def _open_repository(self) -> None:
        """Probe whether MKD is exclusive, on the repository folder if it exists
        (it is not created here: see Relay.create_root; until it exists, the
        weakest capabilities are declared)."""
        try:
            present = self._is_dir(self._base)
        except _FOREIGN as exc:
            raise translate(exc, self.describe(), "", missing_ok=False) from exc
        if not present:
            self.exclusive_mkdir = False
            self.capabilities = self._capabilities()
            return
        try:
            self.ftp.mkd(self._base)
            self.exclusive_mkdir = False
        except ftplib.error_perm:
            self.exclusive_mkdir = True
        except _FOREIGN as exc:
            raise translate(exc, self.describe(), "", missing_ok=False) from exc
        self.capabilities = self._capabilities()
        log.debug("%s: features %s, exclusive MKD %s", self.describe(), sorted(self._features),
                  self.exclusive_mkdir)

    def _disconnect(self) -> None:
        ftp, self._ftp = self._ftp, None
        if ftp is None:
            return
        try:
            ftp.quit()
        except _FOREIGN:
            pass
        finally:
            ftp.close()

    # ----------------------------------------------------------- folders

    def _is_dir(self, path: str) -> bool:
        try:
            self.ftp.cwd(path)
        except ftplib.error_perm:
            return False
        return True

    def _makedirs(self, path: str) -> None:
        """``mkdir -p`` of absolute ``path`` (an existing folder is fine)."""
        if path in ("", "/"):
            return
        try:
            self.ftp.mkd(path)
            return
        except ftplib.error_perm:
            if self._is_dir(path):
                return
        except _FOREIGN as exc:
            raise translate(exc, self.describe(), path, missing_ok=False) from exc
        self._makedirs(posixpath.dirname(path))
        self._call(path, lambda: self._mkd_or_exists(path), missing_ok=False)

    def _mkd_or_exists(self, path: str) -> None:
        try:
            self.ftp.mkd(path)
        except ftplib.error_perm:
            if not self._is_dir(path):
                raise

    # ----------------------------------------------------------- read

    def _list(self, folder: str) -> list[Entry]:
        path = self._path(folder)
        if "MLST" in self._features:
            return unique_entries(self._call(folder, lambda: self._list_mlsd(folder, path)))
        return unique_entries(self._call(folder, lambda: self._list_plain(folder, path)))

    def _list_mlsd(self, folder: str, path: str) -> list[Entry]:
        entries = []
        for line in self._listing_lines(f"MLSD {path}"):
            parsed = parse_mlsd_line(line)
            if parsed is None:
                log.warning("%s: ignoring a listing line of folder %r: %r", self.describe(), folder or "/", line)
                continue
            raw, facts = parsed
            kind = facts.get("type", "file").lower()
            if kind in ("cdir", "pdir") or raw in (".", ".."):
                continue
            entry = self._entry(folder, raw, facts)
            if entry is None:
                log.warning("%s: ignoring %r listed in folder %r: bad facts", self.describe(), raw, folder or "/")
                continue
            entries.append(entry)
        return entries

    def _listing_lines(self, command: str) -> list[str]:
        """The lines of a listing, decoded one by one: a name that is not UTF-8
        becomes lone surrogates (refused by base.list), not a failed listing."""
        chunks: list[bytes] = []
        self._receive(command, chunks.append)
        return [line.decode("utf-8", "surrogateescape") for line in b"".join(chunks).splitlines()]

    def _entry(self, folder: str, raw: str, facts: dict[str, str]) -> Entry | None:
        """The entry of ``raw`` listed in ``folder``; None when its facts are
        not understood (base.list checks the name itself)."""
        is_dir = facts.get("type", "file").lower() == "dir"
        size_text = facts.get("size", "0") or "0"
        if not size_text.isascii() or not size_text.isdigit() or len(size_text) > 19:
            return None
        size = 0 if is_dir else int(size_text)
        mtime = _parse_mlst_time(facts["modify"]) if "modify" in facts else None
        return Entry(name=f"{folder}/{raw}" if folder else raw, size=size, mtime=mtime, is_dir=is_dir)

    def _list_plain(self, folder: str, path: str) -> list[Entry]:
        if not self._is_dir(path):
            raise _missing_reply()
        entries = []
        for line in self._listing_lines(f"LIST {path}"):
            parsed = parse_list_line(line)
            if parsed is None:
                continue
            raw, size, is_dir = parsed
            if raw in (".", ".."):
                continue
            entries.append(
                Entry(name=f"{folder}/{raw}" if folder else raw, size=0 if is_dir else size, mtime=None,
                      is_dir=is_dir)
            )
        return entries

    def _stat(self, name: str) -> Entry:
        path = self._path(name)
        if "MLST" in self._features:
            return self._call(name, lambda: self._stat_mlst(name, path))
        return self._call(name, lambda: self._stat_plain(name, path))

    def _stat_mlst(self, name: str, path: str) -> Entry:
        reply = self.ftp.sendcmd(f"MLST {path}")
        for line in reply.splitlines()[1:]:
            if line.startswith(" "):
                facts_text = line[1:].partition(" ")[0]
                entry = self._entry(parent_of(name), name.rpartition("/")[2], _parse_facts(facts_text))
                if entry is None:
                    raise RelayProtocolError(f"{self.describe()}: MLST {name}: bad facts in reply", name=name)
                return entry
        raise RelayProtocolError(f"{self.describe()}: MLST {name}: no facts in reply", name=name)

    def _size(self, path: str) -> int | None:
        """SIZE in binary mode (LIST leaves ASCII mode, where SIZE may be refused)."""
        self.ftp.voidcmd("TYPE I")
        return self.ftp.size(path)

    def _stat_plain(self, name: str, path: str) -> Entry:
        try:
            size = self._size(path)
        except ftplib.error_perm:
            if self._is_dir(path):
                return Entry(name=name, size=0, mtime=None, is_dir=True)
            raise
        mtime = None
        if "MDTM" in self._features:
            reply = self.ftp.sendcmd(f"MDTM {path}")
            mtime = _parse_mlst_time(reply[4:])
        return Entry(name=name, size=size or 0, mtime=mtime, is_dir=False)

    def _on_existing(self, name: str, action: Callable[[], T], path: str | None = None) -> T:
        """Run ``action`` on the existing object ``name`` (at ``path`` if given).

        When the server refuses it, whether the object exists decides between
        RelayNotFound and the server's own reason: reply codes and texts for
        "missing" differ between servers (550, 551, 450, ...).
        """
        try:
            return action()
        except (ftplib.error_perm, ftplib.error_temp) as exc:
            where = path or self._path(name)
            if not self._call(name, lambda: self._exists(where), missing_ok=False):
                raise RelayNotFound(f"no such relay object: {name or '/'} on {self.describe()}",
                                    name=name) from exc
            raise translate(exc, self.describe(), name, missing_ok=False) from exc
        except _FOREIGN as exc:
            raise translate(exc, self.describe(), name, missing_ok=False) from exc

    def _receive(self, command: str, write: Callable[[bytes], object]) -> None:
        """Run the download ``command`` (RETR, MLSD, LIST), handing its data
        to ``write`` in blocks of up to :data:`_BLOCK` bytes, then read its
        final reply.

        Unlike ``ftplib``'s ``retrbinary``, no ``TYPE I`` goes before each
        transfer (a round trip per object): the connection is put in binary
        mode at login and nothing here ever leaves it (listings are read as
        bytes too; :meth:`_size` sets it again for servers that tie SIZE to
        it). A ``write`` that raises leaves the final reply unread (see
        :meth:`_settle_aborted_transfer`)."""
        ftp = self.ftp
        with ftp.transfercmd(command) as conn:
            while data := conn.recv(_BLOCK):
                write(data)
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()  # the server waits for the TLS close before its reply
        ftp.voidresp()

    def _send(self, command: str, source: BinaryIO) -> None:
        """Run the upload ``command`` (STOR) with the rest of ``source``, read
        :data:`_SEND_BLOCK` bytes at a time, then read the final reply (the
        server's verdict on the stored object). No ``TYPE I`` first, as in
        :meth:`_receive`."""
        ftp = self.ftp
        with ftp.transfercmd(command) as conn:
            while block := source.read(_SEND_BLOCK):
                conn.sendall(block)
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()
        ftp.voidresp()

    def _get(self, name: str, sink: BinaryIO) -> None:
        try:
            self._on_existing(name, lambda: self._receive(f"RETR {self._path(name)}", sink.write))
        except ObjectTooLarge:
            self._settle_aborted_transfer()
            raise

    def _settle_aborted_transfer(self) -> None:
        """After a download stopped early (a bounded read), read the transfer's
        final reply so that the control connection stays in step; if it does
        not come, drop the connection (the next operation reconnects)."""
        try:
            self.ftp.voidresp()
        except (ftplib.error_temp, ftplib.error_perm, ftplib.error_reply):
            pass  # 426/451: the server saw the data connection closed
        except (ftplib.Error, OSError, EOFError):
            self._disconnect()

    # ----------------------------------------------------------- write

    def _store(self, path: str, source: BinaryIO) -> None:
        """STOR ``path``, its folder created first if needed.

        The first time a connection stores into a folder, it checks that the
        folder exists (``CWD``) and creates it if not, before any byte is
        sent: a server may accept the data of an upload into a missing
        folder without reading it and refuse only once the data connection
        is closed (``rclone serve ftp``), so a big object would stall until
        the timeout. Later stores into that folder go straight on. When the
        folder vanished meanwhile (another client removed it) and the server
        refuses the STOR, the folder is created again and the store redone
        from the same source position (a source that cannot seek: the
        refusal is raised, and the next put checks the folder again)."""
        parent = posixpath.dirname(path)
        if parent not in self._folders:
            if not self._is_dir(parent):
                self._makedirs(parent)
            self._folders.add(parent)
        start: int | None
        try:
            start = source.seek(source.tell())
        except (OSError, ValueError):
            start = None
        try:
            self._send(f"STOR {path}", source)
        except (ftplib.error_perm, ftplib.error_temp):
            self._folders.discard(parent)
            if start is None or self._is_dir(parent):
                raise
            self._makedirs(parent)
            source.seek(start)
            self._send(f"STOR {path}", source)
            self._folders.add(parent)
        except BaseException:
            self._folders.discard(parent)
            raise

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        path = self._path(name)
        temp = posixpath.join(posixpath.dirname(path), TEMP_PREFIX + secrets.token_hex(8))
        try:
            self._call(name, lambda: self._store(temp, source), missing_ok=False)
            if exclusive:
                self._move_exclusive(name, temp, name)
            else:
                self._call(name, lambda: self._move(temp, path), missing_ok=False)
        except BaseException:
            self._discard(temp)
            raise

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """One STOR straight to each name (an existing object is replaced):
        no temporary, no RNFR/RNTO. A store cut short leaves a part under
        the name, which no commit names."""
        for name, data in items:
            def store(path: str = self._path(name), data: bytes = data) -> None:
                self._store(path, io.BytesIO(data))

            self._call(name, store, missing_ok=False)

    def _discard(self, temp: str) -> None:
        """Best-effort removal of a temporary object after a failure."""
        if self._ftp is None:
            return
        try:
            self._ftp.delete(temp)
        except _FOREIGN:
            pass

    def _move(self, src: str, dst: str) -> None:
        """RNFR/RNTO, creating the target's folder when the server needs it."""
        try:
            self.ftp.rename(src, dst)
        except (ftplib.error_perm, ftplib.error_temp):
            parent = posixpath.dirname(dst)
            if self._is_dir(parent):
                raise
            self._makedirs(parent)
            self.ftp.rename(src, dst)

    def _exists(self, path: str) -> bool:
        try:
            if "MLST" in self._features:
                self.ftp.sendcmd(f"MLST {path}")
                return True
            try:
                self._size(path)
                return True
            except ftplib.error_perm:
                return self._is_dir(path)
        except ftplib.error_perm as exc:
            if _is_missing_reply(exc):
                return False
            raise

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        src = self._path(source)
        if overwrite:
            self._on_existing(source, lambda: self._move(src, self._path(target)))
        else:
            self._move_exclusive(source, src, target)

    def _move_exclusive(self, label: str, src: str, target: str) -> None:
        """Move absolute ``src`` to ``target`` unless ``target`` exists."""
        dst = self._path(target)
        if not self.exclusive_mkdir:
            # No atomic primitive on this server: check, then move (racy).
            if self._call(target, lambda: self._exists(dst), missing_ok=False):
                raise RelayExists(f"relay object exists: {target} on {self.describe()}", name=target)
            self._on_existing(label, lambda: self._move(src, dst), src)
            return
        with self._guard(target):
            if self._call(target, lambda: self._exists(dst), missing_ok=False):
                raise RelayExists(f"relay object exists: {target} on {self.describe()}", name=target)
            self._on_existing(label, lambda: self._move(src, dst), src)

    @contextmanager
    def _guard(self, target: str) -> Iterator[None]:
        """Hold the MKD guard folder of ``target`` (see the module docstring)."""
        dst = self._path(target)
        parent = posixpath.dirname(dst)
        guard = posixpath.join(parent, TEMP_PREFIX + "guard-" + posixpath.basename(dst))
        seen: tuple[str, float] | None = None  # (guard identity, first seen, monotonic)
        waits = Backoff(0.02, 0.5, jitter=(0.5, 1.5))
        while True:
            try:
                self.ftp.mkd(guard)
                break
            except ftplib.error_perm:
                pass
            except _FOREIGN as exc:
                raise translate(exc, self.describe(), target, missing_ok=False) from exc
            identity = self._call(target, lambda: self._guard_identity(guard, parent), missing_ok=False)
            if identity is None:
                continue  # released meanwhile, or parent folder missing (created now)
            now = time.monotonic()
            if seen is None or seen[0] != identity:
                seen = (identity, now)
            elif now - seen[1] > self.stale_guard_after:
                log.warning("%s: removing stale guard of %s", self.describe(), target)
                try:
                    self.ftp.rmd(guard)
                except ftplib.error_perm:
                    pass
                except _FOREIGN as exc:
                    raise translate(exc, self.describe(), target, missing_ok=False) from exc
                seen = None
                continue
            time.sleep(waits.next())
        try:
            yield
        finally:
            if self._ftp is not None:
                try:
                    self._ftp.rmd(guard)
                except _FOREIGN as exc:
                    log.warning("%s: could not remove guard of %s: %s", self.describe(), target, exc)

    def _guard_identity(self, guard: str, parent: str) -> str | None:
        """A string that changes when the guard folder is replaced; None if gone."""
        try:
            if "MLST" in self._features:
                reply = self.ftp.sendcmd(f"MLST {guard}")
                facts = reply.splitlines()[1] if len(reply.splitlines()) > 1 else reply
                parsed = _parse_facts(facts.strip().partition(" ")[0])
                return f"{parsed.get('modify', '')}:{parsed.get('unique', '')}"
            return "guard" if self._is_dir(guard) else None
        except ftplib.error_perm:
            if not self._is_dir(parent):
                self._makedirs(parent)
            return None

    def _delete(self, name: str) -> None:
        self._on_existing(name, lambda: self.ftp.delete(self._path(name)))

    def _mkdir(self, name: str) -> None:
        self._makedirs(self._path(name))

    def _create_root(self) -> None:
        self._makedirs(self._base)
        self._open_repository()

    def _rmdir(self, name: str) -> None:
        self._folders.discard(self._path(name))
        self._on_existing(name, lambda: self.ftp.rmd(self._path(name)))


def _missing_reply() -> ftplib.error_perm:
    return ftplib.error_perm("550 No such folder")


def from_spec(spec: RelaySpec) -> FtpRelay:
    """The FTP/FTPS backend for ``spec`` (closed; call ``open()``)."""
    return FtpRelay(spec)
