"""The local copy of the materialised index in its packed form.

A client keeps the whole index in its state database between passes (see
:mod:`escale.protocol.index.repository`, "the local copy"). Written as a
JSON checkpoint, loading it decodes every entry's document and packs it
again (about 1.4 s at 100,000 paths, a fifth of a pass that moved the head
by one file). The packed form keeps the records the index already holds
(:class:`~escale.protocol.index.objects.PackedEntry`) as they are, so a load
only cuts them apart (about a quarter of that time).

Form, before zlib compression (level :data:`~escale.protocol.index.objects.LOCAL_LEVEL`):

* a little-endian ``u32`` length, then a canonical JSON header:
  ``type`` (``"index-local-copy"``), ``layout`` (:data:`RECORD_LAYOUT`: the
  record's own form; a copy of another form is refused), ``generation``,
  ``objects`` (as in a checkpoint), and ``tables``: the values of the
  process's code tables (``clients``, ``labels``, ``receivers``,
  ``algorithms``, each in code order) when the copy was written;
* then each record, in path order, after its ``u32`` length.

A record names client ids, labels, receiver lists and checksum algorithms
by codes of tables that live in the process (:mod:`escale.protocol.packed`).
The process that loads the copy gives each stored value its own code; when
a code differs (tables filled in another order), each record's codes are
rewritten on the way in (:meth:`PackedEntry.recoded`).

This form lives only in this client's state database, sealed by a digest
that the caller checks first, and is never sent anywhere. A copy whose
digest does not match, whose layout differs or that does not parse raises
:class:`ProtocolError`: the caller reads the index again from the relay.
Where an index holds an entry that does not pack (kept as an entry object),
the copy is written as the JSON checkpoint instead (:func:`packs_whole`).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from typing import Any

from escale.errors import ProtocolError
from escale.protocol.index.objects import (
    _CANONICAL_TEXT,
    RECORD_LAYOUT,
    Checkpoint,
    PackedEntry,
    PackedIndex,
    SteppedInflater,
    StoredEntry,
    _interned,
)
from escale.protocol.packed import ALGORITHMS, CLIENT_IDS, LABELS, RECEIVERS, Table

__all__ = ["KIND", "packed_copy_pieces", "packs_whole", "read_packed_copy"]

#: the header's ``type``
KIND = "index-local-copy"
_LENGTH = struct.Struct("<I")
#: records joined into one piece of the stream
_PIECE_RECORDS = 4096
#: compressed bytes inflated at a time while loading
_STEP = 256 * 1024


def packs_whole(stored: Iterable[StoredEntry]) -> bool:
    """Whether every entry of ``stored`` is kept as a record (the packed
    form can hold the index)."""
    return all(type(entry) is PackedEntry for entry in stored)


def _tables() -> dict[str, list[Any]]:
    """The values of the code tables, each in code order (a snapshot)."""
    return {"clients": list(CLIENT_IDS.values), "labels": list(LABELS.values),
            "receivers": [list(group) for group in RECEIVERS.values], "algorithms": list(ALGORITHMS.values)}


def packed_copy_pieces(generation: int, objects: dict[str, int], records: Iterable[StoredEntry]) -> Iterator[bytes]:
    """The packed copy of an index at ``generation`` with content objects
    ``objects`` and ``records`` (in path order, every one a record: see
    :func:`packs_whole`), not compressed, in pieces of a bounded number of
    records. The tables are taken when the first piece is asked for: every
    record of the index was made by then, so each code it holds is in them
    (tables only grow)."""
    header = _CANONICAL_TEXT({"type": KIND, "layout": RECORD_LAYOUT, "generation": generation,
                              "objects": objects, "tables": _tables()}).encode("utf-8")
    yield _LENGTH.pack(len(header)) + header
    batch: list[bytes] = []
    for record in records:
        if not isinstance(record, PackedEntry):
            raise TypeError("an entry of the index is not a record (see packs_whole)")
        batch.append(_LENGTH.pack(len(record)))
        batch.append(record)
        if len(batch) >= 2 * _PIECE_RECORDS:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def _codes(table: Table, values: Any, what: str) -> list[int]:
    """Each stored value's code in this process, in stored-code order."""
    if not isinstance(values, list):
        raise TypeError(f"table {what} is not a list")
    return [table.code(value) for value in values]


def _maps(tables: Any) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """The code maps of the stored tables (None when every code is this
    process's already). TypeError, ValueError or OverflowError for tables
    of another shape (or a full table)."""
    if not isinstance(tables, dict):
        raise TypeError("tables is not an object")
    receivers = tables["receivers"]
    if not isinstance(receivers, list) or not all(isinstance(group, list) for group in receivers):
        raise TypeError("table receivers is not a list of lists")
    maps = (_codes(CLIENT_IDS, tables["clients"], "clients"), _codes(LABELS, tables["labels"], "labels"),
            _codes(RECEIVERS, [tuple(group) for group in receivers], "receivers"),
            _codes(ALGORITHMS, tables["algorithms"], "algorithms"))
    return None if all(codes == list(range(len(codes))) for codes in maps) else maps


class _Inflated:
    """The stream of a compressed copy, inflated a step at a time
    (:class:`SteppedInflater`): the whole copy is never held inflated."""

    def __init__(self, data: bytes | memoryview, name: str, limit: int) -> None:
        self._name = name
        self._inflater = SteppedInflater(data, name, limit, _STEP, problem=self._problem)
        self.buffer = bytearray()
        self.at = 0  # where the unread part of the buffer starts

    def _problem(self, what: str) -> ProtocolError:
        return ProtocolError(f"{self._name}: {what}", name=self._name)

    def need(self, count: int) -> bool:
        """Make ``count`` unread bytes available in :attr:`buffer` from
        :attr:`at`; False when the compressed stream ended first with
        nothing unread (the caller's end). A stream that stops with a part
        unread, or without its end (cut at a record's boundary), raises."""
        while len(self.buffer) - self.at < count:
            if self.at:
                del self.buffer[:self.at]
                self.at = 0
            out = self._inflater.piece()
            if out is None:
                if self.buffer:  # a part unread
                    raise self._problem("cut short")
                return False
            self.buffer += out
        return True

    def take(self, count: int) -> bytes:
        """The next ``count`` bytes (:meth:`need` said they are there)."""
        start = self.at
        self.at += count
        return bytes(self.buffer[start:self.at])

    def length(self) -> int | None:
        """The next ``u32`` length; None at the end of the stream."""
        if not self.need(_LENGTH.size):
            return None
        (count,) = _LENGTH.unpack_from(self.buffer, self.at)
        self.at += _LENGTH.size
        if not self.need(count):
            raise self._problem("cut short")
        return int(count)


def read_packed_copy(data: bytes | memoryview, name: str, *, limit: int, into: PackedIndex) -> Checkpoint:
    """Load a compressed copy :func:`packed_copy_pieces` wrote into ``into``
    (path to record), and return its generation and objects as a checkpoint
    without entries (they are in ``into``, which is left partly filled when
    this raises).

    Only for this client's own copy, whose digest the caller checked: the
    records are taken as written (their layout checked once, by the
    header). Raises ProtocolError (naming ``name``) for a copy of another
    form or layout, one cut short or expanding beyond ``limit`` bytes."""
    stream = _Inflated(data, name, limit)
    try:
        size = stream.length()
        if size is None:
            raise ValueError("empty")
        doc = json.loads(stream.take(size).decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("type") != KIND:
            raise ValueError("not a packed copy")
        if doc.get("layout") != RECORD_LAYOUT:
            raise ValueError(f"records of another layout ({doc.get('layout')!r})")
        generation, objects = doc["generation"], doc["objects"]
        if not isinstance(generation, int) or not isinstance(objects, dict):
            raise ValueError("not a packed copy")
        maps = _maps(doc["tables"])
    except (KeyError, TypeError, ValueError, OverflowError, UnicodeError, RecursionError) as exc:
        raise ProtocolError(f"{name}: not a valid packed copy ({exc})", name=name) from exc
    store = into.store
    smallest = PackedEntry.SMALLEST
    try:
        while (size := stream.length()) is not None:
            if size < smallest:
                raise ValueError("a record shorter than its head")
            record = PackedEntry(stream.take(size))
            if maps is not None:
                record = record.recoded(*maps)
            store(_interned(record.path), record)
    except (IndexError, ValueError, struct.error) as exc:
        raise ProtocolError(f"{name}: a record does not read ({exc})", name=name) from exc
    return Checkpoint(generation=generation, entries=(), objects=objects)
