"""Reading a page's index in pieces, into a compact table of its members.

A page index is read from the page's spool a bounded piece at a time and
its members kept in sorted arrays, not as one object each. These tests pin
that the reader accepts exactly what the strict whole-document decoding
accepted (canonical JSON, every field checked, members consecutive from 0),
and that a page whose index lists a member out of bounds, a member twice, or
is not in canonical form is refused with a ProtocolError naming the page.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escale.errors import ProtocolError
from escale.protocol.index import objects as io_names
from escale.protocol.index.objects import (
    MAX_GENERATION,
    PageIndexReader,
    PageMember,
    decode_page_index,
    encode_page_index,
)
from escale.protocol.index.pages import PageWriter, open_page
from escale.protocol.layout import MAX_VERSION
from escale.protocol.objects import FORMAT
from escale.protocol.sealer import Sealer
from escale.relay.file import FileRelay

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)


def _reference(data: bytes) -> tuple[int, list[PageMember]]:
    """The page index as a strict decoder of the whole JSON document reads
    it (what escale did before reading in pieces): raises ValueError for
    anything it must refuse."""
    doc = json.loads(data.decode("utf-8"))
    if not isinstance(doc, dict) or set(doc) != {"format", "type", "generation", "members"}:
        raise ValueError("fields")
    if json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8") != data:
        raise ValueError("not canonical")
    generation, items = doc["generation"], doc["members"]
    if doc["type"] != "page-index" or type(doc["format"]) is not int or doc["format"] != FORMAT \
            or type(generation) is not int or not 1 <= generation <= MAX_GENERATION or not isinstance(items, list):
        raise ValueError("header")
    members, end = [], 0
    for item in items:
        if not (isinstance(item, list) and len(item) == 6 and isinstance(item[0], str) and len(item[0]) == 32
                and all(c in "0123456789abcdef" for c in item[0])
                and all(type(x) is int and 0 <= x < 2**63 for x in item[1:5])
                and item[5] in ("none", "zlib") and 1 <= item[1] <= MAX_VERSION and item[2] == end):
            raise ValueError("member")
        members.append(PageMember(*item))
        end = item[2] + item[3]
    return generation, members


def _listed(members: list[tuple[str, int, int, int, str]]) -> list[PageMember]:
    listed, offset = [], 0
    for key, version, length, size, compression in members:
        listed.append(PageMember(key, version, offset, length, size, compression))  # type: ignore[arg-type]
        offset += length
    return listed


member_lists = st.lists(st.tuples(hex32, st.integers(1, 2**63 - 1), st.integers(0, 2**30), st.integers(0, 2**40),
                                  st.sampled_from(["none", "zlib"])), max_size=6)


@FUZZ
@given(members=member_lists, generation=st.integers(1, 2**63 - 1), data=st.data())
def test_the_piecewise_reader_accepts_exactly_what_the_whole_document_check_accepts(
        members: list[Any], generation: int, data: st.DataObject) -> None:
    encoded = encode_page_index(generation, _listed(members))
    assert decode_page_index(encoded, "pages/x") == _reference(encoded) == (generation, _listed(members))
    edit = data.draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
    at = data.draw(st.integers(0, len(encoded) - 1))
    byte = bytes([data.draw(st.sampled_from(list(b' 0123456789,[]{}":.-+eEabfnoz\\')))])
    mutated = {"flip": encoded[:at] + bytes([encoded[at] ^ data.draw(st.integers(1, 255))]) + encoded[at + 1:],
               "insert": encoded[:at] + byte + encoded[at:],
               "delete": encoded[:at] + encoded[at + 1:],
               "replace": encoded[:at] + byte + encoded[at + 1:]}[edit]
    try:
        expected = _reference(mutated)
    except (ValueError, TypeError, KeyError):
        with pytest.raises(ProtocolError, match="pages/x"):
            decode_page_index(mutated, "pages/x")
        return
    assert decode_page_index(mutated, "pages/x") == expected


@pytest.mark.parametrize("text", [
    b'{"format":1.0,"generation":1,"members":[],"type":"page-index"}',  # a number that only equals FORMAT
    b'{"format":1,"generation":1,"members":[],"type":"page-index"} ',
    b'{"format":1,"generation":01,"members":[],"type":"page-index"}',
    b'{"format":1,"generation":0,"members":[],"type":"page-index"}',
    b'{"format":1,"generation":9223372036854775808,"members":[],"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[],"type":"page-index","x":1}',
    b'{"format":1,"generation":1,"members":[[]],"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[["' + b"a" * 32 + b'",1,0,0,0,"none"],],"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[["' + b"A" * 32 + b'",1,0,0,0,"none"]],"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[["' + b"a" * 32 + b'",0,0,0,0,"none"]],"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[["' + b"a" * 32 + b'",1,1,0,0,"none"]],"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[["' + b"a" * 32 + b'",1,0,9223372036854775808,0,"none"]],'
    b'"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[["' + b"a" * 32 + b'",1,0,0,0,"gzip"]],"type":"page-index"}',
    b'{"format":1,"generation":1,"members":[["' + b"a" * 32 + b'",1,0,0,0,"none"]],"type":"page-index"',
    b'{"format":1,"generation":1,"members":[["' + b"a" * 32 + b'", 1,0,0,0,"none"]],"type":"page-index"}',
    b'{"generation":1,"format":1,"members":[],"type":"page-index"}',
    b"",
])
def test_what_is_not_a_canonical_page_index_is_refused(text: bytes) -> None:
    with pytest.raises(ProtocolError, match="pages/x"):
        decode_page_index(text, "pages/x")


def test_a_large_page_index_is_read_in_bounded_pieces() -> None:
    listed = _listed([(f"{i:032x}", 1 + i % 3, 100 + i, 4096, "zlib") for i in range(20_000)])
    encoded = encode_page_index(5, listed)
    source = io.BytesIO(encoded)
    asked: list[int] = []

    def read(size: int) -> bytes:
        asked.append(size)
        return source.read(size)

    reader = PageIndexReader(read, len(encoded), "pages/x")
    assert reader.generation == 5
    assert [PageMember(*m) for m in reader.members()] == listed
    assert max(asked) <= PageIndexReader.STEP and sum(asked) == len(encoded)


# --------------------------------------------------------------------------- whole pages on a relay


@pytest.fixture
def relay(tmp_path: Path) -> FileRelay:
    relay = FileRelay(str(tmp_path / "relay"))
    relay.open()
    relay.create_root()
    return relay


def _put_page(relay: FileRelay, sealer: Sealer, name: str, body: bytes, index: bytes) -> None:
    """Seal a page of ``body`` then ``index`` (a writer holding the key, so
    the envelope opens: only the page index is wrong)."""
    plain = body + index + struct.pack(">Q", len(index))
    sink = io.BytesIO()
    sealer.seal_stream(name, io.BytesIO(plain), sink)
    relay.put(name, io.BytesIO(sink.getvalue()))


def _index(generation: int, members: list[list[Any]]) -> bytes:
    return io_names.dump_document("page-index", {"generation": generation, "members": members})


def test_a_page_of_many_members_is_looked_up_by_key_and_version(relay: FileRelay, sealer: Sealer,
                                                                 tmp_path: Path) -> None:
    writer = PageWriter(str(tmp_path))
    try:
        # keys spread as hashes are (one per bucket of the look-up table),
        # and keys crowded into one bucket
        keys = [hashlib.md5(b"%d" % i).hexdigest() if i % 2 else f"{(i * 7919) % 3000:032x}" for i in range(3000)]
        written = [writer.add(key, 1 + i % 4, os.urandom(i % 50)) for i, key in enumerate(keys)]
        name = io_names.page_name(3)
        sink = io.BytesIO()
        writer.seal(sealer, name, 3, sink)
    finally:
        writer.close()
    relay.put(name, io.BytesIO(sink.getvalue()))
    page = open_page(relay.get, sealer, name, str(tmp_path))
    try:
        assert len(page.members) == 3000
        assert sorted(page.members) == sorted((m.key, m.version) for m in written)
        for member in written:
            assert page.members.get((member.key, member.version)) == member
            assert (member.key, member.version) in page.members
        key = written[0].key
        for absent in ((key, written[1].version + 4), (key.upper(), written[1].version), ("x" * 32, 1),
                       (key, True), (key, -1), (key, 2**64), (key,), key, (key[:-1], 1)):
            assert page.members.get(absent) is None  # type: ignore[arg-type]
            assert absent not in page.members
        with pytest.raises(KeyError):
            page.members[("0" * 32, 99)]
    finally:
        page.close()


KEY_A, KEY_B = "a" * 32, "b" * 32


@pytest.mark.parametrize(("body", "members", "refusal"), [
    # a member reaching past the page index's start
    (b"x" * 10, [[KEY_A, 1, 0, 4, 4, "none"], [KEY_B, 1, 4, 9, 9, "none"]], "do not fill the page"),
    # members that stop short of it (foreign bytes between)
    (b"x" * 10, [[KEY_A, 1, 0, 4, 4, "none"], [KEY_B, 1, 4, 3, 3, "none"]], "do not fill the page"),
    # a member starting elsewhere than where the previous one ended
    (b"x" * 10, [[KEY_A, 1, 0, 4, 4, "none"], [KEY_B, 1, 5, 5, 5, "none"]], "bad page member"),
    # the same key and version twice
    (b"x" * 10, [[KEY_A, 1, 0, 4, 4, "none"], [KEY_A, 1, 4, 6, 6, "none"]], "listed twice"),
    (b"x" * 10, [[KEY_A, 2, 0, 4, 4, "none"], [KEY_B, 1, 4, 2, 2, "none"], [KEY_A, 2, 6, 4, 4, "zlib"]],
     "listed twice"),
])
def test_a_page_index_out_of_bounds_or_with_a_member_twice_is_refused(
        relay: FileRelay, sealer: Sealer, tmp_path: Path, body: bytes, members: list[list[Any]],
        refusal: str) -> None:
    name = io_names.page_name(4)
    _put_page(relay, sealer, name, body, _index(4, members))
    with pytest.raises(ProtocolError, match=refusal) as raised:
        open_page(relay.get, sealer, name, str(tmp_path))
    assert name in str(raised.value)
    assert os.listdir(tmp_path) == ["relay"]  # no spool left behind


@pytest.mark.parametrize("index", [
    _index(4, [[KEY_A, 1, 0, 10, 10, "none"]]).replace(b",", b", ", 1),  # a space
    _index(4, [[KEY_A, 1, 0, 10, 10, "none"]]).replace(b'"format":1,', b'"format":1.0,'),
    b'{"type":"page-index","format":1,"generation":4,"members":[["' + KEY_A.encode()
    + b'",1,0,10,10,"none"]]}',  # keys out of order
    b'{"format":1,"generation":4,"members":[["' + KEY_A.encode() + b'",1,0,10,1e1,"none"]],"type":"page-index"}',
    b'{"format":1,"generation":4,"members":[["\\u0061' + b"a" * 31 + b'",1,0,10,10,"none"]],"type":"page-index"}',
    _index(4, [[KEY_A, 1, 0, 10, 10, "none"]]) + b"\n",
])
def test_a_page_index_not_in_canonical_form_is_refused(relay: FileRelay, sealer: Sealer, tmp_path: Path,
                                                       index: bytes) -> None:
    name = io_names.page_name(4)
    _put_page(relay, sealer, name, b"y" * 10, index)
    with pytest.raises(ProtocolError) as raised:
        open_page(relay.get, sealer, name, str(tmp_path))
    assert name in str(raised.value)


def test_a_page_index_naming_another_generation_is_refused(relay: FileRelay, sealer: Sealer, tmp_path: Path) -> None:
    name = io_names.page_name(4)
    _put_page(relay, sealer, name, b"z", _index(5, [[KEY_A, 1, 0, 1, 1, "none"]]))
    with pytest.raises(ProtocolError, match="names generation 5"):
        open_page(relay.get, sealer, name, str(tmp_path))
