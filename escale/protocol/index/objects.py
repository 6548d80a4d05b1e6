"""Names and exact forms of the index layout's relay objects.

::

    escale.repo                                   header, ``"layout": "index"``
    clients/<client-id>                           registration (as in the placeholder layout)
    clients/<client-id>.ack.<sequence:012d>       acknowledgement record of one receiver
    lease/<generation:012d>                       the lease (as in the placeholder layout)
    index/<generation:012d>                       index delta of one index generation
    index/<generation:012d>.full                  index checkpoint: the whole index as of that generation
    pages/<generation:012d>.<random16>            archive page written for that generation
    big/<key>.<version:010d>.<random16>           content of one big file version

Every metadata document here (delta, checkpoint, acknowledgement record, the
page index at the end of a page) is canonical JSON as in
:mod:`escale.protocol.objects` (UTF-8, sorted keys, compact, each key once);
deltas, checkpoints and acknowledgement records are then compressed with zlib
and sealed under their relay name. Decoding is strict: anything else raises
:class:`ProtocolError` naming the object. ``doc/protocol.rst`` ("The index
layout") describes every field.
"""

from __future__ import annotations

import codecs
import json
import re
import secrets
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Literal, TypeVar

from escale.derived import DerivedDict
from escale.errors import ProtocolError
from escale.protocol.layout import CLIENTS, MAX_VERSION
from escale.protocol.objects import (
    FORMAT,
    Placeholder,
    _canonical,
    _client_id,
    _deliberate,
    _field,
    _no_duplicates,
    checksum_problem,
    path_problem,
)
from escale.protocol.packed import CLIENT_IDS, LABELS, RECEIVERS, checksum_at, pack_checksum

INDEX = "index"
PAGES = "pages"
BIG = "big"
ACK_SUFFIX = ".ack"

#: Bound of a decoded index document (checkpoint, delta, acknowledgement
#: record), compressed or not: a checkpoint of a few hundred thousand paths
#: stays below it; anything bigger is refused unread.
MAX_INDEX_BYTES = 256 * 1024 * 1024
#: Bound of a page index (the JSON trailer of a page).
MAX_PAGE_INDEX_BYTES = 64 * 1024 * 1024
COMPRESSIONS = ("none", "zlib")
MAX_GENERATION = 2**63 - 1

_HEX32 = r"[0-9a-f]{32}"
_GEN = r"([0-9]{12,19})"
_INDEX_NAME = re.compile(rf"{_GEN}(\.full)?")
_PAGE_NAME = re.compile(rf"{_GEN}\.[0-9a-f]{{16}}")
_BIG_NAME = re.compile(rf"({_HEX32})\.([0-9]{{10,19}})\.[0-9a-f]{{16}}")
_ACK_NAME = re.compile(rf"({_HEX32})\.ack\.{_GEN}")
_KEY = re.compile(_HEX32)


def _generation(digits: str) -> int | None:
    value = int(digits)
    if not 1 <= value <= MAX_GENERATION or digits != f"{value:012d}":
        return None
    return value


def delta_name(generation: int) -> str:
    return f"{INDEX}/{generation:012d}"


def checkpoint_name(generation: int) -> str:
    return f"{INDEX}/{generation:012d}.full"


def page_name(generation: int) -> str:
    """A fresh page name for a page written for index ``generation``."""
    return f"{PAGES}/{generation:012d}.{secrets.token_hex(8)}"


def big_name(key: str, version: int) -> str:
    """A fresh object name for the content of a big file version."""
    return f"{BIG}/{key}.{version:010d}.{secrets.token_hex(8)}"


def ack_record_name(client: str, sequence: int) -> str:
    """Record number ``sequence`` of ``client``: each rewrite takes a new name
    (a listing shows every change, whatever the server's time resolution)."""
    return f"{CLIENTS}/{client}{ACK_SUFFIX}.{sequence:012d}"


def parse_index_name(name: str) -> tuple[int, bool] | None:
    """``(generation, is_checkpoint)`` of a listed ``index/`` name; None if foreign."""
    match = _INDEX_NAME.fullmatch(name.rpartition("/")[2])
    if match is None or not name.startswith(f"{INDEX}/"):
        return None
    generation = _generation(match[1])
    return None if generation is None else (generation, match[2] is not None)


def is_page_name(name: str) -> bool:
    match = _PAGE_NAME.fullmatch(name.rpartition("/")[2])
    return (match is not None and name.startswith(f"{PAGES}/") and name.count("/") == 1
            and _generation(match[1]) is not None)


def parse_big_name(name: str) -> tuple[str, int] | None:
    """``(key, version)`` of a ``big/`` object name; None if foreign."""
    match = _BIG_NAME.fullmatch(name.rpartition("/")[2])
    if match is None or not name.startswith(f"{BIG}/") or name.count("/") != 1:
        return None
    version = int(match[2])
    if not 1 <= version <= MAX_VERSION or match[2] != f"{version:010d}":
        return None
    return match[1], version


def parse_ack_record_name(name: str) -> tuple[str, int] | None:
    """``(client id, sequence)`` of a ``clients/<id>.ack.<sequence>`` name; None otherwise."""
    match = _ACK_NAME.fullmatch(name.rpartition("/")[2])
    if match is None or not name.startswith(f"{CLIENTS}/") or name.count("/") != 1:
        return None
    sequence = _generation(match[2])
    return None if sequence is None else (match[1], sequence)


# --------------------------------------------------------------------------- encoding


def _problem(name: str, what: str) -> ProtocolError:
    return ProtocolError(f"relay object {name}: {what}", name=name)


def load_document(data: bytes, name: str, kind: str, fields: tuple[str, ...], limit: int) -> dict[str, Any]:
    """The canonical JSON document ``data`` of type ``kind``; ProtocolError otherwise."""
    if len(data) > limit:
        raise _problem(name, f"larger than {limit} bytes")
    try:
        doc = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _problem(name, f"not a valid {kind} ({type(exc).__name__})") from exc
    if not isinstance(doc, dict) or doc.get("type") != kind or doc.get("format") != FORMAT \
            or isinstance(doc.get("format"), bool):
        raise _problem(name, f"not a valid {kind}")
    unknown = sorted(k for k in doc if k not in fields and k not in ("format", "type"))
    if unknown:
        raise _problem(name, f"unknown field {unknown[0][:40]!r} in a {kind}")
    try:
        canonical = _canonical(doc) == data
    except (UnicodeEncodeError, ValueError, RecursionError):
        canonical = False
    if not canonical:
        raise _problem(name, f"not in the canonical form of a {kind}")
    return doc


def dump_document(kind: str, fields: dict[str, Any]) -> bytes:
    return _canonical({"format": FORMAT, "type": kind, **fields})


def compress_document(data: bytes) -> bytes:
    return zlib.compress(data, 6)


#: Entries encoded per :func:`json.dumps` call by :func:`_document_pieces`
#: (their dictionaries and text are what an encoding holds at a time).
_BATCH = 256


def _document_pieces(kind: str, fields: dict[str, Any], entries: Iterable[Any],
                     list_field: str = "entries") -> Iterator[bytes]:
    """The canonical JSON document of :func:`dump_document` with ``fields``
    plus ``list_field`` (the values ``entries`` yields, in order), in
    pieces: their concatenation is byte for byte that document, but at most
    :data:`_BATCH` entries are held as dictionaries or text at a time."""
    text = _canonical({"format": FORMAT, "type": kind, **fields, list_field: []}).decode("utf-8")
    mark = f'"{list_field}":[]'
    if text.count(mark) != 1:  # never with names escale writes; the whole document then
        yield dump_document(kind, {**fields, list_field: list(entries)})
        return
    cut = text.index(mark) + len(mark) - 1
    yield text[:cut].encode("utf-8")
    batch: list[Any] = []
    first = True
    for doc in entries:
        batch.append(doc)
        if len(batch) == _BATCH:
            yield _batch_text(batch, first)
            batch, first = [], False
    if batch:
        yield _batch_text(batch, first)
    yield text[cut:].encode("utf-8")


def _batch_text(batch: list[Any], first: bool) -> bytes:
    body = _canonical(batch)[1:-1]  # type: ignore[arg-type]
    return body if first else b"," + body


def compress_pieces(pieces: Iterable[bytes]) -> tuple[bytes, int]:
    """The zlib stream of the concatenated ``pieces`` (what
    :func:`decompress_document` inflates back), and their total length."""
    chunks, length = compress_chunks(pieces)
    return b"".join(chunks), length


#: zlib level of the documents written to the relay (sent, and read by every client)
RELAY_LEVEL = 6
#: zlib level of the index's local copy in the state database: rewritten by
#: every pass that moved the head, whole, and never sent; level 1 takes less
#: than half the time of level 6 on an index (10 % larger)
LOCAL_LEVEL = 1


def compress_stream(pieces: Iterable[bytes], level: int = RELAY_LEVEL) -> Iterator[bytes]:
    """:func:`compress_pieces`'s stream, each compressed piece given as it is
    made (none held), at zlib ``level`` (any level inflates the same way)."""
    deflater = zlib.compressobj(level)
    for piece in pieces:
        if chunk := deflater.compress(piece):
            yield chunk
    yield deflater.flush()


def compress_chunks(pieces: Iterable[bytes], level: int = RELAY_LEVEL) -> tuple[list[bytes], int]:
    """:func:`compress_stream` as the list of its pieces (never joined: a
    caller that writes them one by one holds the stream once), and the
    total length of ``pieces``."""
    length = 0

    def counted() -> Iterator[bytes]:
        nonlocal length
        for piece in pieces:
            length += len(piece)
            yield piece

    out = list(compress_stream(counted(), level))
    return out, length


def decompress_document(data: bytes, name: str, limit: int = MAX_INDEX_BYTES) -> bytes:
    """Inflate a compressed document, refusing more than ``limit`` bytes,
    trailing bytes or a cut stream."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise _problem(name, "not a compressed document") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise _problem(name, f"expands beyond {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise _problem(name, "cut or followed by foreign bytes")
    return out


_LISTED = object()
#: the canonical text of a value (as ``_canonical``, before encoding), by one
#: encoder made once (``json.dumps`` with options makes one per call)
_CANONICAL_TEXT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


class SteppedInflater:
    """A zlib stream inflated a bounded piece at a time (never more than
    ``step`` bytes per call, whatever the compression ratio), refused as a
    whole: beyond ``limit`` inflated bytes, not zlib, cut before its end or
    followed by foreign bytes. Each refusal is ``problem(what)``
    (:class:`ProtocolError` naming the relay object ``name`` by default)."""

    def __init__(self, data: bytes | memoryview, name: str, limit: int, step: int,
                 problem: Callable[[str], ProtocolError] | None = None) -> None:
        self._data, self._limit, self._step = data, limit, step
        self._problem = problem or (lambda what: _problem(name, what))
        self._inflater = zlib.decompressobj()
        self._fed = 0  # compressed bytes handed to the inflater
        self._out = 0  # bytes inflated
        self._ended = False

    def piece(self) -> bytes | None:
        """The next inflated piece (not empty); None once the stream ended
        (checked whole: complete, and nothing after it)."""
        if self._ended:
            return None
        piece = b""
        inflater = self._inflater
        try:
            while not piece and not self._ended:
                tail = inflater.unconsumed_tail
                if tail:
                    piece = inflater.decompress(tail, self._step)
                elif self._fed < len(self._data):
                    chunk = self._data[self._fed:self._fed + self._step]
                    self._fed += len(chunk)
                    piece = inflater.decompress(chunk, self._step)
                else:
                    self._ended = True
        except zlib.error as exc:
            raise self._problem("not a compressed document") from exc
        self._out += len(piece)
        if self._out > self._limit:
            raise self._problem(f"expands beyond {self._limit} bytes")
        if inflater.eof and (inflater.unused_data or self._fed < len(self._data)):
            raise self._problem("cut or followed by foreign bytes")
        if self._ended and not inflater.eof:
            raise self._problem("cut or followed by foreign bytes")
        return piece or None


class _StreamedDocument:
    """A compressed index document read in pieces, so that its ``entries``
    list is never held whole (neither as text nor as decoded dictionaries).

    :meth:`read` returns the document's other fields and hands each entry's
    dictionary to a callback as soon as it is parsed. With ``strict``, it
    refuses what :func:`decompress_document` and :func:`load_document` refuse
    (the same checks, made piece by piece: each field, key and entry must be
    in its canonical form, keys sorted, each once, the whole within
    ``limit``, nothing after it); without, only the shape is checked (a
    client's own copy, see :meth:`Checkpoint.decode_trusted`).
    """

    STEP = 64 * 1024

    def __init__(self, data: bytes | memoryview, name: str, limit: int, strict: bool) -> None:
        self.name, self.strict = name, strict
        self._inflater = SteppedInflater(data, name, limit, self.STEP)
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._decoder = json.JSONDecoder(object_pairs_hook=_no_duplicates)
        self._ended = False
        self.buf = ""
        self.pos = 0

    def _piece(self) -> str | None:
        """The next piece of text ("" possible); None at the end of the stream."""
        if self._ended:
            return None
        piece = self._inflater.piece()
        if piece is None:
            self._ended = True
        try:
            return self._text.decode(piece or b"", final=self._ended)
        except UnicodeDecodeError as exc:
            raise _problem(self.name, f"not a valid document ({type(exc).__name__})") from exc

    def _more(self, want: int = 1) -> bool:
        """Append at least ``want`` more characters (fewer at the end of the
        stream, then False when none came)."""
        parts: list[str] = []
        got = 0
        while got < want:
            piece = self._piece()
            if piece is None:
                break
            parts.append(piece)
            got += len(piece)
        self.buf = self.buf[self.pos:] + "".join(parts)
        self.pos = 0
        return got > 0

    def _expect(self, literal: str, what: str) -> None:
        while len(self.buf) - self.pos < len(literal) and self._more():
            pass
        if not self.buf.startswith(literal, self.pos):
            raise _problem(self.name, f"not in the canonical form of a {what}")
        self.pos += len(literal)

    def _peek(self) -> str:
        while self.pos >= len(self.buf) and self._more():
            pass
        return self.buf[self.pos:self.pos + 1]

    def _value(self, what: str) -> Any:
        """The JSON value at the current position (canonical when strict)."""
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except (ValueError, RecursionError) as exc:
                # at least twice as much text before the next attempt: a
                # value spread over many pieces is parsed a bounded number of times
                if self._more(max(self.STEP, len(self.buf) - self.pos)):
                    continue
                raise _problem(self.name, f"not a valid {what} ({type(exc).__name__})") from exc
            if end == len(self.buf) and self._more():
                continue  # a number may go on in the next piece
            break
        if self.strict:
            try:
                canonical = _CANONICAL_TEXT(value)
                canonical.encode("utf-8")
            except (UnicodeEncodeError, ValueError, RecursionError, TypeError):
                canonical = None
            if canonical != self.buf[self.pos:end]:
                raise _problem(self.name, f"not in the canonical form of a {what}")
        self.pos = end
        return value

    def read(self, kind: str, fields: tuple[str, ...], on_entry: Any) -> dict[str, Any]:
        """The document's fields but ``entries`` (each handed to ``on_entry``
        instead); ``format`` and ``type`` checked as :func:`load_document` does."""
        doc: dict[str, Any] = {}
        self._expect("{", kind)
        previous = None
        allowed = {*fields, "format", "type"}
        while True:
            key = self._value(kind)
            if not isinstance(key, str) or (previous is not None and key <= previous):
                raise _problem(self.name, f"not in the canonical form of a {kind}")
            if key not in allowed:
                raise _problem(self.name, f"unknown field {key[:40]!r} in a {kind}")
            previous = key
            self._expect(":", kind)
            if key == "entries" and self._peek() == "[":
                self._expect("[", kind)
                doc[key] = _LISTED
                if self._peek() == "]":
                    self.pos += 1
                else:
                    while True:
                        on_entry(self._value(kind))
                        if self._peek() == "]":
                            self.pos += 1
                            break
                        self._expect(",", kind)
            else:
                doc[key] = self._value(kind)
            if self._peek() == "}":
                self.pos += 1
                break
            self._expect(",", kind)
        while self._more():
            pass
        if self.pos != len(self.buf):
            raise _problem(self.name, f"not a valid {kind} (ValueError)")
        if doc.get("type") != kind or doc.get("format") != FORMAT or isinstance(doc.get("format"), bool):
            raise _problem(self.name, f"not a valid {kind}")
        if doc.get("entries") is not _LISTED:
            raise _problem(self.name, "field 'entries' must be a list")
        return doc


def _streamed_entries(data: bytes | memoryview, name: str, kind: str, fields: tuple[str, ...], limit: int,
                      strict: bool, into: PackedIndex | None = None) -> tuple[dict[str, Any], tuple[IndexEntry, ...]]:
    """The other fields and the entries of compressed document ``data``
    (see :class:`_StreamedDocument`): checked entries sorted by path, each
    path once, when ``strict``; trusted ones otherwise. With ``into``, each
    entry is put there (packed) as it is read, and none is returned: no
    list of every entry is made."""
    shared = Shared()
    entries: Any = [] if into is None else _Into(into)
    last: list[str] = []

    pages: set[str] = set()
    clients: set[str] = set()

    def strict_entry(item: Any) -> None:
        entry = _checked_entry(item, name, shared, pages, clients)
        if entry is None:  # something is off: the full checks say what
            entry = IndexEntry.from_json(item, name, shared)
        if last and not last[0] < entry.path:
            raise _problem(name, "entries are not sorted by path, or a path appears twice")
        last[:] = [entry.path]
        entries.append(entry)

    def trusted_entry(item: Any) -> None:
        entries.append(_trusted_entry(item, shared))

    def trusted_packed(item: Any) -> None:
        if type(item) is not dict:
            raise TypeError("an entry is not an object")
        assert into is not None
        # keyed on the path's interned string (as _trusted_entry's): one object
        # for the index, the scan and the state database's base
        into.store(_interned(item["path"]), _pack_document(item))

    on_entry = strict_entry if strict else trusted_entry if into is None else trusted_packed
    doc = _StreamedDocument(data, name, limit, strict).read(kind, fields, on_entry)
    return doc, (tuple(entries) if into is None else ())


class _Into:
    """``append`` puts an entry into a :class:`PackedIndex` by its path."""

    def __init__(self, index: PackedIndex) -> None:
        self.append = index.put


_INT_END = 2**63
_ENTRY_KEYS = frozenset(("path", "key", "version", "generation", "lease", "kind", "pusher", "pusher_label", "size",
                         "mtime_ns", "checksum", "receivers", "puller_count", "location"))
_LOCATION_KEYS = frozenset(("object", "offset", "length", "compression"))


def _checked_entry(doc: Any, name: str, shared: Shared, pages: set[str], clients: set[str]) -> IndexEntry | None:
    """The entry ``doc`` describes when it passes every check of
    :meth:`IndexEntry.from_json` (the same rules, tested in one expression;
    page names and client ids already accepted in this document, in
    ``pages`` and ``clients``, are not matched again); None when any fails or the entry has a ``deliberate`` field, and
    then :meth:`IndexEntry.from_json` is the one that refuses it, with its
    precise message. Entries are most of an index: this is its hot path.

    The JSON decoder makes only exact ``int``, ``str``, ``list`` and ``dict``
    objects, so ``type(x) is int`` is "an int and not a bool"."""
    if type(doc) is not dict or doc.keys() != _ENTRY_KEYS:
        return None
    path, key, version, generation, lease = doc["path"], doc["key"], doc["version"], doc["generation"], doc["lease"]
    kind, pusher, label, size, mtime_ns = doc["kind"], doc["pusher"], doc["pusher_label"], doc["size"], doc["mtime_ns"]
    checksum, receivers, puller_count, loc = doc["checksum"], doc["receivers"], doc["puller_count"], doc["location"]
    if not (type(path) is str and type(key) is str and type(version) is int and 1 <= version <= MAX_VERSION
            and type(generation) is int and 1 <= generation < _INT_END and type(lease) is int
            and 0 <= lease < _INT_END and (kind == "file" or kind == "tombstone") and type(pusher) is str
            and type(label) is str and type(size) is int and 0 <= size < _INT_END and type(mtime_ns) is int
            and -_INT_END <= mtime_ns < _INT_END and (checksum is None or type(checksum) is str)
            and type(receivers) is list and all(type(r) is str for r in receivers)
            and (puller_count is None or (type(puller_count) is int and 0 <= puller_count < _INT_END))
            and (loc is None) == (kind == "tombstone")):
        return None
    one = shared.one
    place = None
    if loc is not None:
        if type(loc) is not dict or loc.keys() != _LOCATION_KEYS:
            return None
        target, offset, length, compression = loc["object"], loc["offset"], loc["length"], loc["compression"]
        if not (type(target) is str and type(offset) is int and 0 <= offset < _INT_END and type(length) is int
                and 0 <= length < _INT_END and (compression == "none" or compression == "zlib")):
            return None
        if target not in pages:
            big = parse_big_name(target)
            if big is None:
                if not is_page_name(target):
                    return None
                pages.add(target)  # a page holds versions of any key
            elif big != (key, version) or offset != 0:
                return None
        place = Location(one(target), offset, length, one(compression))
    if path_problem(path) is not None or not _KEY.fullmatch(key) \
            or (checksum is not None and checksum_problem(checksum) is not None):
        return None
    for client in (pusher, *receivers):
        if client not in clients:
            try:
                _client_id(client, "client", name)
            except ProtocolError:
                return None
            clients.add(client)
    return IndexEntry(path, key, version, generation, lease, one(kind), one(pusher), one(label), size, mtime_ns,
                      checksum, one(tuple(receivers)), puller_count, place)


def _int(doc: dict[str, Any], key: str, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
    value: int = _field(doc, key, int, name)
    if not low <= value <= high:
        raise _problem(name, f"field {key!r} is out of range")
    return value


# --------------------------------------------------------------------------- index entries


@dataclass(frozen=True, slots=True)
class Location:
    """Where the stored form of one file version lives: ``length`` bytes at
    ``offset`` of the plaintext of relay object ``object`` (a page, or a big
    object with offset 0), compressed with ``compression``."""

    object: str
    offset: int
    length: int
    compression: Literal["none", "zlib"]

    def to_json(self) -> dict[str, Any]:
        return {"object": self.object, "offset": self.offset, "length": self.length,
                "compression": self.compression}

    @classmethod
    def from_json(cls, doc: Any, name: str) -> Location:
        if not isinstance(doc, dict) or set(doc) != {"object", "offset", "length", "compression"}:
            raise _problem(name, "bad location")
        compression = _field(doc, "compression", str, name)
        if compression not in COMPRESSIONS:
            raise _problem(name, f"unknown compression {compression[:20]!r}")
        return cls(object=_field(doc, "object", str, name), offset=_int(doc, "offset", name),
                   length=_int(doc, "length", name), compression=compression)


_ENTRY_FIELDS = ("path", "key", "version", "generation", "lease", "kind", "pusher", "pusher_label", "size",
                 "mtime_ns", "checksum", "receivers", "puller_count", "location")


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One version of one path as the index records it.

    ``generation`` is the index generation that first recorded this version
    (kept when the content is moved by compaction); ``lease`` the lease
    generation it was committed under. ``location`` is None for a tombstone.
    ``deliberate``: as in :class:`~escale.protocol.objects.Placeholder` (key
    ``deliberate`` present, ``true``, only in a deliberate tombstone's entry).
    """

    path: str
    key: str
    version: int
    generation: int
    lease: int
    kind: Literal["file", "tombstone"]
    pusher: str
    pusher_label: str
    size: int
    mtime_ns: int
    checksum: str | None
    receivers: tuple[str, ...]
    puller_count: int | None
    location: Location | None
    deliberate: bool = False

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path, "key": self.key, "version": self.version, "generation": self.generation,
            "lease": self.lease, "kind": self.kind, "pusher": self.pusher,
            "pusher_label": self.pusher_label, "size": self.size, "mtime_ns": self.mtime_ns,
            "checksum": self.checksum, "receivers": list(self.receivers),
            "puller_count": self.puller_count,
            "location": self.location.to_json() if self.location else None}
        if self.deliberate:
            doc["deliberate"] = True
        return doc

    @classmethod
    def from_json(cls, doc: Any, name: str, shared: Shared | None = None) -> IndexEntry:
        """The entry ``doc`` describes, checked (:meth:`check`); values that
        repeat are taken from ``shared`` when given."""
        if not isinstance(doc, dict) or set(doc) - {"deliberate"} != set(_ENTRY_FIELDS):
            raise _problem(name, "bad index entry")
        kind = _field(doc, "kind", str, name)
        if kind not in ("file", "tombstone"):
            raise _problem(name, f"unknown kind {kind[:20]!r}")
        receivers = _field(doc, "receivers", list, name)
        if not all(isinstance(r, str) for r in receivers):
            raise _problem(name, "bad receivers")
        location = doc["location"]
        one = (shared if shared is not None else Shared()).one
        place = None if location is None else Location.from_json(location, name)
        if place is not None:
            place = Location(one(place.object), place.offset, place.length, one(place.compression))
        entry = cls(
            path=_field(doc, "path", str, name), key=_field(doc, "key", str, name),
            version=_int(doc, "version", name, 1, MAX_VERSION), generation=_int(doc, "generation", name, 1),
            lease=_int(doc, "lease", name), kind=one(kind), pusher=one(_field(doc, "pusher", str, name)),
            pusher_label=one(_field(doc, "pusher_label", str, name)), size=_int(doc, "size", name),
            mtime_ns=_field(doc, "mtime_ns", int, name),
            checksum=_field(doc, "checksum", str, name, optional=True), receivers=one(tuple(receivers)),
            puller_count=_field(doc, "puller_count", int, name, optional=True),
            location=place, deliberate=_deliberate(doc, name),
        )
        entry.check(name)
        return entry

    def check(self, name: str) -> None:
        """Raise ProtocolError unless every field is acceptable."""
        problem = path_problem(self.path)
        if problem is not None:
            raise _problem(name, problem)
        if self.checksum is not None and (problem := checksum_problem(self.checksum)) is not None:
            raise _problem(name, problem)
        if not _KEY.fullmatch(self.key):
            raise _problem(name, "key is not a path key")
        if self.puller_count is not None and self.puller_count < 0:
            raise _problem(name, "bad puller count")
        _client_id(self.pusher, "pusher", name)
        for receiver in self.receivers:
            _client_id(receiver, "receiver", name)
        if self.deliberate and self.kind != "tombstone":
            raise _problem(name, "only a tombstone can be deliberate")
        if (self.kind == "file") != (self.location is not None):
            raise _problem(name, "a file needs a location, a tombstone has none")
        if self.location is not None:
            target = self.location.object
            big = parse_big_name(target)
            if big is not None:
                if big != (self.key, self.version) or self.location.offset != 0:
                    raise _problem(name, f"big object {target[:200]!r} is not this version's")
            elif not is_page_name(target):
                raise _problem(name, f"location {target[:200]!r} is not a page nor a big object")

    def to_placeholder(self, with_payload: bool = True) -> Placeholder:
        """The placeholder the sync layer sees: ``payload`` names the object
        holding the content (a page is shared by many versions); None for a
        tombstone, or when ``with_payload`` is false (content reclaimed)."""
        return Placeholder(
            path=self.path, key=self.key, version=self.version, generation=self.lease, kind=self.kind,
            pusher=self.pusher, pusher_label=self.pusher_label, size=self.size, mtime_ns=self.mtime_ns,
            checksum=self.checksum, payload=self.location.object if self.location and with_payload else None,
            receivers=self.receivers, puller_count=self.puller_count, deliberate=self.deliberate)

    @property
    def object_name(self) -> str | None:
        """The relay object holding the content (None for a tombstone)."""
        return self.location.object if self.location is not None else None

    def brief(self) -> Brief:
        """The fields the whole-index loops read (see :data:`Brief`)."""
        loc = self.location
        return (self.key, self.version, self.generation, self.kind, self.pusher,
                None if loc is None else loc.object, 0 if loc is None else loc.length)

    def unpack(self) -> IndexEntry:
        """The entry itself (as :meth:`PackedEntry.unpack`)."""
        return self


#: ``(key, version, generation, kind, pusher, object name or None, stored
#: length or 0)`` of an entry: what the loops over the whole index read
#: (acknowledgements, reclaim, clean-up), in one call per entry.
Brief = tuple[str, int, int, str, str, "str | None", int]

# --------------------------------------------------------------------------- the compact form

#: flags byte of a packed entry
_TOMBSTONE, _DELIBERATE, _LOCATED, _ZLIB, _BIG, _CHECKSUM, _NO_PULLER = 1, 2, 4, 8, 16, 32, 64
#: flags, raw key, version, generation, lease, size, mtime_ns, puller count,
#: then codes of the pusher, its label and the receivers (in :data:`_TABLES`)
_HEAD = struct.Struct("<B16sIIIQqIHHH")
#: offset, length, the page's generation (0 for a big object), the name's random part
_LOC = struct.Struct("<QQI8s")
_U32 = struct.Struct("<I")
_OFFSETS = struct.Struct("<QQ")
_BRIEF = struct.Struct("<B16sII")
_CODES = struct.Struct("<HHH")
#: where the head's codes are
_CODES_AT = _HEAD.size - _CODES.size
#: the form of a record, as the local copy names it (:mod:`escale.protocol.index.local_copy`
#: refuses a copy of records of another form): change it with the record's layout
RECORD_LAYOUT = f"entry-1 {_HEAD.format} {_LOC.format}"
_PAGE_PARTS = re.compile(rf"{PAGES}/([0-9]{{12,19}})\.([0-9a-f]{{16}})")
#: where a record's page generation and name tag are (after the head, offset and length)
_NAME_AT = _HEAD.size + 16
#: page names spelled from records, by their packed generation and tag (and
#: the reverse): pages are few and named by many entries, so a name is
#: spelled once and one string serves every entry of the page; cleared when
#: it reaches :data:`_PAGE_NAMES_KEPT` (only a matter of speed)
_PAGE_NAMES: dict[bytes, str] = {}
_PAGE_PARTS_OF: dict[str, bytes] = {}
_PAGE_NAMES_KEPT = 4096




class PackedEntry(bytes):
    """An :class:`IndexEntry` in one ``bytes`` record: the materialised index
    keeps one per path instead of an entry object, its location and its
    numbers (about a third of their size). Only a memory matter: it reads
    as the entry it packs (every field, as a property; :meth:`unpack` gives
    the entry itself, equal to the one packed). Made by :func:`pack`, which
    keeps the entry object for any entry whose fields would not come back
    exactly.

    Layout: :data:`_HEAD`; :data:`_LOC` when the entry has a location; then,
    with a checksum, its algorithm's code, the digest's length and the raw
    digest; then the path in UTF-8 (``surrogateescape``). The object name is
    spelled again from its parts (a page: generation and random part; a big
    object: the entry's key and version, and the random part).
    """

    __slots__ = ()

    #: the length of the shortest record (a head and an empty path)
    SMALLEST = _HEAD.size

    def recoded(self, clients: list[int], labels: list[int], receivers: list[int],
                algorithms: list[int]) -> PackedEntry:
        """This record with its codes replaced through the maps given (a
        stored code ``c`` of the client-id table becomes ``clients[c]``, and
        so on): a record made in another process, whose tables gave other
        codes. IndexError for a code beyond a map."""
        out = bytearray(self)
        pusher, label, group = _CODES.unpack_from(out, _CODES_AT)
        _CODES.pack_into(out, _CODES_AT, clients[pusher], labels[label], receivers[group])
        flags = out[0]
        if flags & _CHECKSUM:
            at = _HEAD.size + (_LOC.size if flags & _LOCATED else 0)
            out[at] = algorithms[out[at]]
        return PackedEntry(out)

    def _tail(self) -> int:
        """Where the optional parts after the head end (the path's start)."""
        flags = self[0]
        at = _HEAD.size + (_LOC.size if flags & _LOCATED else 0)
        return at + 2 + self[at + 1] if flags & _CHECKSUM else at

    @property
    def path(self) -> str:
        return self[self._tail():].decode("utf-8", "surrogateescape")

    @property
    def key(self) -> str:
        return self[1:17].hex()

    @property
    def version(self) -> int:
        return _U32.unpack_from(self, 17)[0]  # type: ignore[no-any-return]

    @property
    def generation(self) -> int:
        return _U32.unpack_from(self, 21)[0]  # type: ignore[no-any-return]

    @property
    def lease(self) -> int:
        return _HEAD.unpack_from(self)[4]  # type: ignore[no-any-return]

    @property
    def kind(self) -> Literal["file", "tombstone"]:
        return "tombstone" if self[0] & _TOMBSTONE else "file"

    @property
    def pusher(self) -> str:
        return CLIENT_IDS.values[_CODES.unpack_from(self, 49)[0]]  # type: ignore[no-any-return]

    @property
    def pusher_label(self) -> str:
        return LABELS.values[_CODES.unpack_from(self, 49)[1]]  # type: ignore[no-any-return]

    @property
    def receivers(self) -> tuple[str, ...]:
        return RECEIVERS.values[_CODES.unpack_from(self, 49)[2]]  # type: ignore[no-any-return]

    @property
    def size(self) -> int:
        return _HEAD.unpack_from(self)[5]  # type: ignore[no-any-return]

    @property
    def mtime_ns(self) -> int:
        return _HEAD.unpack_from(self)[6]  # type: ignore[no-any-return]

    @property
    def puller_count(self) -> int | None:
        return None if self[0] & _NO_PULLER else _HEAD.unpack_from(self)[7]

    @property
    def deliberate(self) -> bool:
        return bool(self[0] & _DELIBERATE)

    @property
    def checksum(self) -> str | None:
        flags = self[0]
        return self._checksum_from(flags, _HEAD.size + (_LOC.size if flags & _LOCATED else 0))[0]

    def _checksum_from(self, flags: int, at: int) -> tuple[str | None, int]:
        """The checksum held from ``at`` (None without one), and where it ends."""
        if not flags & _CHECKSUM:
            return None, at
        return checksum_at(self, at)

    def _object(self, flags: int, key: bytes, version: int) -> str:
        if flags & _BIG:
            return f"{BIG}/{key.hex()}.{version:010d}.{self[_NAME_AT + 4:_NAME_AT + 12].hex()}"
        parts = self[_NAME_AT:_NAME_AT + 12]
        name = _PAGE_NAMES.get(parts)
        if name is None:
            generation, tag = _LOC.unpack_from(self, _HEAD.size)[2:]
            name = f"{PAGES}/{generation:012d}.{tag.hex()}"
            if len(_PAGE_NAMES) >= _PAGE_NAMES_KEPT:
                _PAGE_NAMES.clear()
            _PAGE_NAMES[parts] = name
        return name

    @property
    def object_name(self) -> str | None:
        flags, key, version, _ = _BRIEF.unpack_from(self)
        return self._object(flags, key, version) if flags & _LOCATED else None

    @property
    def location(self) -> Location | None:
        flags, key, version, _ = _BRIEF.unpack_from(self)
        parts = self._location_parts(flags, key, version)
        return None if parts is None else Location(*parts)

    def _location_parts(self, flags: int, key: bytes, version: int
                        ) -> tuple[str, int, int, Literal["none", "zlib"]] | None:
        """The location's object name, offset, length and compression (None: no location)."""
        if not flags & _LOCATED:
            return None
        offset, length = _LOC.unpack_from(self, _HEAD.size)[:2]
        return self._object(flags, key, version), offset, length, "zlib" if flags & _ZLIB else "none"

    def head(self) -> tuple[bytes, int, int, bool]:
        """The raw key, version and index generation, and whether the entry
        is a tombstone: read from the head alone (no string made)."""
        flags, key, version, generation = _BRIEF.unpack_from(self)
        return key, version, generation, bool(flags & _TOMBSTONE)

    def brief(self) -> Brief:
        """As :meth:`IndexEntry.brief`."""
        flags, key, version, generation = _BRIEF.unpack_from(self)
        if flags & _LOCATED:
            return (key.hex(), version, generation, "tombstone" if flags & _TOMBSTONE else "file",
                    CLIENT_IDS.values[_CODES.unpack_from(self, 49)[0]], self._object(flags, key, version),
                    _LOC.unpack_from(self, _HEAD.size)[1])
        return (key.hex(), version, generation, "tombstone" if flags & _TOMBSTONE else "file",
                CLIENT_IDS.values[_CODES.unpack_from(self, 49)[0]], None, 0)

    def unpack(self) -> IndexEntry:
        """The entry this record packs (a new object, equal to it)."""
        flags, key, version, generation, lease, size, mtime_ns, puller, pusher, label, receivers = \
            _HEAD.unpack_from(self)
        parts = self._location_parts(flags, key, version)
        location = None if parts is None else Location(*parts)
        checksum, at = self._checksum_from(flags, _HEAD.size + (0 if parts is None else _LOC.size))
        return IndexEntry(
            self[at:].decode("utf-8", "surrogateescape"), key.hex(), version, generation, lease,
            "tombstone" if flags & _TOMBSTONE else "file", CLIENT_IDS.values[pusher], LABELS.values[label],
            size, mtime_ns, checksum, RECEIVERS.values[receivers], None if flags & _NO_PULLER else puller,
            location, bool(flags & _DELIBERATE))

    def to_placeholder(self, with_payload: bool = True) -> Placeholder:
        """As :meth:`IndexEntry.to_placeholder` (no entry built on the way)."""
        flags, key, version, _, lease, size, mtime_ns, puller, pusher, label, receivers = _HEAD.unpack_from(self)
        at = _HEAD.size
        payload = None
        if flags & _LOCATED:
            if with_payload:
                payload = self._object(flags, key, version)
            at += _LOC.size
        checksum, at = self._checksum_from(flags, at)
        return Placeholder(
            self[at:].decode("utf-8", "surrogateescape"), key.hex(), version, lease,
            "tombstone" if flags & _TOMBSTONE else "file", CLIENT_IDS.values[pusher], LABELS.values[label],
            size, mtime_ns, checksum, payload, RECEIVERS.values[receivers],
            None if flags & _NO_PULLER else puller, bool(flags & _DELIBERATE))

    def to_json(self) -> dict[str, Any]:
        """As :meth:`IndexEntry.to_json` (the same document, key for key; no
        entry built on the way: every delta and local copy encodes these)."""
        flags, key, version, generation, lease, size, mtime_ns, puller, pusher, label, receivers = \
            _HEAD.unpack_from(self)
        parts = self._location_parts(flags, key, version)
        location = None if parts is None else dict(zip(("object", "offset", "length", "compression"), parts,
                                                       strict=True))
        checksum, at = self._checksum_from(flags, _HEAD.size + (0 if parts is None else _LOC.size))
        doc: dict[str, Any] = {
            "path": self[at:].decode("utf-8", "surrogateescape"), "key": key.hex(), "version": version,
            "generation": generation, "lease": lease, "kind": "tombstone" if flags & _TOMBSTONE else "file",
            "pusher": CLIENT_IDS.values[pusher], "pusher_label": LABELS.values[label], "size": size,
            "mtime_ns": mtime_ns, "checksum": checksum, "receivers": list(RECEIVERS.values[receivers]),
            "puller_count": None if flags & _NO_PULLER else puller, "location": location}
        if flags & _DELIBERATE:
            doc["deliberate"] = True
        return doc

    def __repr__(self) -> str:
        return f"PackedEntry({self.unpack()!r})"


#: what the materialised index stores per path: a record, or the entry itself
StoredEntry = PackedEntry | IndexEntry


def pack(entry: StoredEntry) -> StoredEntry:
    """``entry`` as a :class:`PackedEntry` when every field comes back
    exactly from one (a checksum spelled ``<algorithm>:<lowercase hex>``,
    an object name in escale's canonical spelling, numbers within the
    record's widths, exact types...); otherwise ``entry`` itself. A record
    is returned as is."""
    if type(entry) is not IndexEntry:
        return entry
    try:
        return _packed(entry) or entry
    except (struct.error, OverflowError, ValueError, UnicodeError, TypeError):
        return entry


def _packed(e: IndexEntry) -> PackedEntry | None:
    loc = e.location
    if loc is not None and type(loc) is not Location:
        return None
    return _pack_fields(e.path, e.key, e.version, e.generation, e.lease, e.kind, e.pusher, e.pusher_label, e.size,
                        e.mtime_ns, e.checksum, e.receivers, e.puller_count, e.deliberate,
                        None if loc is None else (loc.object, loc.offset, loc.length, loc.compression))


def _pack_document(doc: dict[str, Any]) -> StoredEntry:
    """:func:`pack` of :func:`_trusted_entry` of ``doc``, without building
    the entry when a record holds it (KeyError or TypeError as
    :func:`_trusted_entry` for a document of another shape)."""
    loc = doc["location"]
    receivers = doc["receivers"]
    if type(receivers) is list and (loc is None or type(loc) is dict):
        try:
            packed = _pack_fields(
                doc["path"], doc["key"], doc["version"], doc["generation"], doc["lease"], doc["kind"], doc["pusher"],
                doc["pusher_label"], doc["size"], doc["mtime_ns"], doc["checksum"], tuple(receivers),
                doc["puller_count"], doc.get("deliberate", False),
                None if loc is None else (loc["object"], loc["offset"], loc["length"], loc["compression"]))
        except (struct.error, OverflowError, ValueError, UnicodeError, TypeError):
            packed = None
        if packed is not None:
            return packed
    return pack(_trusted_entry(doc))


def _pack_location(name: str, offset: int, length: int, key: str, version: int) -> tuple[int, bytes] | None:
    """The flag (:data:`_BIG` or none) and :data:`_LOC` part of a location;
    None when its object name is not spelled as escale spells it."""
    named = _PAGE_PARTS_OF.get(name)
    if named is not None:
        return 0, _OFFSETS.pack(offset, length) + named
    if name.startswith(f"{BIG}/"):
        tag = name[-16:]
        if name != f"{BIG}/{key}.{version:010d}.{tag}":
            return None
        flag, page_generation = _BIG, 0
    else:
        match = _PAGE_PARTS.fullmatch(name)
        if match is None or name != f"{PAGES}/{int(match[1]):012d}.{match[2]}":
            return None
        flag, page_generation, tag = 0, int(match[1]), match[2]
    raw_tag = bytes.fromhex(tag)
    if len(raw_tag) != 8 or raw_tag.hex() != tag:
        return None
    part = _LOC.pack(offset, length, page_generation, raw_tag)
    if not flag:
        if len(_PAGE_PARTS_OF) >= _PAGE_NAMES_KEPT:
            _PAGE_PARTS_OF.clear()
        _PAGE_PARTS_OF[name] = part[16:]
    return flag, part


def _pack_fields(path: Any, key: Any, version: Any, generation: Any, lease: Any, kind: Any, pusher: Any,
                 label: Any, size: Any, mtime_ns: Any, checksum: Any, receivers: Any, puller: Any, deliberate: Any,
                 loc: tuple[Any, Any, Any, Any] | None) -> PackedEntry | None:
    """The record of an entry of these fields; None when one would not come
    back exactly (see :func:`pack`). May raise struct.error, OverflowError,
    ValueError, UnicodeError or TypeError (then: no record either)."""
    if not (type(key) is str and type(path) is str and type(pusher) is str and type(label) is str
            and type(receivers) is tuple
            and (receivers in RECEIVERS.known or all(type(r) is str for r in receivers))
            and type(version) is int and type(generation) is int and type(lease) is int
            and type(size) is int and type(mtime_ns) is int and (puller is None or type(puller) is int)
            and (deliberate is True or deliberate is False)):
        return None
    flags = 0 if kind == "file" else _TOMBSTONE if kind == "tombstone" else -1
    if flags < 0:
        return None
    if deliberate:
        flags |= _DELIBERATE
    if puller is None:
        flags |= _NO_PULLER
    raw_key = bytes.fromhex(key)
    if len(raw_key) != 16 or raw_key.hex() != key:
        return None
    parts = [b""]
    if loc is not None:
        name, offset, length, compression = loc
        if type(offset) is not int or type(length) is not int or type(name) is not str:
            return None
        flags |= _LOCATED
        if compression == "zlib":
            flags |= _ZLIB
        elif compression != "none":
            return None
        placed = _pack_location(name, offset, length, key, version)
        if placed is None:
            return None
        flags |= placed[0]
        parts.append(placed[1])
    if checksum is not None:
        if type(checksum) is not str:
            return None
        packed = pack_checksum(checksum)
        if packed is None:
            return None
        flags |= _CHECKSUM
        parts.append(packed)
    encoded = path.encode("utf-8", "surrogateescape")
    if not path.isascii() and encoded.decode("utf-8", "surrogateescape") != path:
        return None
    parts.append(encoded)
    parts[0] = _HEAD.pack(flags, raw_key, version, generation, lease, size, mtime_ns, puller or 0,
                          CLIENT_IDS.code(pusher), LABELS.code(label), RECEIVERS.code(receivers))
    return PackedEntry(b"".join(parts))


class PackedIndex(DerivedDict[IndexEntry]):
    """The materialised index: path to :class:`IndexEntry`, each kept as a
    :class:`PackedEntry` where :func:`pack` can (the entry object otherwise).
    Reads as a dict of entries (built on access); setting a path packs the
    entry. :meth:`stored_values` and :meth:`stored_items` give what is kept
    (records or entries: both read as entries, field by field, and have
    :meth:`~PackedEntry.brief`), for loops that must not build an entry per
    path."""

    def derive(self, source: Any) -> IndexEntry:
        return source.unpack() if type(source) is PackedEntry else source

    def __setitem__(self, path: str, entry: StoredEntry) -> None:
        self.store(path, pack(entry))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for path, entry in dict(*args, **kwargs).items():
            self[path] = entry

    def put(self, entry: StoredEntry) -> None:
        """Keep ``entry`` under its own path."""
        self.store(entry.path, pack(entry))

    def stored(self, path: str) -> StoredEntry | None:
        """What is kept for ``path`` (None if nothing)."""
        return dict.get(self, path)

    def stored_values(self) -> Iterable[StoredEntry]:
        return dict.values(self)

    def stored_items(self) -> Iterable[tuple[str, StoredEntry]]:
        return dict.items(self)

    def packed(self) -> int:
        """How many paths are kept as records (the rest as entry objects)."""
        return sum(1 for s in self.stored_values() if isinstance(s, PackedEntry))


_Value = TypeVar("_Value")
_Text = TypeVar("_Text", str, None)


def _interned(value: _Text) -> _Text:
    """``value`` interned (None as is): the scan and the state database's
    base intern their paths and checksums too, so one string serves them
    all. Only for the local copy of the index (a pass that has a base);
    a first pull, with nothing to share with, would only pay the table's
    slots. Only a memory matter."""
    return value if not isinstance(value, str) else sys.intern(value)


class Shared(dict[Any, Any]):
    """Values that repeat across the entries of an index (client ids and
    labels, receiver lists, page names, kinds): one object each, however
    many entries name it. Only a memory matter: an entry reads the same."""

    def one(self, value: _Value) -> _Value:
        """The object equal to ``value`` kept here (``value`` the first time)."""
        return self.setdefault(value, value)  # type: ignore[no-any-return]


def _trusted_entry(doc: dict[str, Any], shared: Shared | None = None) -> IndexEntry:
    """An entry from a document :meth:`IndexEntry.to_json` wrote (no checks:
    see :meth:`Checkpoint.decode_trusted`); KeyError or TypeError when the
    document is of another shape."""
    one = (shared if shared is not None else Shared()).one
    loc = doc["location"]
    return IndexEntry(
        _interned(doc["path"]), doc["key"], doc["version"], doc["generation"], doc["lease"],
        one(doc["kind"]), one(doc["pusher"]), one(doc["pusher_label"]), doc["size"], doc["mtime_ns"],
        _interned(doc["checksum"]),
        one(tuple(doc["receivers"])), doc["puller_count"],
        None if loc is None else Location(one(loc["object"]), loc["offset"], loc["length"], one(loc["compression"])),
        doc.get("deliberate", False))


def _by_path(entry: StoredEntry) -> str:
    return entry.path


def _in_path_order(entries: tuple[StoredEntry, ...]) -> Iterable[StoredEntry]:
    """``entries`` sorted by path: as they are when they are (a pusher's
    delta is made in that order; no list of every path is made to check)."""
    previous = None
    for entry in entries:
        path = entry.path
        if previous is not None and not previous <= path:
            return sorted(entries, key=_by_path)
        previous = path
    return entries


def _objects(doc: dict[str, Any], key: str, name: str) -> dict[str, int]:
    raw = _field(doc, key, dict, name)
    for obj, size in raw.items():
        if not (is_page_name(obj) or parse_big_name(obj)) or isinstance(size, bool) \
                or not isinstance(size, int) or not 0 <= size < 2**63:
            raise _problem(name, f"bad object {obj[:200]!r}")
    return dict(raw)


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class IndexDelta:
    """What index generation ``generation`` changed: new or moved versions
    (``entries``), content objects it added (name to stored size) and content
    objects it dropped (reclaimed or superseded: deleted after this delta)."""

    generation: int
    lease: int
    writer: str
    entries: tuple[StoredEntry, ...]
    added: dict[str, int]
    dropped: tuple[str, ...]

    def encode(self) -> bytes:
        """The compressed canonical document (built in pieces: see :func:`_document_pieces`)."""
        return compress_pieces(_document_pieces("index-delta", {
            "generation": self.generation, "lease": self.lease, "writer": self.writer,
            "added": self.added, "dropped": sorted(self.dropped)},
            (e.to_json() for e in _in_path_order(self.entries))))[0]

    @classmethod
    def decode(cls, data: bytes, name: str) -> IndexDelta:
        """The delta in ``data`` (relay object ``name``), checked whole;
        read in pieces (the entries' list is never held as text)."""
        doc, entries = _streamed_entries(data, name, "index-delta",
                                         ("generation", "lease", "writer", "entries", "added", "dropped"),
                                         MAX_INDEX_BYTES, strict=True)
        dropped = _field(doc, "dropped", list, name)
        if not all(isinstance(d, str) and (is_page_name(d) or parse_big_name(d)) for d in dropped) \
                or dropped != sorted(set(dropped)):
            raise _problem(name, "bad dropped objects")
        delta = cls(generation=_int(doc, "generation", name, 1), lease=_int(doc, "lease", name),
                    writer=_client_id(_field(doc, "writer", str, name), "writer", name),
                    entries=entries, added=_objects(doc, "added", name), dropped=tuple(dropped))
        parsed = parse_index_name(name)
        if parsed is None or parsed != (delta.generation, False):
            raise _problem(name, "delta does not match its name")
        return delta


def checkpoint_pieces(generation: int, objects: dict[str, int], entries: Iterable[StoredEntry]) -> Iterator[bytes]:
    """:meth:`Checkpoint.pieces` of a checkpoint of ``entries``, given in
    path order (each path once) and read one at a time as the document is
    made (records or entries: see :class:`PackedIndex`)."""
    return _document_pieces("index-checkpoint", {"generation": generation, "objects": objects},
                            (e.to_json() for e in entries))


@dataclass(frozen=True)
class Checkpoint:
    """The whole index as of generation ``generation``: the latest version of
    every path (tombstones included) and the content objects present."""

    generation: int
    entries: tuple[IndexEntry, ...]
    objects: dict[str, int]

    def pieces(self) -> Iterator[bytes]:
        """The checkpoint's canonical JSON document, not compressed, in
        pieces of a bounded number of entries."""
        return checkpoint_pieces(self.generation, self.objects, _in_path_order(self.entries))

    def document(self) -> bytes:
        """The checkpoint's canonical JSON document, not compressed."""
        return b"".join(self.pieces())

    def encode_measured(self) -> tuple[bytes, int]:
        """:meth:`encode`'s output and the length of the document inside."""
        return compress_pieces(self.pieces())

    def encode(self) -> bytes:
        return self.encode_measured()[0]

    def encode_chunks(self) -> list[bytes]:
        """:meth:`encode`'s output as the pieces of the compressed stream
        (see :func:`compress_chunks`)."""
        return compress_chunks(self.pieces())[0]

    @classmethod
    def decode(cls, data: bytes, name: str, *, expect_name: bool = True,
               limit: int = MAX_INDEX_BYTES, into: PackedIndex | None = None) -> Checkpoint:
        """``expect_name``: the relay name must be this generation's
        checkpoint (false for the copy kept in the state database);
        ``limit``: the bound of the decoded document (the relay's, unless
        the caller reads its own copy); ``into``: the entries are put there
        as they are read (the checkpoint returned then has none: no list of
        every entry is made; ``into`` is left partly filled when this raises)."""
        doc, entries = _streamed_entries(data, name, "index-checkpoint", ("generation", "entries", "objects"),
                                         limit, strict=True, into=into)
        checkpoint = cls(generation=_int(doc, "generation", name, 0), entries=entries,
                         objects=_objects(doc, "objects", name))
        if expect_name and parse_index_name(name) != (checkpoint.generation, True):
            raise _problem(name, "checkpoint does not match its name")
        return checkpoint

    @classmethod
    def decode_trusted(cls, data: bytes | memoryview, name: str, *, limit: int = MAX_INDEX_BYTES,
                       into: PackedIndex | None = None) -> Checkpoint:
        """Decode :meth:`encode`'s output without checking it field by field.

        Only for bytes this client produced itself and kept where the relay
        cannot write (the copy of the index in its state database, whose
        digest the caller verified first): the checks :meth:`decode` runs were
        run when the content arrived from the relay. A document of another
        shape still raises ProtocolError (never another exception); one that
        has the right shape with wrong values is not detected here.
        ``into``: as :meth:`decode`.
        """
        try:
            doc, entries = _streamed_entries(data, name, "index-checkpoint", ("generation", "entries", "objects"),
                                             limit, strict=False, into=into)
            objects = doc["objects"]
            generation = doc["generation"]
            if not isinstance(objects, dict) or not isinstance(generation, int):
                raise _problem(name, "not an index checkpoint")
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise _problem(name, f"not a valid index checkpoint ({type(exc).__name__})") from exc
        return cls(generation=generation, entries=entries, objects=objects)


@dataclass(frozen=True)
class AckRecord:
    """Client ``client`` has processed every version recorded at index
    generations up to ``generation``, except the ``missing`` (key, version)
    pairs: it acknowledges all others that it had to receive."""

    client: str
    generation: int
    missing: tuple[tuple[str, int], ...]

    def encode(self) -> bytes:
        return compress_document(dump_document("index-ack", {
            "client": self.client, "generation": self.generation,
            "missing": [[k, v] for k, v in sorted(set(self.missing))]}))

    @classmethod
    def decode(cls, data: bytes, name: str) -> AckRecord:
        doc = load_document(decompress_document(data, name), name, "index-ack",
                            ("client", "generation", "missing"), MAX_INDEX_BYTES)
        raw = _field(doc, "missing", list, name)
        missing = []
        for item in raw:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                    and _KEY.fullmatch(item[0]) and isinstance(item[1], int) and not isinstance(item[1], bool)
                    and 1 <= item[1] <= MAX_VERSION):
                raise _problem(name, "bad missing version")
            missing.append((item[0], item[1]))
        if missing != sorted(set(missing)):
            raise _problem(name, "missing versions are not sorted or repeat")
        record = cls(client=_client_id(_field(doc, "client", str, name), "client", name),
                     generation=_int(doc, "generation", name, 0), missing=tuple(missing))
        parsed = parse_ack_record_name(name)
        if parsed is None or parsed[0] != record.client:
            raise _problem(name, "acknowledgement record does not match its name")
        return record


@dataclass(frozen=True, slots=True)
class PageMember:
    """One member of a page, as the page index at the page's end lists it."""

    key: str
    version: int
    offset: int
    length: int
    size: int
    compression: Literal["none", "zlib"]


def encode_page_index(generation: int, members: list[PageMember]) -> bytes:
    return b"".join(page_index_pieces(generation, members))


def page_index_pieces(generation: int, members: Iterable[PageMember]) -> Iterator[bytes]:
    """:func:`encode_page_index`'s document in pieces (a bounded number of
    members held as lists or text at a time)."""
    return _document_pieces("page-index", {"generation": generation},
                            ([m.key, m.version, m.offset, m.length, m.size, m.compression] for m in members),
                            "members")


def page_index_frame(generation: int) -> tuple[bytes, bytes]:
    """The page index of ``generation`` around its members: the bytes before
    the first member and after the last. With the members'
    :func:`page_member_text`, comma-separated, between them, this is byte
    for byte :func:`encode_page_index`'s document (a writer can keep the
    members on disk as it goes, and hold none of them)."""
    text = _canonical({"format": FORMAT, "type": "page-index", "generation": generation, "members": []})
    cut = text.index(b'"members":[]') + len(b'"members":[')
    return text[:cut], text[cut:]


def page_member_text(member: PageMember) -> bytes:
    """One member as the page index lists it (see :func:`page_index_frame`)."""
    return _CANONICAL_TEXT([member.key, member.version, member.offset, member.length, member.size,
                            member.compression]).encode("utf-8")


def decode_page_index(data: bytes, name: str) -> tuple[int, list[PageMember]]:
    """The generation and members of a page index; members lie one after
    the other from offset 0, without gap or overlap. As
    :class:`PageIndexReader`, on a document held whole."""
    if len(data) > MAX_PAGE_INDEX_BYTES:
        raise _problem(name, f"larger than {MAX_PAGE_INDEX_BYTES} bytes")
    reader = PageIndexReader(BytesIO(data).read, len(data), name)
    return reader.generation, [PageMember(*fields) for fields in reader.members()]


#: a canonical number of a page index (no sign, no leading zero, at most 19 digits)
_NUMBER = rb"(0|[1-9][0-9]{0,18})"
#: one member as canonical JSON lists it (``page_member_text``), then what follows it
_MEMBER = re.compile(rb'\["([0-9a-f]{32})",' + rb",".join([_NUMBER] * 4) + rb',"(none|zlib)"\]')
#: the generation's number, just after the document's first field
_GENERATION = re.compile(_NUMBER + rb"[^0-9]")
#: the longest member text: no match can need more bytes than this
_MEMBER_MAX = len(b'["",,,,,"none"]') + 32 + 4 * 19


class PageIndexReader:
    """Reads a page index of ``length`` bytes through ``read`` in bounded
    pieces, never holding it whole nor any object per member.

    It accepts exactly what the canonical form allows: the document must be
    byte for byte :func:`page_index_frame` of its generation around the
    members' :func:`page_member_text`, comma-separated (so it is the
    canonical JSON document that :func:`encode_page_index` writes, with its
    four fields, each once, and nothing else). Each member must have a key
    of 32 lowercase hex digits, a version from 1 to ``MAX_VERSION``,
    numbers below 2**63, a known compression, and start where the previous
    one ended (the first at 0). Anything else raises :class:`ProtocolError`
    naming the object. The generation is read when the reader is made;
    :meth:`members` checks the rest as it yields: a caller must exhaust it
    before trusting anything it yielded.
    """

    STEP = 64 * 1024

    def __init__(self, read: Callable[[int], bytes], length: int, name: str) -> None:
        self.name = name
        if length > MAX_PAGE_INDEX_BYTES:
            raise _problem(name, f"larger than {MAX_PAGE_INDEX_BYTES} bytes")
        self._read = read
        self._left = length
        self._buf = b""
        self._pos = 0
        template = page_index_frame(1)[0]
        lead = template[:template.index(b'"generation":1,') + len(b'"generation":')]
        self._want(len(lead) + 20)
        number = _GENERATION.match(self._buf, len(lead))
        if not self._buf.startswith(lead) or number is None:
            raise self._refused()
        generation = int(number[1])
        if not 1 <= generation <= MAX_GENERATION:
            raise _problem(name, "field 'generation' is out of range")
        self.generation = generation
        head, self._tail = page_index_frame(generation)
        self._want(len(head))
        if not self._buf.startswith(head):
            raise self._refused()
        self._pos = len(head)
        self._started = False

    def _refused(self) -> ProtocolError:
        return _problem(self.name, "not in the canonical form of a page-index")

    def _want(self, size: int) -> None:
        """Have at least ``size`` bytes after the position buffered (fewer at the end)."""
        if len(self._buf) - self._pos >= size or not self._left:
            return
        parts = [self._buf[self._pos:]]
        have = len(parts[0])
        while have < size and self._left:
            piece = self._read(min(self.STEP, self._left))
            if not piece:
                raise _problem(self.name, "page index cut")
            piece = piece[:self._left]
            self._left -= len(piece)
            parts.append(piece)
            have += len(piece)
        self._buf = b"".join(parts)
        self._pos = 0

    def members(self) -> Iterator[tuple[str, int, int, int, int, Literal["none", "zlib"]]]:
        """Each member, in page order: ``(key, version, offset, length, size,
        compression)``; raises ProtocolError at the first fault."""
        if self._started:
            raise RuntimeError("a page index is read once")
        self._started = True
        end = 0
        first = True
        while True:
            self._want(len(self._tail))
            if first and self._tail_is_last():
                return
            if not first:
                if self._buf[self._pos:self._pos + 1] != b",":
                    if self._tail_is_last():
                        return
                    raise self._refused()
                self._pos += 1
            first = False
            self._want(_MEMBER_MAX)
            match = _MEMBER.match(self._buf, self._pos)
            if match is None:
                raise _problem(self.name, "bad page member")
            version, offset, length, size = (int(match[i]) for i in range(2, 6))
            if not (1 <= version <= MAX_VERSION and offset == end and length < 2**63 and size < 2**63
                    and offset < 2**63):
                raise _problem(self.name, "bad page member")
            self._pos = match.end()
            end = offset + length
            yield (match[1].decode("ascii"), version, offset, length, size,
                   "zlib" if match[6] == b"zlib" else "none")

    def _tail_is_last(self) -> bool:
        """Whether what is left is exactly the document's closing bytes."""
        return not self._left and self._buf[self._pos:] == self._tail
