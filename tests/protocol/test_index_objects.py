"""Property tests of the index layout's objects (doc/protocol.rst, "The index layout").

Every object (index delta, checkpoint, acknowledgement record, page index)
survives a round trip; any change of its compressed bytes, of its canonical
JSON, or of its name is refused with a ProtocolError naming the object, never
another exception; sealed under its name in an encrypted repository, any
change of the sealed bytes is an IntegrityError.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import zlib
from typing import Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escale.crypto import Envelope, create_repository_header, generate_key_file, load_secret
from escale.crypto.keys import KdfParams
from escale.errors import EscaleError, IntegrityError, ProtocolError
from escale.protocol.index import objects as io
from escale.protocol.index.objects import (
    AckRecord,
    Checkpoint,
    IndexDelta,
    IndexEntry,
    Location,
    PackedIndex,
    PageMember,
    decode_page_index,
    encode_page_index,
)
from escale.protocol.objects import MAX_NAME_BYTES

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
hex16 = st.text("0123456789abcdef", min_size=16, max_size=16)
generations = st.integers(1, 10**13)
versions = st.integers(1, 2**63 - 1)
_component = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1, max_size=20
).filter(lambda c: c not in (".", "..") and len(c.encode()) <= MAX_NAME_BYTES)
paths = st.lists(_component, min_size=1, max_size=4).map("/".join)


@st.composite
def entries(draw: st.DrawFn, path: str | None = None) -> IndexEntry:
    key = draw(hex32)
    version = draw(versions)
    kind: Literal["file", "tombstone"] = draw(st.sampled_from(["file", "tombstone"]))
    location = None
    if kind == "file":
        if draw(st.booleans()):
            location = Location(f"big/{key}.{version:010d}.{draw(hex16)}", 0, draw(st.integers(0, 2**40)),
                                draw(st.sampled_from(["none", "zlib"])))
        else:
            location = Location(f"pages/{draw(generations):012d}.{draw(hex16)}", draw(st.integers(0, 2**40)),
                                draw(st.integers(0, 2**30)), draw(st.sampled_from(["none", "zlib"])))
    return IndexEntry(
        path=path if path is not None else draw(paths), key=key, version=version, generation=draw(generations),
        lease=draw(st.integers(0, 10**6)), kind=kind, pusher=draw(hex32), pusher_label=draw(st.text(max_size=10)),
        size=draw(st.integers(0, 2**40)), mtime_ns=draw(st.integers(-(2**62), 2**62)),
        checksum=draw(st.none() | hex32.map(lambda h: "sha256:" + h * 2)),
        receivers=tuple(draw(st.lists(hex32, max_size=3))), puller_count=draw(st.none() | st.integers(0, 9)),
        location=location)


entry_lists = st.lists(paths, max_size=5, unique=True).flatmap(
    lambda ps: st.tuples(*[entries(p) for p in sorted(ps)]))
object_maps = st.dictionaries(
    st.builds(lambda g, r: f"pages/{g:012d}.{r}", generations, hex16), st.integers(0, 2**40), max_size=3)


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, Any]:
    kind = draw(st.sampled_from(["delta", "checkpoint", "ack"]))
    generation = draw(generations)
    if kind == "delta":
        obj: Any = IndexDelta(generation, draw(st.integers(0, 10**6)), draw(hex32), draw(entry_lists),
                              draw(object_maps), tuple(sorted(draw(object_maps))))
        return io.delta_name(generation), obj
    if kind == "checkpoint":
        return io.checkpoint_name(generation), Checkpoint(generation, draw(entry_lists), draw(object_maps))
    client = draw(hex32)
    missing = tuple(sorted(set(draw(st.lists(st.tuples(hex32, versions), max_size=4)))))
    return io.ack_record_name(client, draw(generations)), AckRecord(client, draw(st.integers(0, 10**13)), missing)


def _decode(obj: Any, data: bytes, name: str) -> Any:
    try:
        return type(obj).decode(data, name)
    except EscaleError as exc:
        refused = exc
    assert isinstance(refused, ProtocolError) and name in str(refused)
    return None


@FUZZ
@given(doc=documents(), data=st.data())
def test_round_trip_and_any_mutation_is_refused_or_another_valid_object(doc: tuple[str, Any],
                                                                         data: st.DataObject) -> None:
    name, obj = doc
    encoded = obj.encode()
    assert type(obj).decode(encoded, name) == obj
    # the compressed bytes: a change is refused, or decodes to a valid object
    index = data.draw(st.integers(0, len(encoded) - 1))
    changed = encoded[:index] + bytes([encoded[index] ^ data.draw(st.integers(1, 255))]) + encoded[index + 1:]
    _decode(obj, changed, name)
    _decode(obj, encoded[:index], name)
    # the JSON inside: any byte change gives a refusal or a different object
    plain = zlib.decompress(encoded)
    at = data.draw(st.integers(0, len(plain) - 1))
    mutated = plain[:at] + bytes([plain[at] ^ data.draw(st.integers(1, 255))]) + plain[at + 1:]
    again = _decode(obj, zlib.compress(mutated), name)
    assert again is None or again != obj


@FUZZ
@given(doc=documents())
def test_objects_are_bound_to_their_names(doc: tuple[str, Any]) -> None:
    name, obj = doc
    others = {"index/000000000007", "index/000000000007.full", "clients/" + "e" * 32 + ".ack.000000000001"} - {name}
    for other in others:
        with pytest.raises(ProtocolError):
            type(obj).decode(obj.encode(), other)


@FUZZ
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_refused(data: bytes) -> None:
    for cls, name in ((IndexDelta, "index/000000000001"), (Checkpoint, "index/000000000001.full"),
                      (AckRecord, "clients/" + "a" * 32 + ".ack.000000000001")):
        for blob in (data, zlib.compress(data)):
            try:
                cls.decode(blob, name)
            except ProtocolError:
                pass


@FUZZ
@given(doc=st.dictionaries(st.sampled_from(["format", "type", "generation", "lease", "writer", "entries",
                                             "added", "dropped", "objects", "client", "missing", "x"]),
                           st.recursive(st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8),
                                        lambda inner: st.lists(inner, max_size=3)
                                        | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10),
                           max_size=10),
       kind=st.sampled_from(["index-delta", "index-checkpoint", "index-ack"]))
def test_arbitrary_documents_refused_or_decoded(doc: dict[str, Any], kind: str) -> None:
    doc.update({"format": 1, "type": kind})
    data = zlib.compress(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode())
    for cls, name in ((IndexDelta, "index/000000000001"), (Checkpoint, "index/000000000001.full"),
                      (AckRecord, "clients/" + "a" * 32 + ".ack.000000000001")):
        try:
            cls.decode(data, name)
        except ProtocolError:
            pass


def test_a_compression_bomb_is_refused_unexpanded() -> None:
    # refused at its first byte that is not canonical (read in pieces), or
    # once it passes the bound: never expanded whole
    bomb = zlib.compress(b" " * (io.MAX_INDEX_BYTES + 10), 9)
    with pytest.raises(ProtocolError, match=r"expands beyond|canonical form"):
        IndexDelta.decode(bomb, "index/000000000001")
    canonical_start = zlib.compress(b'{"added":{},"dropped":[],"entries":[{"checksum":"' + b"a" * io.MAX_INDEX_BYTES, 9)
    with pytest.raises(ProtocolError, match="expands beyond"):
        IndexDelta.decode(canonical_start, "index/000000000001")


@FUZZ
@given(members=st.lists(st.tuples(hex32, versions, st.integers(0, 2**30), st.integers(0, 2**40),
                                  st.sampled_from(["none", "zlib"])), max_size=5),
       generation=generations, data=st.data())
def test_page_index_round_trip_and_mutations(members: list[Any], generation: int, data: st.DataObject) -> None:
    listed, offset = [], 0
    for key, version, length, size, compression in members:
        listed.append(PageMember(key, version, offset, length, size, compression))
        offset += length
    encoded = encode_page_index(generation, listed)
    assert decode_page_index(encoded, "pages/x") == (generation, listed)
    at = data.draw(st.integers(0, len(encoded) - 1))
    mutated = encoded[:at] + bytes([encoded[at] ^ data.draw(st.integers(1, 255))]) + encoded[at + 1:]
    try:
        assert decode_page_index(mutated, "pages/x") != (generation, listed)
    except ProtocolError:
        pass


def test_entries_pointing_elsewhere_are_refused() -> None:
    key = "a" * 32
    good = IndexEntry("a/b", key, 3, 1, 1, "file", "b" * 32, "x", 1, 0, None, (), None,
                      Location(f"big/{key}.0000000003.{'c' * 16}", 0, 1, "none"))
    good.check("index/000000000001")
    for location in (Location(f"big/{'d' * 32}.0000000003.{'c' * 16}", 0, 1, "none"),  # another path's
                     Location(f"big/{key}.0000000004.{'c' * 16}", 0, 1, "none"),  # another version's
                     Location("lease/000000000001", 0, 1, "none"), Location("escale.repo", 0, 1, "none"),
                     Location("pages/1.cccccccccccccccc", 0, 1, "none")):
        delta = IndexDelta(1, 1, "b" * 32, (dataclasses.replace(good, location=location),), {}, ())
        with pytest.raises(ProtocolError):
            IndexDelta.decode(delta.encode(), "index/000000000001")
    for path in ("../x", "/abs", "a//b", "a/\x00"):
        delta = IndexDelta(1, 1, "b" * 32, (dataclasses.replace(good, path=path),), {}, ())
        with pytest.raises(ProtocolError, match="unsafe path"):
            IndexDelta.decode(delta.encode(), "index/000000000001")


def test_names_parse_back_and_foreign_spellings_do_not() -> None:
    assert io.parse_index_name(io.delta_name(7)) == (7, False)
    assert io.parse_index_name(io.checkpoint_name(10**12)) == (10**12, True)
    for foreign in ("index/7", "index/0000000000007", "index/000000000000", "index/000000000007.ful",
                    "pages/000000000007"):
        assert io.parse_index_name(foreign) is None
    assert io.is_page_name(io.page_name(5)) and not io.is_page_name("pages/000000000005.xyz")
    key = "f" * 32
    assert io.parse_big_name(io.big_name(key, 9)) == (key, 9)
    assert io.parse_big_name(f"big/{key}.9.{'0' * 16}") is None
    assert io.parse_ack_record_name(io.ack_record_name(key, 3)) == (key, 3)
    assert io.parse_ack_record_name(f"clients/{key}") is None
    assert io.parse_ack_record_name(f"clients/{key}.ack.3") is None


@pytest.fixture(scope="module")
def envelope(tmp_path_factory: pytest.TempPathFactory) -> Envelope:
    path = tmp_path_factory.mktemp("index-key") / "escale.key"
    generate_key_file(str(path))
    return create_repository_header("aes-256-gcm", load_secret(str(path), None), kdf=KdfParams(n=2**10, r=8, p=1))[1]


@FUZZ
@given(doc=documents(), data=st.data())
def test_sealed_index_objects_refuse_any_change_and_any_other_name(envelope: Envelope, doc: tuple[str, Any],
                                                                   data: st.DataObject) -> None:
    name, obj = doc
    sealed = envelope.seal(name, obj.encode())
    assert type(obj).decode(envelope.open(name, sealed), name) == obj
    at = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(IntegrityError):
        envelope.open(name, sealed[:at] + bytes([sealed[at] ^ 1]) + sealed[at + 1:])
    with pytest.raises(IntegrityError):
        envelope.open(name, sealed[:at])
    with pytest.raises(IntegrityError):
        envelope.open("index/000000000001" if name != "index/000000000001" else "index/000000000002", sealed)


@FUZZ
@given(doc=documents())
def test_documents_written_in_pieces_are_the_canonical_documents(doc: tuple[str, Any]) -> None:
    # the encoders build documents entry batch by entry batch, and the
    # decoders read them piece by piece: same bytes, same meaning as the
    # whole-document forms (canonical JSON of every field at once)
    name, obj = doc
    plain = zlib.decompress(obj.encode())
    if isinstance(obj, Checkpoint):
        whole = {"generation": obj.generation, "objects": obj.objects,
                 "entries": [e.to_json() for e in sorted(obj.entries, key=lambda e: e.path)]}
        assert plain == io.dump_document("index-checkpoint", whole) == obj.document()
        assert Checkpoint.decode_trusted(obj.encode(), name) == obj
        assert Checkpoint.decode(obj.encode(), name) == obj
    elif isinstance(obj, IndexDelta):
        whole = {"generation": obj.generation, "lease": obj.lease, "writer": obj.writer, "added": obj.added,
                 "dropped": sorted(obj.dropped),
                 "entries": [e.to_json() for e in sorted(obj.entries, key=lambda e: e.path)]}
        assert plain == io.dump_document("index-delta", whole)



@FUZZ
@given(doc=documents(), step=st.sampled_from([1, 2, 3, 7, 64]))
def test_documents_read_in_tiny_pieces_decode_as_whole(doc: tuple[str, Any], step: int) -> None:
    # the streamed reader inflates a bounded piece at a time: any value (a
    # number, a string with its escapes, a key) may be cut anywhere between
    # pieces; each cut must give the same index, checked or trusted, and
    # the same materialised index when put straight into it
    name, obj = doc
    if isinstance(obj, AckRecord):
        return
    data = obj.encode()
    kept = io._StreamedDocument.STEP
    io._StreamedDocument.STEP = step
    try:
        if isinstance(obj, IndexDelta):
            assert IndexDelta.decode(data, name) == obj
            return
        assert Checkpoint.decode(data, name) == obj
        assert Checkpoint.decode_trusted(data, name) == obj
        for decode in (Checkpoint.decode, Checkpoint.decode_trusted):
            into = PackedIndex()
            assert decode(data, name, into=into).generation == obj.generation
            assert dict(into) == {e.path: e for e in obj.entries}
    finally:
        io._StreamedDocument.STEP = kept

def test_large_documents_cross_piece_boundaries() -> None:
    entries = tuple(IndexEntry(
        path=f"d/{i:06d}-" + "\u00e9" * (i % 7), key=f"{i:032x}", version=1 + i % 3, generation=1, lease=1,
        kind="file", pusher="a" * 32, pusher_label="A", size=i, mtime_ns=10**18 + i,
        checksum="sha256:" + f"{i:064x}", receivers=("b" * 32,), puller_count=None,
        location=Location("pages/000000000001." + "c" * 16, i, 1, "none")) for i in range(20000))
    checkpoint = Checkpoint(1, entries, {"pages/000000000001." + "c" * 16: 5})
    encoded = checkpoint.encode()
    assert zlib.decompress(encoded) == io.dump_document("index-checkpoint", {
        "generation": 1, "objects": checkpoint.objects, "entries": [e.to_json() for e in entries]})
    for decoded in (Checkpoint.decode(encoded, "index/000000000001.full"),
                    Checkpoint.decode_trusted(encoded, "index/000000000001.full")):
        assert decoded == checkpoint
        assert len({id(e.pusher) for e in decoded.entries}) == 1  # one shared client id


@FUZZ
@given(members=st.lists(st.tuples(hex32, versions, st.integers(0, 2**30), st.integers(0, 2**40),
                                  st.sampled_from(["none", "zlib"])), max_size=40),
       generation=generations)
def test_page_index_written_in_pieces_is_the_canonical_page_index(members: list[Any], generation: int) -> None:
    # a page's index is written into its spool piece by piece: the same bytes
    # as the whole document (what every reader of a page decodes)
    listed, offset = [], 0
    for key, version, length, size, compression in members:
        listed.append(PageMember(key, version, offset, length, size, compression))
        offset += length
    whole = io.dump_document("page-index", {"generation": generation, "members": [
        [m.key, m.version, m.offset, m.length, m.size, m.compression] for m in listed]})
    assert b"".join(io.page_index_pieces(generation, listed)) == whole == encode_page_index(generation, listed)
    assert decode_page_index(whole, "pages/x") == (generation, listed)
    # as a PageWriter keeps it: the frame around each member's text, written as it comes
    head, tail = io.page_index_frame(generation)
    assert head + b",".join(io.page_member_text(m) for m in listed) + tail == whole


def test_a_large_page_index_crosses_piece_boundaries() -> None:
    listed = [PageMember(f"{i:032x}", 1 + i % 5, i * 3, 3, 7, "zlib" if i % 2 else "none") for i in range(5000)]
    pieces = list(io.page_index_pieces(9, listed))
    assert len(pieces) > 3  # written a batch of members at a time
    assert b"".join(pieces) == io.dump_document("page-index", {"generation": 9, "members": [
        [m.key, m.version, m.offset, m.length, m.size, m.compression] for m in listed]})


@FUZZ
@given(doc=documents())
def test_the_local_copy_of_the_index_decodes_to_equal_entries(doc: tuple[str, Any]) -> None:
    # paths and checksums of the trusted copy are interned (shared with the
    # scan and the base): the same values, compared field by field
    name, obj = doc
    if not isinstance(obj, Checkpoint):
        return
    decoded = Checkpoint.decode_trusted(obj.encode(), name)
    assert decoded == obj
    for entry in decoded.entries:
        assert entry.path is sys.intern(entry.path)
        assert entry.checksum is None or entry.checksum is sys.intern(entry.checksum)


_odd_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.text(max_size=40),
                        hex32, st.just("file"), st.just("tombstone"), st.just("zlib"), st.just([]),
                        st.lists(hex32, max_size=2), st.just({}), st.just(-1), st.just(0), st.just(2**63))


@FUZZ
@given(entry=entries(), data=st.data())
def test_an_index_entry_is_accepted_exactly_when_every_rule_holds(entry: IndexEntry, data: st.DataObject) -> None:
    """Index entries are checked by a fast path (the bulk of an index) that
    hands anything doubtful to the full checks: a delta whose entry has one
    field changed (to any value, or removed, or one added) decodes to the
    same entry as the full checks make, or is refused by them."""
    doc = entry.to_json()
    if data.draw(st.booleans()):
        field = data.draw(st.sampled_from(sorted(doc)))
        if data.draw(st.integers(0, 9)) == 0:
            del doc[field]
        else:
            doc[field] = data.draw(_odd_values)
    elif doc["location"] is not None and data.draw(st.booleans()):
        doc["location"] = {**doc["location"], data.draw(st.sampled_from(sorted(doc["location"]))):
                           data.draw(_odd_values)}
    elif data.draw(st.booleans()):
        doc["deliberate"] = data.draw(_odd_values)
    try:
        expected: IndexEntry | None = IndexEntry.from_json(doc, "index/000000000001")
    except ProtocolError:
        expected = None
    text = json.dumps({"added": {}, "dropped": [], "entries": [doc], "format": 1, "generation": 1, "lease": 1,
                       "type": "index-delta", "writer": "b" * 32},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if expected is None:
        with pytest.raises(ProtocolError):
            IndexDelta.decode(zlib.compress(text), "index/000000000001")
    else:
        assert IndexDelta.decode(zlib.compress(text), "index/000000000001").entries == (expected,)


def test_a_name_accepted_in_one_role_is_refused_in_another() -> None:
    """Names already accepted in a document are not matched again, but only
    in the role they were accepted in: a client id is no page, a page name
    no client id."""
    page = "pages/000000000001.0123456789abcdef"
    first = IndexEntry(path="a", key="a" * 32, version=1, generation=1, lease=1, kind="file", pusher="b" * 32,
                       pusher_label="", size=1, mtime_ns=0, checksum=None, receivers=("c" * 32,),
                       puller_count=None, location=Location(page, 0, 1, "none"))
    for second in (dataclasses.replace(first, path="b", location=Location("b" * 32, 0, 1, "none")),
                   dataclasses.replace(first, path="b", location=Location("c" * 32, 0, 1, "none")),
                   dataclasses.replace(first, path="b", receivers=(page,)),
                   dataclasses.replace(first, path="b", pusher=page)):
        delta = IndexDelta(1, 1, "b" * 32, (first, second), {}, ())
        with pytest.raises(ProtocolError):
            IndexDelta.decode(delta.encode(), "index/000000000001")
    assert IndexDelta.decode(IndexDelta(1, 1, "b" * 32, (first,), {}, ()).encode(),
                             "index/000000000001").entries == (first,)
