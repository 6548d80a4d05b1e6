"""The ``webdav``, ``http`` and ``https`` backends (WebDAV over requests).

Contract: a :class:`~escale.relay.base.Relay` over one WebDAV server, below an
optional path prefix of the address; TLS verified by default. Puts never show a
partial object, but a ``MOVE`` onto an existing object may leave it missing for
an instant (``atomic_put`` and ``rename_overwrite`` false). Exclusive create and
rename are atomic where the server offers locking (``DAV: 2``); the capabilities
say which. ``href`` values outside the folder asked for are skipped with a
warning; a name the server would shorten in ``MOVE`` is refused (UnsafeName).
404 is RelayNotFound, 412 RelayExists, 401/403 RelayPermissionDenied, 507
RelayQuotaExceeded; 5xx, connection failures and timeouts are
RelayConnectionError (transient); an unverifiable certificate is
CertificateError. Every request has the timeout ``spec.timeout``.

How each part is done (authentication, requests, the LOCK guard, quotas) and
what each tested server guarantees: ``doc/protocol.rst``, "Servers and their
guarantees", "WebDAV, HTTP and HTTPS".
"""
from __future__ import annotations

import email.utils
import io
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

import requests
from defusedxml import DefusedXmlException, ElementTree  # type: ignore[import-untyped]
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase, HTTPBasicAuth, HTTPDigestAuth

from escale.backoff import Backoff
from escale.errors import (
    CertificateError,
    RelayConnectionError,
    RelayError,
    RelayExists,
    RelayNotFound,
    RelayPermissionDenied,
    RelayProtocolError,
    RelayQuotaExceeded,
    RelayTimeout,
    UnsafeName,
)
from escale.relay.base import TEMP_PREFIX, Capabilities, Entry, Relay, Usage, check_size, join, parent_of
from escale.relay.listing import unique_entries
from escale.relay.spec import RelaySpec
from escale.relay.tls import client_context

log = logging.getLogger(__name__)

_CHUNK = 256 * 1024
#: bytes read from an upload's body at a time (a big object's sealing upload
#: hands blocks of up to 1 MiB on without a copy when asked this much)
_SEND_BLOCK = 1024 * 1024
_DAV = "{DAV:}"
_PROPFIND_ENTRY = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>"
)
_PROPFIND_QUOTA = (
    b'<?xml version="1.0" encoding="utf-8"?><D:propfind xmlns:D="DAV:"><D:prop>'
    b"<D:resourcetype/><D:quota-available-bytes/><D:quota-used-bytes/></D:prop></D:propfind>"
)
_LOCKINFO = (
    b'<?xml version="1.0" encoding="utf-8"?><D:lockinfo xmlns:D="DAV:">'
    b"<D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>"
    b"<D:owner>escale</D:owner></D:lockinfo>"
)
_XML = {"Content-Type": 'application/xml; charset="utf-8"'}
#: headers of an object's GET: the body as stored, no content coding
_RAW_BODY = {"Accept-Encoding": "identity"}
_AWKWARD = "?;"


@dataclass(frozen=True)
class _Props:
    """The properties of one ``<response>`` of a multistatus body."""

    path: str  # decoded URL path, without trailing slash
    is_dir: bool
    size: int
    mtime: float | None
    quota_used: int | None
    quota_available: int | None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text and text.strip() else None
    except ValueError:
        return None


def _http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return email.utils.parsedate_to_datetime(text.strip()).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def parse_multistatus(body: bytes, where: str) -> list[_Props]:
    """The responses of a PROPFIND answer (hostile XML refused by defusedxml)."""
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        raise RelayProtocolError(f"{where}: malformed PROPFIND answer: {exc}") from exc
    out = []
    for response in root.iter(f"{_DAV}response"):
        href = response.findtext(f"{_DAV}href")
        if href is None:
            continue
        try:
            path = unquote(urlsplit(href.strip()).path, errors="strict")
        except (UnicodeDecodeError, ValueError):
            # one name the client cannot address: skipped, the rest stays usable
            log.warning("%s: ignoring a listed name that is not UTF-8 or not a URL: %r", where, href)
            continue
        props: dict[str, Any] = {}
        for propstat in response.iter(f"{_DAV}propstat"):
            status = propstat.findtext(f"{_DAV}status") or ""
            if " 200 " not in f"{status} ":
                continue
            prop = propstat.find(f"{_DAV}prop")
            if prop is None:
                continue
            for child in prop:
                props[child.tag] = child
        resourcetype = props.get(f"{_DAV}resourcetype")
        is_dir = resourcetype is not None and resourcetype.find(f"{_DAV}collection") is not None
        size = props.get(f"{_DAV}getcontentlength")
        modified = props.get(f"{_DAV}getlastmodified")
        used = props.get(f"{_DAV}quota-used-bytes")
        available = props.get(f"{_DAV}quota-available-bytes")
        out.append(
            _Props(
                path=path.rstrip("/") or "/",
                is_dir=is_dir,
                size=0 if is_dir else (_int(size.text) if size is not None else None) or 0,
                mtime=_http_date(modified.text) if modified is not None else None,
                quota_used=_int(used.text) if used is not None else None,
                quota_available=_int(available.text) if available is not None else None,
            )
        )
    return out


def _refused(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a refused TCP connection (requests wraps the
    ConnectionRefusedError in urllib3 errors: their causes, contexts and
    ``reason`` are followed)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        current = todo.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        todo += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
    return False


def translate(exc: BaseException, relay: str, name: str) -> RelayError:
    """Map a requests/OS exception on relay object ``name`` to escale's tree."""
    what = name or "/"
    if isinstance(exc, RelayError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return CertificateError(
                f"{relay}: server certificate not trusted (set 'verify ssl' to a CA file,"
                " or to 'no' at your own risk)",
                name=name,
            )
        return RelayConnectionError(f"{relay}: TLS failure", name=name)
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in str(exc).lower():
        return RelayTimeout(f"{relay}: {what}: no answer in time", name=name)
    if isinstance(exc, requests.exceptions.RequestException | OSError):
        return RelayConnectionError(f"{relay}: {what}: connection failed ({type(exc).__name__})", name=name)
    return RelayError(f"{relay}: {what}: {type(exc).__name__}: {exc}", name=name)


def status_error(status: int, relay: str, name: str, method: str) -> RelayError:
    """The escale error for an HTTP error ``status`` answered to ``method``."""
    what = name or "/"
    text = f"{relay}: {method} {what}: HTTP {status}"
    if status == 404:
        return RelayNotFound(f"no such relay object: {what} on {relay}", name=name)
    if status == 412:
        return RelayExists(f"relay object exists: {what} on {relay}", name=name)
    if status in (401, 403):
        return RelayPermissionDenied(f"{text} (permission denied)", name=name)
    if status == 507:
        return RelayQuotaExceeded(f"{text} (server storage full)", name=name)
    if status >= 500 or status in (408, 429):
        return RelayConnectionError(f"{text} (server failure)", name=name)
    return RelayError(text, name=name)


class _Adapter(HTTPAdapter):
    """An adapter whose connections read an upload's body :data:`_SEND_BLOCK`
    bytes at a time (urllib3's default is 16 KiB: a big object would take
    a read and a send per 16 KiB)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["blocksize"] = _SEND_BLOCK
        super().init_poolmanager(*args, **kwargs)


class _TlsAdapter(_Adapter):
    """An adapter whose connections use our SSLContext (minimum version, client cert)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._context
        super().init_poolmanager(*args, **kwargs)


class WebdavRelay(Relay):
    """A repository folder on a WebDAV server."""

    def __init__(self, spec: RelaySpec) -> None:
        super().__init__()
        self.spec = spec
        self.scheme = spec.protocol
        host = spec.host or "localhost"
        url_scheme = "https" if spec.protocol == "https" else "http"
        prefix = ""
        if "://" in host:
            parts = urlsplit(host)
            url_scheme, host, prefix = parts.scheme or url_scheme, parts.hostname or "localhost", parts.path
        port = f":{spec.port}" if spec.port else ""
        self.tls = url_scheme == "https"
        self._origin = f"{url_scheme}://{host}{port}"
        self._base = "/" + "/".join(p for p in f"{prefix}/{spec.directory}".split("/") if p)
        self._context = client_context(spec) if self.tls else None
        # Passed with every request: a session-wide setting would lose to
        # REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE from the environment.
        self._verify: bool | str = (spec.ca_file or True) if spec.verify_ssl else False
        self._session: requests.Session | None = None
        self._warned = False
        self._warned_basic = False
        self.locking = False
        self._awkward_ok: bool | None = None  # MOVE keeps "?" and ";" (probed on first use)
        self.server_usage = False
        #: Lock timeout asked for guards: a crashed holder blocks others this long.
        self.guard_seconds = int(4 * spec.timeout + 5)
        self.capabilities = self._capabilities()

    def _capabilities(self) -> Capabilities:
        return Capabilities(
            atomic_put=False,
            exclusive_create=self.locking,
            rename_overwrite=False,
            rename_exclusive=self.locking,
            mtime_precision=1.0,
            usage=self.server_usage,
        )

    def describe(self) -> str:
        return self.spec.describe()

    # ----------------------------------------------------------- plumbing

    def _path(self, name: str) -> str:
        return f"{self._base.rstrip('/')}/{name}" if name else self._base

    def _url(self, name: str, *, folder: bool = False) -> str:
        path = self._path(name)
        if folder and not path.endswith("/"):
            path += "/"
        return self._origin + quote(path, safe="/")

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            raise RelayConnectionError(f"{self.describe()}: not connected")
        return self._session

    def _request(
        self, method: str, name: str, *, folder: bool = False, ok: tuple[int, ...] = (),
        stream: bool = False, **kwargs: Any,
    ) -> requests.Response:
        """Send one request; statuses in ``ok`` (and 2xx) are returned, others raised."""
        try:
            response = self.session.request(
                method, self._url(name, folder=folder), timeout=self.spec.timeout, stream=stream,
                allow_redirects=False, verify=self._verify, **kwargs,
            )
        except (requests.exceptions.RequestException, OSError) as exc:
            if _refused(exc):
                origin = urlsplit(self._origin)
                where = f"{origin.hostname}:{origin.port or (443 if self.tls else 80)}"
                raise RelayConnectionError(f"{self.describe()}: connection refused to {where}") from None
            raise translate(exc, self.describe(), name) from exc
        if response.status_code in ok or 200 <= response.status_code < 300:
            return response
        response.close()
        raise status_error(response.status_code, self.describe(), name, method)

    # ----------------------------------------------------------- lifecycle

    def _connect(self) -> None:
        self._disconnect()
        spec = self.spec
        if self.tls and not spec.verify_ssl and not self._warned:
            self._warned = True
            log.warning("%s: server certificate NOT verified (verify ssl = no)", self.describe())
        session = requests.Session()
        session.headers["User-Agent"] = "escale"
        session.verify = self._verify
        session.mount("http://", _Adapter())
        session.mount("https://", _TlsAdapter(self._context) if self._context is not None else _Adapter())
        self._session = session
        try:
            self._negotiate()
            self._open_repository()
        except BaseException:
            self._disconnect()
            raise

    def _negotiate(self) -> None:
        """Find what authentication the server asks for, and use it."""
        response = self._request("PROPFIND", "", folder=True, ok=(401, 404), data=_PROPFIND_QUOTA,
                                 headers={"Depth": "0", **_XML})
        response.close()
        if response.status_code != 401:
            return
        challenge = response.headers.get("WWW-Authenticate", "").lower()
        if self.spec.username is None:
            raise RelayPermissionDenied(f"{self.describe()}: the server asks for a user name and password")
        user, password = self.spec.username, self.spec.password or ""
        auth: AuthBase
        if "digest" in challenge:
            auth = HTTPDigestAuth(user, password)
        elif "basic" in challenge:
            if not self.tls and not self._warned_basic:
                self._warned_basic = True
                log.warning("%s: basic authentication over plain HTTP sends the password in clear",
                            self.describe())
            auth = HTTPBasicAuth(user, password)
        else:
            raise RelayPermissionDenied(
                f"{self.describe()}: unsupported authentication scheme {challenge.split(' ')[0]!r}"
            )
        self.session.auth = auth

    def _open_repository(self) -> None:
        """Create the repository folder; probe locking and quota support."""
        response = self._request("PROPFIND", "", folder=True, ok=(404,), data=_PROPFIND_QUOTA,
                                 headers={"Depth": "0", **_XML})
        if response.status_code == 404:
            # not created here (see Relay.create_root): weakest capabilities until it exists
            response.close()
            return
        props = parse_multistatus(response.content, self.describe())
        if not props or not props[0].is_dir:
            raise RelayError(f"{self.describe()}: the repository path is not a folder")
        self.server_usage = props[0].quota_used is not None and props[0].quota_available is not None
        options = self._request("OPTIONS", "", folder=True)
        dav = options.headers.get("DAV", "")
        self.locking = "2" in [part.strip() for part in dav.split(",")]
        self.capabilities = self._capabilities()
        log.debug("%s: server %r, DAV %r, quota %s", self.describe(), options.headers.get("Server"),
                  dav, self.server_usage)

    def _disconnect(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    # ----------------------------------------------------------- read

    def _propfind(self, name: str, depth: str, *, folder: bool = False) -> list[_Props]:
        response = self._request("PROPFIND", name, folder=folder, data=_PROPFIND_ENTRY,
                                 headers={"Depth": depth, **_XML})
        if response.status_code != 207:
            raise RelayProtocolError(f"{self.describe()}: PROPFIND {name or '/'}: HTTP {response.status_code}")
        return parse_multistatus(response.content, self.describe())

    def _list(self, folder: str) -> list[Entry]:
        base = self._path(folder).rstrip("/")
        entries = []
        found_self = False
        for props in self._propfind(folder, "1", folder=True):
            if props.path == base:
                found_self = True
                if not props.is_dir:
                    raise RelayNotFound(f"not a folder: {folder} on {self.describe()}", name=folder)
                continue
            if not props.path.startswith(base + "/"):
                log.warning("%s: ignoring %r listed outside folder %r", self.describe(), props.path, folder or "/")
                continue
            # a nested or unsafe child is skipped by base.list, which sees it whole
            child = props.path[len(base) + 1:]
            entries.append(Entry(join(folder, child), props.size, props.mtime, props.is_dir))
        if not found_self and not entries:
            raise RelayProtocolError(f"{self.describe()}: empty PROPFIND answer for {folder or '/'}")
        return unique_entries(entries)

    def _stat(self, name: str) -> Entry:
        target = self._path(name).rstrip("/")
        for props in self._propfind(name, "0"):
            if props.path == target:
                return Entry(name, props.size, props.mtime, props.is_dir)
        raise RelayProtocolError(f"{self.describe()}: PROPFIND {name}: no answer for the object")

    def _get(self, name: str, sink: BinaryIO) -> None:
        """GET the object as stored: the request asks for no content coding
        (a server that compresses, such as ``rclone serve webdav``, would
        spend CPU on sealed data that does not compress, and its
        Content-Length would be that of the compressed body). A body sent
        coded anyway is decoded, and its Content-Length is then not taken
        for the object's size. A body shorter than its Content-Length
        raises RelayConnectionError (the sink holds a prefix)."""
        response = self._request("GET", name, stream=True, headers=_RAW_BODY)
        try:
            coding = response.headers.get("Content-Encoding", "").strip().lower()
            length = response.headers.get("Content-Length", "")
            exact = coding in ("", "identity") and length.isascii() and length.isdigit()
            check_size(sink, int(length) if exact else None)
            for chunk in response.iter_content(_CHUNK):
                sink.write(chunk)
        except (requests.exceptions.RequestException, OSError) as exc:
            raise translate(exc, self.describe(), name) from exc
        finally:
            response.close()

    # ----------------------------------------------------------- write

    def _exists(self, name: str) -> bool:
        try:
            self._propfind(name, "0")
        except RelayNotFound:
            return False
        return True

    def _makedirs(self, name: str) -> None:
        """MKCOL ``name`` and its missing parents (an existing folder is fine)."""
        response = self._request("MKCOL", name, folder=True, ok=(405, 409))
        response.close()
        if response.status_code == 409:  # a parent is missing
            if not name:
                raise RelayError(f"{self.describe()}: cannot create the repository folder")
            self._makedirs(parent_of(name))
            self._request("MKCOL", name, folder=True, ok=(405,)).close()

    def _upload(self, target: str, source: BinaryIO, name: str) -> None:
        """PUT ``source`` at ``target`` (a temporary, or ``name`` itself),
        making the folder of ``name`` when the server answers that it is
        missing (409) and ``source`` can be read again; a source that cannot
        seek gets its folder made first."""
        try:
            start = source.tell()
        except (OSError, ValueError):
            start = None
        if start is None:
            self._makedirs(parent_of(name))
        response = self._request("PUT", target, ok=(409,), data=source)
        response.close()
        if response.status_code == 409 and start is not None:
            self._makedirs(parent_of(name))
            source.seek(start)
            self._request("PUT", target, data=source).close()
        elif response.status_code == 409:
            raise status_error(409, self.describe(), name, "PUT")

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """One PUT straight to each name (an existing object is replaced):
        no temporary, no MOVE. A PUT cut short may leave a part under the
        name, which no commit names."""
        for name, data in items:
            self._upload(name, io.BytesIO(data), name)

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        self._check_destination(name)
        temp = join(parent_of(name), TEMP_PREFIX + secrets.token_hex(8))
        self._upload(temp, source, name)
        try:
            if exclusive:
                self._move_exclusive(temp, name)
            else:
                self._move(temp, name, overwrite=True)
        except BaseException:
            self._discard(temp)
            raise

    def _discard(self, temp: str) -> None:
        if self._session is None:
            return
        try:
            self._session.delete(self._url(temp), timeout=self.spec.timeout, verify=self._verify).close()
        except (requests.exceptions.RequestException, OSError):
            pass

    def _check_destination(self, target: str) -> None:
        """Refuse a MOVE target the server would store under another name.

        Some servers (WsgiDAV 4.4) decode the ``Destination`` header before
        splitting off ``?query`` and ``;params``, so that a MOVE to ``a?b``
        lands on ``a``, replacing it. The first time a target holds one of these
        characters, a probe under a temporary name tells whether the server
        keeps them; if not, such names are refused.
        """
        if not any(c in target for c in _AWKWARD):
            return
        if self._awkward_ok is None:
            self._awkward_ok = self._probe_awkward()
        if not self._awkward_ok:
            raise UnsafeName(
                f"{self.describe()}: this server mangles names containing ? or ; in MOVE: {target!r}",
                name=target,
            )

    def _probe_awkward(self) -> bool:
        token = secrets.token_hex(4)
        plain, awkward = f"{TEMP_PREFIX}probe-{token}", f"{TEMP_PREFIX}probe-{token}?x;y"
        self._request("PUT", plain, data=b"").close()
        headers = {"Destination": self._url(awkward), "Overwrite": "F"}
        try:
            try:
                self._request("MOVE", plain, headers=headers).close()
                keeps = self._exists(awkward)
            except RelayError as exc:
                if exc.transient:
                    raise
                keeps = False  # e.g. WsgiDAV: "source and destination are the same"
        finally:
            for leftover in (plain, awkward, f"{TEMP_PREFIX}probe-{token}"):
                self._discard(leftover)
        log.debug("%s: MOVE keeps ? and ; in names: %s", self.describe(), keeps)
        return keeps

    def _move(self, source: str, target: str, *, overwrite: bool) -> None:
        """MOVE ``source`` to ``target``, creating the target's folder if needed."""
        self._check_destination(target)
        headers = {"Destination": self._url(target), "Overwrite": "T" if overwrite else "F"}
        response = self._request("MOVE", source, ok=(403, 409), headers=headers)
        response.close()
        if response.status_code not in (403, 409):
            return
        # 409 (WsgiDAV) or 403 (rclone): source or target folder missing, or refused.
        if not self._exists(source):
            raise RelayNotFound(f"no such relay object: {source} on {self.describe()}", name=source)
        if parent_of(target) and not self._exists(parent_of(target)):
            self._makedirs(parent_of(target))
            self._request("MOVE", source, headers=headers).close()
            return
        raise status_error(response.status_code, self.describe(), source, "MOVE")

    def _move_exclusive(self, source: str, target: str) -> None:
        if not self.locking:
            self._move(source, target, overwrite=False)  # the server checks, then moves
            return
        with self._guard(target):
            if self._exists(target):
                raise RelayExists(f"relay object exists: {target} on {self.describe()}", name=target)
            self._move(source, target, overwrite=False)

    @contextmanager
    def _guard(self, target: str) -> Iterator[None]:
        """Hold an exclusive LOCK on the guard of ``target`` (module docstring)."""
        guard = join(parent_of(target), TEMP_PREFIX + "guard-" + target.rpartition("/")[2])
        headers = {"Timeout": f"Second-{self.guard_seconds}", "Depth": "0", **_XML}
        deadline = time.monotonic() + self.guard_seconds + 2 * self.spec.timeout
        waits = Backoff(0.02, 0.2, jitter=(0.5, 1.5))
        while True:
            response = self._request("LOCK", guard, ok=(409, 423), data=_LOCKINFO, headers=headers)
            response.close()
            if response.status_code == 409:
                self._makedirs(parent_of(target))
                continue
            if response.status_code != 423:
                token = response.headers.get("Lock-Token", "").strip()
                if not token:
                    raise RelayProtocolError(f"{self.describe()}: LOCK {target}: no lock token")
                break
            if time.monotonic() > deadline:
                raise RelayConnectionError(f"{self.describe()}: {target} stays locked by another client",
                                           name=target)
            time.sleep(waits.next())
        try:
            yield
        finally:
            self._release(guard, token)

    def _release(self, guard: str, token: str) -> None:
        if self._session is None:
            return
        bracketed = token if token.startswith("<") else f"<{token}>"
        try:
            self._session.request("UNLOCK", self._url(guard), headers={"Lock-Token": bracketed},
                                  timeout=self.spec.timeout, verify=self._verify).close()
        except (requests.exceptions.RequestException, OSError) as exc:
            log.debug("%s: UNLOCK of a guard failed: %s", self.describe(), type(exc).__name__)

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        if overwrite:
            self._move(source, target, overwrite=True)
        else:
            if not self._exists(source):
                raise RelayNotFound(f"no such relay object: {source} on {self.describe()}", name=source)
            self._move_exclusive(source, target)

    def _delete(self, name: str) -> None:
        if self._stat(name).is_dir:
            raise RelayError(f"{self.describe()}: {name} is a folder, not an object", name=name)
        self._request("DELETE", name).close()

    def _mkdir(self, name: str) -> None:
        self._makedirs(name)

    def _create_root(self) -> None:
        self._makedirs("")
        self._open_repository()

    def _rmdir(self, name: str) -> None:
        if self._list(name):
            raise RelayError(f"{self.describe()}: folder {name} is not empty", name=name)
        self._request("DELETE", name, folder=True).close()

    def _usage(self) -> Usage | None:
        if not self.server_usage:
            return None
        response = self._request("PROPFIND", "", folder=True, data=_PROPFIND_QUOTA,
                                 headers={"Depth": "0", **_XML})
        props = parse_multistatus(response.content, self.describe())
        if not props or props[0].quota_used is None:
            return None
        used, available = props[0].quota_used, props[0].quota_available
        return Usage(used=used, total=None if available is None else used + available)


def from_spec(spec: RelaySpec) -> WebdavRelay:
    """The WebDAV backend for ``spec`` (closed; call ``open()``)."""
    return WebdavRelay(spec)
