"""The relay protocol's metadata objects and their exact JSON forms.

Each object is a small JSON document (UTF-8, sorted keys) which is then sealed by
the repository's envelope (encrypted and authenticated when encryption is on,
bound to its relay object name). Decoding is strict: a missing or ill-typed
field raises :class:`ProtocolError` naming the relay object, so that a hand-made
or truncated object never reaches the planner. ``doc/protocol.rst`` describes
every field.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Literal, TypeVar, cast

from escale.errors import ProtocolError
from escale.protocol.layout import DATA, MAX_VERSION, parse_data

FORMAT = 1

T = TypeVar("T")


def _field(doc: dict[str, Any], key: str, kind: type[T] | tuple[type, ...], name: str,
           optional: bool = False) -> Any:
    if key not in doc:
        if optional:
            return None
        raise ProtocolError(f"relay object {name}: missing field {key!r}", name=name)
    value = doc[key]
    if value is None and optional:
        return None
    # bool is an int subclass; refuse it where an int is expected
    if isinstance(value, bool) and kind is int:
        raise ProtocolError(f"relay object {name}: field {key!r} has the wrong type", name=name)
    if not isinstance(value, kind):
        raise ProtocolError(f"relay object {name}: field {key!r} has the wrong type", name=name)
    # numbers go to SQLite and the OS (utime): anything beyond 64 bits is forged
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ProtocolError(f"relay object {name}: field {key!r} is out of range", name=name)
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate field")
    return doc


def _load(data: bytes, name: str, kind: str, fields: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON document of relay object ``name``, refused unless it is exactly
    what :func:`_dump` writes: UTF-8, one object, sorted keys, compact, each key
    once, no key outside ``format``, ``type`` and ``fields`` (when given).
    Whatever is wrong raises ProtocolError naming the object, never anything
    else (so that a forged object costs one warning, not a pass)."""
    if len(data) > MAX_OBJECT_BYTES:
        raise ProtocolError(f"relay object {name}: larger than {MAX_OBJECT_BYTES} bytes", name=name)
    try:
        # no duplicate-key hook: a key given twice (at any depth) is refused below, as
        # not canonical (the document keeps one of them, so re-encoding it gives other bytes)
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"relay object {name}: not a valid {kind} ({type(exc).__name__})", name=name) from exc
    if not isinstance(doc, dict):
        raise ProtocolError(f"relay object {name}: not a valid {kind}", name=name)
    if doc.get("format") != FORMAT or doc.get("type") != kind or isinstance(doc.get("format"), bool):
        shown = repr(doc.get("format"))[:40]
        raise ProtocolError(f"relay object {name}: unsupported {kind} format {shown}", name=name)
    known = _known(fields if isinstance(fields, tuple) else tuple(fields))
    if len(known) > 2 and not doc.keys() <= known:
        unknown = sorted(k for k in doc if k not in known)
        raise ProtocolError(f"relay object {name}: unknown field {unknown[0][:40]!r} in a {kind}", name=name)
    try:
        canonical = _canonical(doc) == data
    except (UnicodeEncodeError, ValueError, RecursionError):
        canonical = False
    if not canonical:
        # the same document spelled differently is not the object a client wrote
        raise ProtocolError(f"relay object {name}: not in the canonical form of a {kind}", name=name)
    return doc


@functools.lru_cache(maxsize=64)
def _known(fields: tuple[str, ...]) -> frozenset[str]:
    """The keys a document with ``fields`` may hold: those and ``format``, ``type``."""
    return frozenset(fields) | {"format", "type"}


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _dump(kind: str, fields: dict[str, Any]) -> bytes:
    doc = {"format": FORMAT, "type": kind, **fields}
    return _canonical(doc)


_NAMES: dict[type, tuple[str, ...]] = {}


def _names(kind: type) -> tuple[str, ...]:
    """The field names of dataclass ``kind`` (worked out once per class)."""
    names = _NAMES.get(kind)
    if names is None:
        names = _NAMES[kind] = tuple(f.name for f in dataclass_fields(kind))
    return names


def _flat_fields(record: Any) -> dict[str, Any]:
    """The fields of dataclass instance ``record`` whose values are plain
    (numbers, strings, None, tuples of strings), as a dict: what
    ``dataclasses.asdict`` gives for such a record, without its recursive
    deep copy (a cost paid per placeholder on every push)."""
    return {name: getattr(record, name) for name in _names(type(record))}


#: Bound of every metadata object (placeholder, acknowledgement, registration,
#: lease, header) as stored on the relay: they are read whole, so a bigger one
#: is refused unread (``Relay.get_bytes(limit=...)``). A placeholder listing a
#: few thousand receivers stays far below it.
MAX_OBJECT_BYTES = 1024 * 1024
#: Bounds of a synchronised path (relative, ``/``-separated, UTF-8): bytes of
#: one component (NAME_MAX of common filesystems), components, bytes in all
#: (PATH_MAX on Linux). A placeholder beyond them is refused when read.
MAX_NAME_BYTES = 255
MAX_PATH_DEPTH = 256
MAX_PATH_BYTES = 4096

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CLIENT_ID = re.compile(r"[0-9a-f]{32}")
_HEX = re.compile(r"[0-9a-f]+")
#: digests of variable length: no fixed-length hex to check
_VARIABLE_DIGESTS = frozenset({"shake_128", "shake_256"})


@functools.cache
def checksum_algorithms() -> dict[str, int]:
    """Checksum algorithms a placeholder may name, with their digest size in
    bytes: this machine's hashlib algorithms of fixed length (as the
    ``checksum`` setting accepts them), lower case."""
    sizes: dict[str, int] = {}
    for algorithm in sorted({a.lower() for a in hashlib.algorithms_available} - _VARIABLE_DIGESTS):
        try:
            sizes[algorithm] = hashlib.new(algorithm).digest_size
        except (ValueError, TypeError):  # listed but unusable (FIPS mode, broken provider)
            continue
    return sizes


def checksum_problem(checksum: str) -> str | None:
    """Why ``checksum`` (``"<algorithm>:<hex>"``) is unusable here; None if fine."""
    algorithm, sep, digest = checksum.partition(":")
    size = checksum_algorithms().get(algorithm)
    if not sep or size is None:
        return f"checksum algorithm {algorithm[:40]!r} is not available here"
    if len(digest) != 2 * size or not _HEX.fullmatch(digest):
        return f"checksum is not a {algorithm} digest"
    return None


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a synchronised path; None if it can.

    A path is relative and ``/``-separated; no component is empty, ``.`` or
    ``..`` or holds a control character (NUL included); it is valid UTF-8, each
    component at most :data:`MAX_NAME_BYTES` bytes, at most
    :data:`MAX_PATH_DEPTH` components and :data:`MAX_PATH_BYTES` bytes in all.
    """
    if not path:
        return "unsafe path: empty"
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        return "unsafe path: not UTF-8"
    if size > MAX_PATH_BYTES:
        return f"unsafe path: longer than {MAX_PATH_BYTES} bytes"
    parts = path.split("/")
    if len(parts) > MAX_PATH_DEPTH:
        return f"unsafe path: deeper than {MAX_PATH_DEPTH} folders"
    if any(part in ("", ".", "..") for part in parts):
        return f"unsafe path {path[:200]!r}"
    if _CONTROL.search(path):
        return f"unsafe path {path[:200]!r}: control character"
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        return f"unsafe path: a name longer than {MAX_NAME_BYTES} bytes"
    return None


def _deliberate(doc: dict[str, Any], name: str) -> bool:
    """The optional ``deliberate`` field of ``doc``: absent (False) or ``true``
    (``false`` is not how a client writes it, so it is refused)."""
    if "deliberate" not in doc:
        return False
    if doc["deliberate"] is not True:
        raise ProtocolError(f"relay object {name}: field 'deliberate' is present but not true", name=name)
    return True


def _client_id(value: str, what: str, name: str) -> str:
    if not _CLIENT_ID.fullmatch(value):
        raise ProtocolError(f"relay object {name}: {what} is not a client id", name=name)
    return value


@dataclass(frozen=True, slots=True)
class Placeholder:
    """One version of one synchronised path.

    ``kind`` is ``file`` (content in ``payload`` while not reclaimed) or
    ``tombstone`` (the path was deleted). ``version`` increases by one per commit
    of the path; ``generation`` is the lease generation under which it was
    committed. ``checksum`` is ``"<algorithm>:<hex>"`` of the plaintext, or None
    when the pusher runs with ``checksum = no``.

    ``deliberate`` marks a tombstone pushed by a pass that was allowed to make
    deletions the mass-deletion guard would have held (``escalectl
    allow-deletions``): receivers apply it without holding it in their own
    guard. Only a tombstone carries it, and only as ``true``: the field is
    absent otherwise, so every other placeholder reads as before.
    """

    path: str
    key: str
    version: int
    generation: int
    kind: Literal["file", "tombstone"]
    pusher: str
    pusher_label: str
    size: int
    mtime_ns: int
    checksum: str | None
    payload: str | None
    receivers: tuple[str, ...]
    puller_count: int | None = None
    deliberate: bool = False

    @property
    def deleted(self) -> bool:
        return self.kind == "tombstone"

    def encode(self) -> bytes:
        fields = _flat_fields(self)
        fields["receivers"] = list(self.receivers)
        if not self.deliberate:
            del fields["deliberate"]  # absent rather than false (see the class docstring)
        return _dump("placeholder", fields)

    @classmethod
    def decode(cls, data: bytes, name: str) -> Placeholder:
        """The placeholder in ``data`` (relay object ``name``), checked whole:
        format, fields, path (:func:`path_problem`), checksum
        (:func:`checksum_problem`), client ids, numbers, payload name. Raises
        ProtocolError naming the object, and nothing else, for any other input."""
        doc = _load(data, name, "placeholder", _names(cls))
        kind = _field(doc, "kind", str, name)
        if kind not in ("file", "tombstone"):
            raise ProtocolError(f"relay object {name}: unknown kind {kind!r}", name=name)
        receivers = _field(doc, "receivers", list, name)
        if not all(isinstance(r, str) for r in receivers):
            raise ProtocolError(f"relay object {name}: bad receivers", name=name)
        result = cls(
            path=_field(doc, "path", str, name),
            key=_field(doc, "key", str, name),
            version=_field(doc, "version", int, name),
            generation=_field(doc, "generation", int, name),
            kind=kind,
            pusher=_field(doc, "pusher", str, name),
            pusher_label=_field(doc, "pusher_label", str, name),
            size=_field(doc, "size", int, name),
            mtime_ns=_field(doc, "mtime_ns", int, name),
            checksum=_field(doc, "checksum", str, name, optional=True),
            payload=_field(doc, "payload", str, name, optional=True),
            receivers=tuple(receivers),
            puller_count=_field(doc, "puller_count", int, name, optional=True),
            deliberate=_deliberate(doc, name),
        )
        result.check(name)
        return result

    def check(self, name: str) -> None:
        """Raise ProtocolError naming relay object ``name`` unless every field
        is acceptable (what :meth:`decode` checks beyond the JSON form)."""
        result = self
        if not 1 <= result.version <= MAX_VERSION or result.size < 0 or result.generation < 0:
            raise ProtocolError(f"relay object {name}: bad version, generation or size", name=name)
        if result.puller_count is not None and result.puller_count < 0:
            raise ProtocolError(f"relay object {name}: bad puller count", name=name)
        problem = path_problem(result.path)
        if problem is not None:
            raise ProtocolError(f"relay object {name}: {problem}", name=name)
        if result.checksum is not None:
            problem = checksum_problem(result.checksum)
            if problem is not None:
                raise ProtocolError(f"relay object {name}: {problem}", name=name)
        if not _HEX.fullmatch(result.key) or len(result.key) != 32:
            raise ProtocolError(f"relay object {name}: key is not a path key", name=name)
        _client_id(result.pusher, "pusher", name)
        for receiver in result.receivers:
            _client_id(receiver, "receiver", name)
        if result.deliberate and result.kind != "tombstone":
            raise ProtocolError(f"relay object {name}: only a tombstone can be deliberate", name=name)
        if result.kind == "file" and result.payload is None:
            raise ProtocolError(f"relay object {name}: file without payload name", name=name)
        if result.payload is not None:
            # the payload is this version's own object, never another path's
            # payload nor any other relay object (which reclaim would delete)
            ref = parse_data(result.payload)
            if (ref is None or not result.payload.startswith(f"{DATA}/") or ref.key != result.key
                    or ref.version != result.version or result.kind != "file"):
                raise ProtocolError(f"relay object {name}: payload name {result.payload[:200]!r} is not "
                                    "this version's", name=name)


@dataclass(frozen=True, slots=True)
class Ack:
    """Client ``client`` is done with version ``version`` of path key ``key``
    (it has the content, or deliberately declined it)."""

    client: str
    key: str
    version: int

    def encode(self) -> bytes:
        return _dump("ack", _flat_fields(self))

    @classmethod
    def decode(cls, data: bytes, name: str) -> Ack:
        doc = _load(data, name, "ack", _names(cls))
        ack = cls(
            client=_client_id(_field(doc, "client", str, name), "client", name),
            key=_field(doc, "key", str, name),
            version=_field(doc, "version", int, name),
        )
        if not _CLIENT_ID.fullmatch(ack.key) or not 1 <= ack.version <= MAX_VERSION:
            raise ProtocolError(f"relay object {name}: bad key or version", name=name)
        return ack


@dataclass(frozen=True)
class ClientRecord:
    """A client registered on the relay: whether it receives files, its label.

    ``seen`` is a sign of life: the client's own clock (milliseconds since the
    epoch) when it last refreshed its registration, which it does at most
    about once a day of its own activity. Observers never compare it with
    their clock: they only watch it change, and judge a receiver stale by how
    long, on their own clock, they have seen the same value. None in records
    written before the field existed (they stay valid).

    ``forgotten`` marks a registration removed by ``escalectl clients
    forget``: the client is no longer awaited by reclaim, even where older
    placeholders list it as a receiver. A forgotten client that runs again
    registers again (and then misses what was reclaimed meanwhile).
    """

    client: str
    label: str
    receives: bool
    mode: str
    seen: int | None = None
    forgotten: bool = False

    def encode(self) -> bytes:
        fields = asdict(self)
        # absent rather than null/false: a record without them reads as before
        if self.seen is None:
            del fields["seen"]
        if not self.forgotten:
            del fields["forgotten"]
        return _dump("client", fields)

    @classmethod
    def decode(cls, data: bytes, name: str) -> ClientRecord:
        doc = _load(data, name, "client", _names(cls))
        forgotten = _field(doc, "forgotten", bool, name, optional=True)
        return cls(
            client=_field(doc, "client", str, name),
            label=_field(doc, "label", str, name),
            receives=_field(doc, "receives", bool, name),
            mode=_field(doc, "mode", str, name),
            seen=_field(doc, "seen", int, name, optional=True),
            forgotten=bool(forgotten),
        )


@dataclass(frozen=True)
class LeaseRecord:
    """The lease of generation ``generation``.

    ``token`` is random per acquisition; ``beat`` increases at each renewal, so
    that observers judge staleness by how long they have seen the same
    ``(token, beat)`` on their own clock. ``released`` marks a lease given back.
    ``stamp`` (released records only, optional): the state of the repository
    the holder left behind, in the layout's words (:data:`MAX_STAMP` printable
    ASCII characters at most); the next holder that read the very same state
    before taking the lease need not read it again (doc/protocol.rst, "The
    hand-over stamp"). Absent from the encoded form when None.
    """

    generation: int
    holder: str
    label: str
    host: str
    pid: int
    operation: str
    token: str
    beat: int
    released: bool = False
    stamp: str | None = None

    def encode(self) -> bytes:
        fields = asdict(self)
        if self.stamp is None:
            del fields["stamp"]
        return _dump("lease", fields)

    @classmethod
    def decode(cls, data: bytes, name: str) -> LeaseRecord:
        doc = _load(data, name, "lease", _names(cls))
        return cls(
            generation=_field(doc, "generation", int, name),
            holder=_field(doc, "holder", str, name),
            label=_field(doc, "label", str, name),
            host=_field(doc, "host", str, name),
            pid=_field(doc, "pid", int, name),
            operation=_field(doc, "operation", str, name),
            token=_field(doc, "token", str, name),
            beat=_field(doc, "beat", int, name),
            released=_field(doc, "released", bool, name),
            stamp=_stamp(doc, name),
        )


#: Bound of a lease record's ``stamp``.
MAX_STAMP = 200


def _stamp(doc: dict[str, Any], name: str) -> str | None:
    """The optional ``stamp`` of a lease record: printable ASCII, bounded."""
    stamp = _field(doc, "stamp", str, name, optional=True)
    if stamp is not None and (len(stamp) > MAX_STAMP or not stamp.isascii() or not stamp.isprintable()):
        raise ProtocolError(f"relay object {name}: bad stamp in a lease", name=name)
    return cast(str | None, stamp)
