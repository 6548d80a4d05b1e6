"""The relay protocol's metadata objects and their exact JSON forms.

Each object is a small JSON document (UTF-8, sorted keys) which is then sealed by
the repository's envelope (encrypted and authenticated when encryption is on,
bound to its relay object name). Decoding is strict: a missing or ill-typed
field raises :class:`ProtocolError` naming the relay object, so that a hand-made
or truncated object never reaches the planner. ``doc/protocol.rst`` describes
every field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

from escale.errors import ProtocolError
from escale.protocol.layout import DATA, parse_data

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


def _load(data: bytes, name: str, kind: str) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"relay object {name}: not a valid {kind} ({exc})", name=name) from exc
    if not isinstance(doc, dict):
        raise ProtocolError(f"relay object {name}: not a valid {kind}", name=name)
    if doc.get("format") != FORMAT or doc.get("type") != kind:
        raise ProtocolError(
            f"relay object {name}: unsupported {kind} format {doc.get('format')!r}", name=name
        )
    return doc


def _dump(kind: str, fields: dict[str, Any]) -> bytes:
    doc = {"format": FORMAT, "type": kind, **fields}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Placeholder:
    """One version of one synchronised path.

    ``kind`` is ``file`` (content in ``payload`` while not reclaimed) or
    ``tombstone`` (the path was deleted). ``version`` increases by one per commit
    of the path; ``generation`` is the lease generation under which it was
    committed. ``checksum`` is ``"<algorithm>:<hex>"`` of the plaintext, or None
    when the pusher runs with ``checksum = no``.
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

    @property
    def deleted(self) -> bool:
        return self.kind == "tombstone"

    def encode(self) -> bytes:
        fields = asdict(self)
        fields["receivers"] = list(self.receivers)
        return _dump("placeholder", fields)

    @classmethod
    def decode(cls, data: bytes, name: str) -> Placeholder:
        doc = _load(data, name, "placeholder")
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
        )
        if result.version < 1 or result.size < 0:
            raise ProtocolError(f"relay object {name}: bad version or size", name=name)
        if result.kind == "file" and result.payload is None:
            raise ProtocolError(f"relay object {name}: file without payload name", name=name)
        if result.payload is not None:
            # the payload is this version's own object, never another path's
            # payload nor any other relay object (which reclaim would delete)
            ref = parse_data(result.payload)
            if (ref is None or not result.payload.startswith(f"{DATA}/") or ref.key != result.key
                    or ref.version != result.version or result.kind != "file"):
                raise ProtocolError(f"relay object {name}: payload name {result.payload!r} is not "
                                    "this version's", name=name)
        return result


@dataclass(frozen=True)
class Ack:
    """Client ``client`` is done with version ``version`` of path key ``key``
    (it has the content, or deliberately declined it)."""

    client: str
    key: str
    version: int

    def encode(self) -> bytes:
        return _dump("ack", asdict(self))

    @classmethod
    def decode(cls, data: bytes, name: str) -> Ack:
        doc = _load(data, name, "ack")
        return cls(
            client=_field(doc, "client", str, name),
            key=_field(doc, "key", str, name),
            version=_field(doc, "version", int, name),
        )


@dataclass(frozen=True)
class ClientRecord:
    """A client registered on the relay: whether it receives files, its label."""

    client: str
    label: str
    receives: bool
    mode: str

    def encode(self) -> bytes:
        return _dump("client", asdict(self))

    @classmethod
    def decode(cls, data: bytes, name: str) -> ClientRecord:
        doc = _load(data, name, "client")
        return cls(
            client=_field(doc, "client", str, name),
            label=_field(doc, "label", str, name),
            receives=_field(doc, "receives", bool, name),
            mode=_field(doc, "mode", str, name),
        )


@dataclass(frozen=True)
class LeaseRecord:
    """The lease of generation ``generation``.

    ``token`` is random per acquisition; ``beat`` increases at each renewal, so
    that observers judge staleness by how long they have seen the same
    ``(token, beat)`` on their own clock. ``released`` marks a lease given back.
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

    def encode(self) -> bytes:
        return _dump("lease", asdict(self))

    @classmethod
    def decode(cls, data: bytes, name: str) -> LeaseRecord:
        doc = _load(data, name, "lease")
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
        )
