"""Placeholders held compactly: one ``bytes`` record per path.

A pass of the placeholder layout holds the latest placeholder of every path
on the relay (``RelayState.latest``). As objects, each costs a dataclass of
14 fields, an ``int`` per large number and the strings of its checksum and
payload name (about 400 bytes); as a :class:`PackedPlaceholder` it is one
``bytes`` object of about 130 bytes for a 15-character path. Only a memory
matter: a record reads as the placeholder it packs (every field, as a
property; :meth:`PackedPlaceholder.unpack` gives the placeholder itself,
equal to the one packed). The format lives in memory only; it is never
written anywhere.

Also here: the process-wide :class:`Table` of values that packed records
name by a small code (client ids, labels, receiver lists, checksum
algorithms), shared with the index layout's records
(:class:`escale.protocol.index.objects.PackedEntry`), and the checksum's
packed form that both use.
"""

from __future__ import annotations

import struct
import sys
import threading
from typing import Any, Literal

from escale.protocol.layout import DATA
from escale.protocol.objects import Placeholder


class Table:
    """Values shared by packed records, each given a small code once (client
    ids, labels, receiver lists, checksum algorithms). Process-wide: a packed
    record holds no reference, so the values it names stay here; they are as
    many as the clients of the repositories a process reads. Adding is
    locked (a worker thread may pack while the pass's thread does)."""

    def __init__(self, limit: int) -> None:
        self.values: list[Any] = []
        #: each value's code
        self.known: dict[Any, int] = {}
        self._limit = limit
        self._lock = threading.Lock()

    def code(self, value: Any) -> int:
        """``value``'s code; OverflowError when the table is full."""
        code = self.known.get(value)
        if code is None:
            with self._lock:
                code = self.known.get(value)
                if code is None:
                    code = len(self.values)
                    if code >= self._limit:
                        raise OverflowError("table full")
                    self.values.append(value)
                    self.known[value] = code
        return code


CLIENT_IDS = Table(2**16)
LABELS = Table(2**16)
RECEIVERS = Table(2**16)
ALGORITHMS = Table(2**8)


def pack_checksum(checksum: str) -> bytes | None:
    """``checksum`` (``<algorithm>:<lowercase hex>``, the digest at most 255
    bytes) as its algorithm's code in :data:`ALGORITHMS`, the digest's length
    and the raw digest; None for any other text (it would not come back
    exactly). May raise OverflowError (the table is full)."""
    algorithm, colon, digits = checksum.partition(":")
    if not colon or not algorithm or len(digits) > 510:
        return None
    try:
        digest = bytes.fromhex(digits)
    except ValueError:
        return None
    if digest.hex() != digits:
        return None
    return bytes((ALGORITHMS.code(algorithm), len(digest))) + digest


def checksum_at(record: bytes, at: int) -> tuple[str, int]:
    """The checksum that :func:`pack_checksum` packed at ``at`` in
    ``record``, and where it ends."""
    end = at + 2 + record[at + 1]
    return f"{ALGORITHMS.values[record[at]]}:{record[at + 2:end].hex()}", end


#: flags byte of a packed placeholder
_TOMBSTONE, _DELIBERATE, _PAYLOAD, _CHECKSUM, _NO_PULLER = 1, 2, 4, 8, 16
#: flags, raw key, version, generation, size, mtime_ns, puller count (0 when
#: none), then the codes of the pusher, its label and the receiver list
_HEAD = struct.Struct("<B16sqqqqqHHH")
_BRIEF = struct.Struct("<B16sq")
_CODES = struct.Struct("<HHH")
_CODES_AT = _HEAD.size - _CODES.size
#: the random part of a payload name, raw
_TAG = 8
_MIN, _MAX = -(1 << 63), (1 << 63) - 1


class PackedPlaceholder(bytes):
    """A :class:`Placeholder` in one ``bytes`` record (see the module). Made by
    :func:`pack_placeholder`, which keeps the placeholder object for any
    placeholder whose fields would not come back exactly.

    Layout (little-endian): :data:`_HEAD`; with a payload, the raw random
    part of its name (the name is ``data/<key>.<version:010d>.<random>``,
    spelled again from the key and version); with a checksum, its packed
    form (:func:`pack_checksum`); then the path in UTF-8.

    The path (and, in :meth:`unpack`, the key) reads back as an interned
    string: the same object as the relay state's keys and versions hold, not
    a copy."""

    __slots__ = ()

    def _after_head(self, flags: int) -> int:
        """Where the checksum (or the path, without one) starts."""
        return _HEAD.size + (_TAG if flags & _PAYLOAD else 0)

    def _path_at(self) -> int:
        flags = self[0]
        at = self._after_head(flags)
        return at + 2 + self[at + 1] if flags & _CHECKSUM else at

    @property
    def path(self) -> str:
        return sys.intern(self[self._path_at():].decode("utf-8"))

    @property
    def key(self) -> str:
        return self[1:17].hex()  # (not interned: read in passing, unlike unpack's, which is kept)

    @property
    def version(self) -> int:
        return _BRIEF.unpack_from(self)[2]  # type: ignore[no-any-return]

    @property
    def generation(self) -> int:
        return _HEAD.unpack_from(self)[3]  # type: ignore[no-any-return]

    @property
    def kind(self) -> Literal["file", "tombstone"]:
        return "tombstone" if self[0] & _TOMBSTONE else "file"

    @property
    def deleted(self) -> bool:
        return bool(self[0] & _TOMBSTONE)

    @property
    def pusher(self) -> str:
        return CLIENT_IDS.values[_CODES.unpack_from(self, _CODES_AT)[0]]  # type: ignore[no-any-return]

    @property
    def pusher_label(self) -> str:
        return LABELS.values[_CODES.unpack_from(self, _CODES_AT)[1]]  # type: ignore[no-any-return]

    @property
    def receivers(self) -> tuple[str, ...]:
        return RECEIVERS.values[_CODES.unpack_from(self, _CODES_AT)[2]]  # type: ignore[no-any-return]

    @property
    def size(self) -> int:
        return _HEAD.unpack_from(self)[4]  # type: ignore[no-any-return]

    @property
    def mtime_ns(self) -> int:
        return _HEAD.unpack_from(self)[5]  # type: ignore[no-any-return]

    @property
    def puller_count(self) -> int | None:
        return None if self[0] & _NO_PULLER else _HEAD.unpack_from(self)[6]

    @property
    def deliberate(self) -> bool:
        return bool(self[0] & _DELIBERATE)

    @property
    def checksum(self) -> str | None:
        flags = self[0]
        return checksum_at(self, self._after_head(flags))[0] if flags & _CHECKSUM else None

    @property
    def payload(self) -> str | None:
        flags, key, version = _BRIEF.unpack_from(self)
        if not flags & _PAYLOAD:
            return None
        return f"{DATA}/{key.hex()}.{version:010d}.{self[_HEAD.size:_HEAD.size + _TAG].hex()}"

    def unpack(self) -> Placeholder:
        """The placeholder this record packs (a new object, equal to it)."""
        flags, key, version, generation, size, mtime_ns, puller, pusher, label, receivers = _HEAD.unpack_from(self)
        text = key.hex()
        at = _HEAD.size
        payload = None
        if flags & _PAYLOAD:
            payload = f"{DATA}/{text}.{version:010d}.{self[at:at + _TAG].hex()}"
            at += _TAG
        checksum = None
        if flags & _CHECKSUM:
            checksum, at = checksum_at(self, at)
        return Placeholder(
            sys.intern(self[at:].decode("utf-8")), sys.intern(text), version, generation,
            "tombstone" if flags & _TOMBSTONE else "file", CLIENT_IDS.values[pusher], LABELS.values[label],
            size, mtime_ns, checksum, payload, RECEIVERS.values[receivers],
            None if flags & _NO_PULLER else puller, bool(flags & _DELIBERATE))

    def __repr__(self) -> str:
        return f"PackedPlaceholder({self.unpack()!r})"


#: what the placeholder layout's ``RelayState.latest`` stores per path
StoredPlaceholder = PackedPlaceholder | Placeholder


def pack_placeholder(placeholder: StoredPlaceholder) -> StoredPlaceholder:
    """``placeholder`` as a :class:`PackedPlaceholder` when every field comes
    back exactly from one (exact types; numbers within 64 signed bits; a key
    of 32 lowercase hex digits; a checksum spelled ``<algorithm>:<lowercase
    hex>``; a payload name spelled ``data/<key>.<version:010d>.<16 lowercase
    hex digits>``; a path with a UTF-8 form); otherwise ``placeholder``
    itself. A record is returned as is."""
    if type(placeholder) is not Placeholder:
        return placeholder
    p = placeholder
    try:
        packed = pack_fields(p.path, p.key, p.version, p.generation, p.kind, p.pusher, p.pusher_label, p.size,
                             p.mtime_ns, p.checksum, p.payload, p.receivers, p.puller_count, p.deliberate)
    except (OverflowError, UnicodeError, TypeError):
        packed = None
    return placeholder if packed is None else packed


def _fits(value: object) -> bool:
    return type(value) is int and _MIN <= value <= _MAX


def pack_fields(path: object, key: object, version: object, generation: object, kind: object, pusher: object,
                label: object, size: object, mtime_ns: object, checksum: object, payload: object,
                receivers: object, puller: object, deliberate: object) -> PackedPlaceholder | None:
    """The record of a placeholder of these fields (:class:`Placeholder`'s
    order); None when one would not come back exactly (see
    :func:`pack_placeholder`). May raise OverflowError (a shared table is
    full), UnicodeError (a path without a UTF-8 form) or TypeError (an
    unhashable receiver): no record either."""
    if not (type(path) is str and type(key) is str and type(pusher) is str and type(label) is str
            and type(receivers) is tuple and (receivers in RECEIVERS.known or all(type(r) is str for r in receivers))
            and _fits(version) and _fits(generation) and _fits(size) and _fits(mtime_ns)
            and (puller is None or _fits(puller)) and type(deliberate) is bool and type(kind) is str):
        return None
    if kind == "file":
        flags = 0
    elif kind == "tombstone":
        flags = _TOMBSTONE
    else:
        return None
    if deliberate:
        flags |= _DELIBERATE
    if puller is None:
        flags |= _NO_PULLER
    if len(key) != 32:
        return None
    try:
        raw_key = bytes.fromhex(key)
    except ValueError:
        return None
    if raw_key.hex() != key:
        return None
    parts = [b""]
    if payload is not None:
        if type(payload) is not str:
            return None
        tag = payload[-16:]
        try:
            raw_tag = bytes.fromhex(tag)
        except ValueError:
            return None
        if len(raw_tag) != _TAG or raw_tag.hex() != tag or payload != f"{DATA}/{key}.{version:010d}.{tag}":
            return None
        flags |= _PAYLOAD
        parts.append(raw_tag)
    if checksum is not None:
        if type(checksum) is not str:
            return None
        packed = pack_checksum(checksum)
        if packed is None:
            return None
        flags |= _CHECKSUM
        parts.append(packed)
    parts.append(path.encode("utf-8"))
    parts[0] = _HEAD.pack(flags, raw_key, version, generation, size, mtime_ns, puller or 0,
                          CLIENT_IDS.code(pusher), LABELS.code(label), RECEIVERS.code(receivers))
    return PackedPlaceholder(b"".join(parts))
