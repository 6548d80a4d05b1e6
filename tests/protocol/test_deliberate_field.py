"""The optional ``deliberate`` field of tombstones (placeholder and index entry).

It is written only as ``true`` on a tombstone; objects without it read as
before (``deliberate`` false), and any other spelling is refused with a
ProtocolError naming the object, as an unknown field is.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from escale.errors import ProtocolError
from escale.protocol import layout
from escale.protocol.index.objects import IndexDelta, IndexEntry, Location
from escale.protocol.objects import Placeholder

KEY = "a" * 32
TOMBSTONE = Placeholder(path="d/f.txt", key=KEY, version=2, generation=1, kind="tombstone", pusher="b" * 32,
                        pusher_label="lab@pc", size=0, mtime_ns=0, checksum=None, payload=None, receivers=())
NAME = layout.meta_name(KEY, 2)
DELTA = "index/000000000001"


def _respelled(data: bytes, **changes: object) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_placeholder_flag_round_trips_and_is_absent_when_false() -> None:
    assert b"deliberate" not in TOMBSTONE.encode()
    assert Placeholder.decode(TOMBSTONE.encode(), NAME) == TOMBSTONE
    flagged = replace(TOMBSTONE, deliberate=True)
    assert b'"deliberate":true' in flagged.encode()
    assert Placeholder.decode(flagged.encode(), NAME).deliberate


@pytest.mark.parametrize("value", [False, 1, "yes", None])
def test_placeholder_flag_other_than_true_is_refused(value: object) -> None:
    with pytest.raises(ProtocolError, match="deliberate"):
        Placeholder.decode(_respelled(TOMBSTONE.encode(), deliberate=value), NAME)


def test_only_a_tombstone_is_deliberate() -> None:
    file = replace(TOMBSTONE, kind="file", version=2, payload=layout.data_name(KEY, 2), size=1)
    assert Placeholder.decode(file.encode(), NAME) == file
    with pytest.raises(ProtocolError, match="only a tombstone"):
        Placeholder.decode(replace(file, deliberate=True).encode(), NAME)


def _entry(**changes: object) -> IndexEntry:
    entry = IndexEntry("d/f.txt", KEY, 2, 1, 1, "tombstone", "b" * 32, "lab@pc", 0, 0, None, (), None, None)
    return replace(entry, **changes)  # type: ignore[arg-type]


def _delta(entry: IndexEntry) -> bytes:
    return IndexDelta(1, 1, "b" * 32, (entry,), {}, ()).encode()


def test_index_entry_flag_round_trips_and_is_absent_when_false() -> None:
    assert "deliberate" not in _entry().to_json()
    assert IndexDelta.decode(_delta(_entry()), DELTA).entries[0].deliberate is False
    decoded = IndexDelta.decode(_delta(_entry(deliberate=True)), DELTA).entries[0]
    assert decoded.deliberate and decoded.to_placeholder().deliberate


def test_index_entry_flag_is_refused_on_a_file_or_when_not_true() -> None:
    big = Location(f"big/{KEY}.0000000002.{'c' * 16}", 0, 1, "none")
    with pytest.raises(ProtocolError, match="only a tombstone"):
        IndexDelta.decode(_delta(_entry(kind="file", location=big, deliberate=True)), DELTA)
    doc = _entry().to_json()
    doc["deliberate"] = False
    with pytest.raises(ProtocolError, match="deliberate"):
        IndexEntry.from_json(doc, DELTA)
