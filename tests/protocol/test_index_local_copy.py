"""The local copy of the index in its packed form (issue 11: the pass after
a small change loads the index without decoding every entry's JSON).

What these prove: any index whose entries all pack is written and loaded
back as the same entries (every field), generation and objects; a copy
made where the code tables gave other codes (another process) is loaded
with each record's codes rewritten, and reads as the same entries; an index
holding an entry that does not pack is not written in this form; a copy of
another record layout, cut short, expanding beyond its limit or not a copy
at all is refused with ProtocolError (the repository then reads the index
again from the relay: tests/protocol/test_index_repository.py).
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escale.errors import ProtocolError
from escale.protocol.index import local_copy
from escale.protocol.index.objects import (
    LOCAL_LEVEL,
    RECORD_LAYOUT,
    IndexEntry,
    PackedEntry,
    PackedIndex,
    compress_stream,
    pack,
)
from escale.protocol.packed import ALGORITHMS, CLIENT_IDS, LABELS, RECEIVERS
from tests.protocol.test_index_packed import FUZZ, _same, _typical, entries

LIMIT = 1 << 30
OBJECTS = {"pages/000000000007.0123456789abcdef": 4096}


def _index(found: list[IndexEntry]) -> PackedIndex:
    index = PackedIndex()
    for entry in found:
        index.put(entry)
    return index


def _written(index: PackedIndex, generation: int = 9, objects: dict[str, int] | None = None) -> bytes:
    records = [record for _path, record in sorted(index.stored_items())]
    return b"".join(compress_stream(local_copy.packed_copy_pieces(generation, objects or OBJECTS, records),
                                    LOCAL_LEVEL))


def _read(data: bytes) -> tuple[Any, PackedIndex]:
    into = PackedIndex()
    return local_copy.read_packed_copy(data, "the copy", limit=LIMIT, into=into), into


@FUZZ
@given(st.lists(entries(), max_size=20), st.integers(0, 2**40))
def test_an_index_that_packs_whole_is_loaded_back_as_written(found: list[IndexEntry], generation: int) -> None:
    index = _index(found)
    if not local_copy.packs_whole(index.stored_values()):
        assert any(type(index.stored(path)) is not PackedEntry for path in index)
        return
    checkpoint, loaded = _read(_written(index, generation))
    assert checkpoint.generation == generation and checkpoint.objects == OBJECTS and checkpoint.entries == ()
    assert sorted(loaded) == sorted(index)
    for path in index:
        assert loaded.stored(path) == index.stored(path)
        _same(index[path], loaded[path])


def test_many_records_cross_the_pieces_and_the_inflated_steps() -> None:
    index = _index([_typical(path=f"folder/{number:06d}", version=number + 1) for number in range(20_000)])
    _checkpoint, loaded = _read(_written(index))
    assert len(loaded) == 20_000 and loaded.stored("folder/012345") == index.stored("folder/012345")


def _recoded_copy(index: PackedIndex) -> bytes:
    """A copy of ``index`` as a process whose tables hold the values in
    reverse order would have written it: its header lists them so, and its
    records carry those codes."""
    tables = {"clients": CLIENT_IDS.values, "labels": LABELS.values, "receivers": RECEIVERS.values,
              "algorithms": ALGORITHMS.values}
    reversed_tables = {name: list(reversed(values)) for name, values in tables.items()}
    # the code of value number c there: len - 1 - c
    maps = [[len(values) - 1 - code for code in range(len(values))] for values in tables.values()]
    records = [cast_record(index.stored(path)).recoded(*maps) for path in sorted(index)]
    header = json.dumps({
        "type": local_copy.KIND, "layout": RECORD_LAYOUT, "generation": 3, "objects": {},
        "tables": {**reversed_tables, "receivers": [list(group) for group in reversed_tables["receivers"]]}},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    body = struct.pack("<I", len(header)) + header + b"".join(struct.pack("<I", len(r)) + r for r in records)
    return zlib.compress(body)


def cast_record(stored: object) -> PackedEntry:
    assert isinstance(stored, PackedEntry)
    return stored


def test_a_copy_written_with_other_codes_is_loaded_with_this_process_codes() -> None:
    index = _index([
        _typical(path="one", pusher="c" * 32, pusher_label="first", receivers=("d" * 32,)),
        _typical(path="two", pusher="d" * 32, pusher_label="second", receivers=("c" * 32, "e" * 32),
                 checksum="md5:" + "0f" * 16),
        _typical(path="three", checksum=None, location=None, kind="tombstone", size=0, mtime_ns=0),
    ])
    assert len(CLIENT_IDS.values) > 1 and len(ALGORITHMS.values) > 1  # so that reversing changes codes
    checkpoint, loaded = _read(_recoded_copy(index))
    assert checkpoint.generation == 3
    for path in index:
        assert loaded.stored(path) == index.stored(path)
        _same(index[path], loaded[path])


def test_an_index_with_an_entry_that_does_not_pack_is_not_written_packed() -> None:
    index = _index([_typical(path="fine"), _typical(path="odd", checksum="not a checksum")])
    assert type(index.stored("odd")) is IndexEntry and not local_copy.packs_whole(index.stored_values())
    with pytest.raises(TypeError):
        list(local_copy.packed_copy_pieces(1, {}, [record for _path, record in sorted(index.stored_items())]))


def _body(header: dict[str, Any], records: list[bytes]) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<I", len(text)) + text + b"".join(struct.pack("<I", len(r)) + r for r in records)


def _unfinished(body: bytes) -> bytes:
    """``body`` compressed without the end of the stream (cut after a whole record)."""
    deflater = zlib.compressobj()
    return deflater.compress(body) + deflater.flush(zlib.Z_SYNC_FLUSH)


def _refused() -> dict[str, bytes]:
    good = _written(_index([_typical(path=f"p{n}") for n in range(50)]))
    record = cast_record(pack(_typical()))
    tables: dict[str, list[Any]] = {"clients": [], "labels": [], "receivers": [], "algorithms": []}
    header = {"type": local_copy.KIND, "layout": RECORD_LAYOUT, "generation": 1, "objects": {}, "tables": tables}
    return {
        "garbage": b"not compressed at all",
        "empty": zlib.compress(b""),
        "cut": good[: len(good) // 2],
        "record cut": zlib.compress(zlib.decompress(good)[:-3]),
        "stream without its end": _unfinished(zlib.decompress(good)),
        "followed by foreign bytes": good + b"more",
        "other layout": zlib.compress(_body({**header, "layout": "entry-0"}, [])),
        "other type": zlib.compress(_body({**header, "type": "index-checkpoint"}, [])),
        "no tables": zlib.compress(_body({k: v for k, v in header.items() if k != "tables"}, [])),
        "a code beyond the tables": zlib.compress(_body({**header, "tables": {**tables, "clients": ["x" * 32]}},
                                                        [record])),
        "a record shorter than a head": zlib.compress(_body(header, [b"short"])),
    }


REFUSED = _refused()


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_what_is_not_a_copy_of_this_layout_is_refused(what: str) -> None:
    with pytest.raises(ProtocolError, match="the copy"):
        _read(REFUSED[what])


def test_a_copy_that_expands_beyond_its_limit_is_refused() -> None:
    good = _written(_index([_typical(path=f"p{n}") for n in range(50)]))
    with pytest.raises(ProtocolError, match="expands beyond"):
        local_copy.read_packed_copy(good, "the copy", limit=1000, into=PackedIndex())


def test_a_record_recoded_names_the_values_its_new_codes_name() -> None:
    """:meth:`PackedEntry.recoded` rewrites the pusher, label, receivers
    and checksum algorithm codes through the maps, and nothing else."""
    other, one = "f" * 32, "e" * 32
    record = cast_record(pack(_typical(pusher=one, pusher_label="one", receivers=(one,),
                                       checksum="md5:" + "0f" * 16)))
    codes = {"one": CLIENT_IDS.code(one), "other": CLIENT_IDS.code(other), "label": LABELS.code("one"),
             "other label": LABELS.code("other"), "group": RECEIVERS.code((one,)),
             "other group": RECEIVERS.code((other, one)), "md5": ALGORITHMS.code("md5"),
             "sha1": ALGORITHMS.code("sha1")}
    clients, labels, groups, algorithms = maps = [
        list(range(len(table.values))) for table in (CLIENT_IDS, LABELS, RECEIVERS, ALGORITHMS)]
    clients[codes["one"]] = codes["other"]
    labels[codes["label"]] = codes["other label"]
    groups[codes["group"]] = codes["other group"]
    algorithms[codes["md5"]] = codes["sha1"]
    recoded = record.recoded(*maps)
    assert (recoded.pusher, recoded.pusher_label, recoded.receivers) == (other, "other", (other, one))
    assert recoded.checksum == "sha1:" + "0f" * 16
    expected = _typical(pusher=other, pusher_label="other", receivers=(other, one), checksum="sha1:" + "0f" * 16)
    _same(expected, recoded)
    assert record.recoded(*[list(range(len(m))) for m in maps]) == record
