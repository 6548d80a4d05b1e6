"""The index layout's materialised index held compactly (issues 10 and 11).

What these prove: an index entry packed into its one-``bytes`` record
(:class:`PackedEntry`) reads back as exactly the entry packed, field by
field and whole (types included), and as the same placeholder, JSON and
brief; an entry whose fields would not come back exactly (odd checksum
text, non-canonical object names, numbers beyond the record's widths, a
path that does not survive UTF-8...) is kept as the entry object itself, so
nothing depends on the compact form covering everything; the packed index
reads as a dict of entries; a checkpoint decoded into it gives the same
index as the checkpoint's entries, trusted or checked; and a repository
that pushed and read keeps its entries packed and serves them as before.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escale.protocol.index.objects import (
    Checkpoint,
    IndexEntry,
    Location,
    PackedEntry,
    PackedIndex,
    pack,
)
from escale.protocol.index.repository import IndexRepository
from escale.protocol.repository import LocalVersion
from escale.protocol.sealer import Sealer
from escale.relay.file import FileRelay

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
A, B = "a" * 32, "b" * 32
KEY = "0123456789abcdef0123456789abcdef"
PAGE = "pages/000000000007.0123456789abcdef"

hex_text = st.text("0123456789abcdef", min_size=0, max_size=20)
hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
hex16 = st.text("0123456789abcdef", min_size=16, max_size=16)
# numbers inside and outside the record's widths (and negative ones)
numbers = st.one_of(st.integers(0, 2**32 - 1), st.integers(-(2**70), 2**70))
paths = st.one_of(st.text(min_size=1, max_size=40),
                  st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), min_size=1, max_size=4),
                  st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4))
checksums = st.one_of(
    st.none(),
    st.builds(lambda alg, digits: f"{alg}:{digits}", st.sampled_from(["sha256", "sha1", "md5", "blake2b"]),
              st.text("0123456789abcdef", min_size=0, max_size=64).filter(lambda t: len(t) % 2 == 0)),
    st.text(max_size=30),  # odd text: kept as the entry object
    st.builds(lambda digits: "sha256:" + digits, st.text("0123456789ABCDEF ", min_size=2, max_size=8)))
clients = st.one_of(st.just(A), st.just(B), st.text(max_size=10))


@st.composite
def object_names(draw: Any, key: str, version: int) -> str:
    name: str = draw(st.one_of(
        st.builds(lambda g, t: f"pages/{g:012d}.{t}", st.integers(0, 2**40), hex16),
        st.builds(lambda g, t: f"pages/{g:014d}.{t}", st.integers(0, 2**32), hex16),  # not canonical
        st.builds(lambda t: f"big/{key}.{version:010d}.{t}" if version >= 0 else f"big/{t}", hex16),
        st.builds(lambda k, t: f"big/{k}.0000000001.{t}", hex32, hex16),  # another version's
        st.text(max_size=40)))
    return name


@st.composite
def entries(draw: Any) -> IndexEntry:
    key = draw(st.one_of(hex32, st.text(max_size=34), st.text("0123456789ABCDEF", min_size=32, max_size=32)))
    version = draw(numbers)
    kind = draw(st.sampled_from(["file", "tombstone", "other"]))
    location = None
    if draw(st.booleans()) if kind == "other" else kind == "file":
        location = Location(draw(object_names(key, version)), draw(numbers), draw(numbers),
                            draw(st.sampled_from(["none", "zlib", "lzma"])))
    return IndexEntry(
        path=draw(paths), key=key, version=version, generation=draw(numbers), lease=draw(numbers),
        kind=kind, pusher=draw(clients), pusher_label=draw(st.text(max_size=12)), size=draw(numbers),
        mtime_ns=draw(numbers), checksum=draw(checksums),
        receivers=tuple(draw(st.lists(clients, max_size=3))), puller_count=draw(st.one_of(st.none(), numbers)),
        location=location, deliberate=draw(st.booleans()))


def _same(entry: IndexEntry, read: Any) -> None:
    """``read`` (an entry or a record) reads as ``entry``, every field with its type."""
    for field in dataclasses.fields(IndexEntry):
        mine, theirs = getattr(entry, field.name), getattr(read, field.name)
        assert mine == theirs and type(mine) is type(theirs), field.name
    assert read.object_name == (entry.location.object if entry.location is not None else None)
    assert read.brief() == entry.brief()


def _typical(**changes: Any) -> IndexEntry:
    entry = IndexEntry(
        path="docs/report é.txt", key=KEY, version=3, generation=7, lease=2, kind="file", pusher=A,
        pusher_label="laptop", size=4096, mtime_ns=1_700_000_000_123_456_789, checksum="sha256:" + "ab" * 32,
        receivers=(B,), puller_count=None, location=Location(PAGE, 100, 200, "zlib"))
    return dataclasses.replace(entry, **changes)


@pytest.mark.parametrize("entry", [
    _typical(),
    _typical(puller_count=2, checksum=None, location=Location(PAGE, 0, 2**40, "none")),
    _typical(location=Location(f"big/{KEY}.{3:010d}.fedcba9876543210", 0, 12345, "zlib")),
    _typical(kind="tombstone", location=None, size=0, mtime_ns=0, checksum=None, receivers=(), deliberate=True),
    _typical(mtime_ns=-5, path="a/b\udcff", receivers=(A, B), pusher_label=""),
    _typical(checksum="md5:" + "0f" * 16, version=2**32 - 1, generation=2**32 - 1, lease=0),
])
def test_a_typical_entry_is_packed_and_reads_back_exactly(entry: IndexEntry) -> None:
    packed = pack(entry)
    assert isinstance(packed, PackedEntry)
    assert packed.unpack() == entry
    _same(entry, packed)
    _same(entry, packed.unpack())
    for with_payload in (True, False):
        assert packed.to_placeholder(with_payload) == entry.to_placeholder(with_payload)
    assert packed.to_json() == entry.to_json()
    assert list(packed.to_json()) == list(entry.to_json())  # the same document, key order included
    assert pack(packed) is packed
    # smaller than the entry object and its location (the strings they point
    # to are shared with the scan and the state database)
    assert sys.getsizeof(packed) < sys.getsizeof(entry) + sys.getsizeof(entry.location)


@pytest.mark.parametrize("entry", [
    _typical(checksum="SHA256:" + "AB" * 32),
    _typical(checksum="sha256:" + "ab" * 31 + "a"),
    _typical(checksum="sha256"),
    _typical(key=KEY.upper()),
    _typical(version=2**32),
    _typical(size=-1),
    _typical(puller_count=-1),
    _typical(location=Location("pages/0000000000007.0123456789abcdef", 0, 1, "none")),
    _typical(location=Location(f"big/{KEY}.{4:010d}.fedcba9876543210", 0, 1, "none")),
    _typical(location=Location(PAGE, 0, 1, "lzma")),  # type: ignore[arg-type]
    _typical(path="a\ud800"),
    _typical(path="\udcc3\udca9"),  # would come back as "é"
    _typical(kind="folder"),
    _typical(version=True),
])
def test_an_entry_that_would_not_come_back_exactly_is_kept_as_it_is(entry: IndexEntry) -> None:
    assert pack(entry) is entry


@FUZZ
@given(entry=entries())
def test_any_entry_packs_to_itself_or_to_a_record_that_reads_as_it(entry: IndexEntry) -> None:
    packed = pack(entry)
    if packed is not entry:
        assert isinstance(packed, PackedEntry)
        assert packed.unpack() == entry
        _same(entry, packed)
        for with_payload in (True, False):
            assert packed.to_placeholder(with_payload) == entry.to_placeholder(with_payload)
        assert list(packed.to_json().items()) == list(entry.to_json().items())
    index = PackedIndex()
    index[entry.path] = entry
    assert index[entry.path] == entry and dict(index) == {entry.path: entry}


@FUZZ
@given(entry=entries())
def test_an_entry_escale_writes_is_always_packed(entry: IndexEntry) -> None:
    """Fields as escale writes them (canonical names, lowercase hex, numbers
    within the widths) always get a record."""
    key = f"{abs(hash(entry.path)) % 2**128:032x}"
    version = 1 + abs(entry.size) % 1000
    location = Location(f"pages/{abs(entry.lease) % 10**6:012d}.{abs(entry.version) % 2**64:016x}",
                        abs(entry.size) % 2**63, abs(entry.mtime_ns) % 2**63, "zlib")
    good = dataclasses.replace(
        entry, path=entry.path.encode("utf-8", "replace").decode("utf-8"), key=key, version=version,
        generation=abs(entry.generation) % 2**32, lease=abs(entry.lease) % 2**32, kind="file",
        pusher=A, size=abs(entry.size) % 2**63, mtime_ns=entry.mtime_ns % 2**63,
        checksum="sha256:" + key * 2, receivers=(B,), puller_count=None, location=location, deliberate=False)
    packed = pack(good)
    assert isinstance(packed, PackedEntry)
    assert packed.unpack() == good
    assert list(packed.to_json().items()) == list(good.to_json().items())


def test_the_packed_index_reads_as_a_dict_of_entries() -> None:
    one, two = _typical(path="one"), _typical(path="two", checksum="odd")
    index = PackedIndex()
    index["one"] = one
    index.update({"two": two})
    plain = {"one": one, "two": two}
    assert index == plain and dict(index) == plain and {**index} == plain and index.copy() == plain
    assert list(index) == ["one", "two"] and len(index) == 2 and "one" in index
    assert list(index.values()) == [one, two] and list(index.items()) == list(plain.items())
    assert index.get("one") == one and index.get("three") is None and index.get("three", 5) == 5
    assert isinstance(index.stored("one"), PackedEntry) and index.stored("two") is two
    assert index.packed() == 1
    assert [s.brief() for s in index.stored_values()] == [one.brief(), two.brief()]
    assert index.pop("one") == one and "one" not in index
    index.put(one)
    assert index["one"] == one
    del index["one"]
    assert index == {"two": two}
    assert index.setdefault("one", one) == one and index.stored("one") is not None


def test_a_checkpoint_decoded_into_the_index_gives_the_same_entries() -> None:
    # every third with a version beyond the record's width: kept as an entry
    entries = tuple(_typical(path=f"d/{i:05d}", key=f"{i:032x}", version=1 + i % 5 if i % 3 else 2**32 + i,
                             checksum="sha256:" + f"{i:064x}") for i in range(600))
    name = "index/000000000009.full"
    encoded = Checkpoint(9, entries, {PAGE: 1000}).encode()
    for decode in (Checkpoint.decode, Checkpoint.decode_trusted):
        index = PackedIndex()
        checkpoint = decode(encoded, name, into=index)
        assert checkpoint.generation == 9 and checkpoint.objects == {PAGE: 1000} and checkpoint.entries == ()
        assert index == {e.path: e for e in entries}
        assert index.packed() == 400
    # and the streamed document of the index is the checkpoint's, byte for byte
    from escale.protocol.index.objects import checkpoint_pieces
    assert b"".join(checkpoint_pieces(9, {PAGE: 1000}, index.stored_values())) == \
        Checkpoint(9, entries, {PAGE: 1000}).document()


def test_a_repository_keeps_its_index_packed_and_serves_it_as_before(tmp_path: Any, sealer: Sealer) -> None:
    root, spool = os.path.join(tmp_path, "relay"), os.path.join(tmp_path, "spool")
    os.makedirs(root)
    os.makedirs(spool)
    caches: dict[str, dict[str, bytes]] = {}

    def repo(client: str) -> IndexRepository:
        relay = FileRelay(root)
        relay.open()
        made = IndexRepository(relay, sealer, client_id=client, label=client[:4], receives=True, mode="shared",
                               meta_cache=caches.setdefault(client, {}), spool_dir=spool)
        made.prepare()
        return made

    from escale.protocol.lease import LeaseManager
    files = {f"d/{i:03d}.txt": f"content {i}".encode() * (i + 1) for i in range(50)}
    a = repo(A)
    state = a.read_state()
    with LeaseManager(a.relay, a.sealer, client_id=A, label="t", timeout=600).acquire() as lease:
        for path, data in files.items():
            a.commit_file(lease, state, LocalVersion(path, len(data), 0, None), io.BytesIO(data))
        a.commit_pending(lease, state)
    assert a.entries.packed() == len(files)
    for reader in (repo(B), repo(B)):  # from the relay, then from the local copy
        state = reader.read_state()
        assert reader.entries.packed() == len(files) == len(state.latest)
        for path, data in files.items():
            placeholder = state.latest[path]
            assert placeholder == reader.entries[path].to_placeholder()
            sink = io.BytesIO()
            reader.fetch(placeholder, sink)
            assert sink.getvalue() == data
