"""The placeholder layout's latest placeholders held compactly.

What these prove: a placeholder packed into its one-``bytes`` record
(:class:`PackedPlaceholder`) reads back as exactly the placeholder packed,
field by field and whole (types included); a placeholder whose fields would
not come back exactly (odd checksum text, a payload name not spelled as
escale spells it, numbers beyond 64 bits, a path without a UTF-8 form, values
of another type) is kept as the placeholder itself, so nothing depends on the
compact form covering everything; the placeholder layout's ``latest`` reads
as a dict of placeholders; and a repository that pushed and read keeps its
latest placeholders packed and serves them as the relay's objects decode.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escale.protocol import layout
from escale.protocol.lease import LeaseManager
from escale.protocol.objects import Placeholder
from escale.protocol.packed import PackedPlaceholder, pack_placeholder
from escale.protocol.repository import LocalVersion, Repository, packed_latest, payload_of, raw_values
from escale.protocol.sealer import Sealer
from escale.relay.file import FileRelay

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
A, B, C = "a" * 32, "b" * 32, "c" * 32
KEY = "0123456789abcdef0123456789abcdef"
TAG = "fedcba9876543210"

hex32 = st.text("0123456789abcdef", min_size=32, max_size=32)
hex16 = st.text("0123456789abcdef", min_size=16, max_size=16)
# numbers inside and outside 64 signed bits
numbers = st.one_of(st.integers(0, 2**32), st.integers(-(2**63), 2**63 - 1), st.integers(-(2**70), 2**70))
paths = st.one_of(st.text(min_size=1, max_size=40),
                  st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=4))
checksums = st.one_of(
    st.none(),
    st.builds(lambda alg, digits: f"{alg}:{digits}", st.sampled_from(["sha256", "sha1", "md5", "blake2b"]),
              st.text("0123456789abcdef", min_size=0, max_size=128).filter(lambda t: len(t) % 2 == 0)),
    st.text(max_size=30),  # odd text: kept as the placeholder object
    st.builds(lambda digits: "sha256:" + digits, st.text("0123456789ABCDEF ", min_size=2, max_size=8)))
clients = st.one_of(st.just(A), st.just(B), st.just(C), st.text(max_size=10))


@st.composite
def payloads(draw: Any, key: str, version: int) -> str | None:
    name: str | None = draw(st.one_of(
        st.none(),
        st.builds(lambda t: f"data/{key}.{version:010d}.{t}", hex16),
        st.builds(lambda t: f"data/{key}.{version:011d}.{t}", hex16),  # not canonical
        st.builds(lambda k, t: f"data/{k}.0000000001.{t}", hex32, hex16),  # another key's
        st.builds(lambda t: f"data/{key}.{version:010d}.{t}", st.text("0123456789ABCDEF", min_size=16,
                                                                        max_size=16)),
        st.text(max_size=40)))
    return name


@st.composite
def placeholders(draw: Any) -> Placeholder:
    key = draw(st.one_of(hex32, st.text(max_size=34), st.text("0123456789ABCDEF", min_size=32, max_size=32)))
    version = draw(numbers)
    return Placeholder(
        path=draw(paths), key=key, version=version, generation=draw(numbers),
        kind=draw(st.sampled_from(["file", "tombstone", "other"])), pusher=draw(clients),
        pusher_label=draw(st.text(max_size=12)), size=draw(numbers), mtime_ns=draw(numbers),
        checksum=draw(checksums), payload=draw(payloads(key, version)),
        receivers=tuple(draw(st.lists(clients, max_size=40))), puller_count=draw(st.one_of(st.none(), numbers)),
        deliberate=draw(st.booleans()))


def _same(placeholder: Placeholder, read: Any) -> None:
    """``read`` (a placeholder or a record) reads as ``placeholder``, every field with its type."""
    for field in dataclasses.fields(Placeholder):
        mine, theirs = getattr(placeholder, field.name), getattr(read, field.name)
        assert mine == theirs and type(mine) is type(theirs), field.name
    assert read.deleted == placeholder.deleted


def _typical(**changes: Any) -> Placeholder:
    placeholder = Placeholder(
        path="docs/report é.txt", key=KEY, version=3, generation=7, kind="file", pusher=A,
        pusher_label="laptop@host", size=4096, mtime_ns=1_700_000_000_123_456_789,
        checksum="sha256:" + "ab" * 32, payload=f"data/{KEY}.{3:010d}.{TAG}", receivers=(B,))
    return dataclasses.replace(placeholder, **changes)


@pytest.mark.parametrize("placeholder", [
    _typical(),
    _typical(puller_count=2, checksum=None),
    _typical(puller_count=0, generation=0, size=0),
    _typical(kind="tombstone", payload=None, size=0, mtime_ns=0, checksum=None, receivers=(), deliberate=True),
    _typical(kind="tombstone", payload=None, receivers=(A, B, C)),
    _typical(mtime_ns=-5, path="日本/ファイル 🎉.txt", receivers=tuple(f"{i:032x}" for i in range(200)),
             pusher_label=""),
    _typical(version=2**63 - 1, generation=2**63 - 1, size=2**63 - 1, mtime_ns=-(2**63),
             payload=f"data/{KEY}.{2**63 - 1:010d}.{TAG}"),
    _typical(version=10**10, payload=f"data/{KEY}.{10**10}.{TAG}"),
    _typical(checksum="md5:" + "0f" * 16),
    _typical(checksum="sha512:" + "ee" * 64),
    _typical(checksum="sha256:"),
])
def test_a_typical_placeholder_is_packed_and_reads_back_exactly(placeholder: Placeholder) -> None:
    packed = pack_placeholder(placeholder)
    assert isinstance(packed, PackedPlaceholder)
    assert packed.unpack() == placeholder
    _same(placeholder, packed)
    _same(placeholder, packed.unpack())
    assert pack_placeholder(packed) is packed
    assert packed.unpack().encode() == placeholder.encode()
    # the path and key come back as the interned strings (shared with the relay state's keys)
    assert packed.path is sys.intern(placeholder.path) and packed.unpack().key is sys.intern(KEY)
    assert sys.getsizeof(packed) < sys.getsizeof(placeholder) + sys.getsizeof(placeholder.checksum)


@pytest.mark.parametrize("placeholder", [
    _typical(checksum="SHA256:" + "AB" * 32),
    _typical(checksum="sha256:" + "ab" * 31 + "a"),
    _typical(checksum="sha256"),
    _typical(checksum=":" + "ab" * 32),
    _typical(checksum="sha256:" + "ab" * 256),  # a digest longer than a byte can say
    _typical(key=KEY.upper(), payload=f"data/{KEY.upper()}.{3:010d}.{TAG}"),
    _typical(key=KEY[:-2]),
    _typical(version=2**63, payload=f"data/{KEY}.{2**63:010d}.{TAG}"),
    _typical(size=-(2**63) - 1),
    _typical(puller_count=2**64),
    _typical(payload=f"data/{KEY}.{3:011d}.{TAG}"),
    _typical(payload=f"data/{KEY}.{4:010d}.{TAG}"),
    _typical(payload=f"data/{KEY}.{3:010d}.{TAG.upper()}"),
    _typical(payload=f"data/{KEY}.{3:010d}.{TAG}0"),
    _typical(payload=f"meta/{KEY}.{3:010d}"),
    _typical(path="a\ud800"),
    _typical(path="\udcc3\udca9"),
    _typical(kind="folder"),
    _typical(version=True),
    _typical(deliberate=1),
    _typical(receivers=[B]),
    _typical(receivers=(B, 5)),
    _typical(receivers=(B, [C])),
])
def test_a_placeholder_that_would_not_come_back_exactly_is_kept_as_it_is(placeholder: Placeholder) -> None:
    assert pack_placeholder(placeholder) is placeholder


@FUZZ
@given(placeholder=placeholders())
def test_any_placeholder_packs_to_itself_or_to_a_record_that_reads_as_it(placeholder: Placeholder) -> None:
    packed = pack_placeholder(placeholder)
    if packed is not placeholder:
        assert isinstance(packed, PackedPlaceholder)
        assert packed.unpack() == placeholder
        _same(placeholder, packed)
        _same(placeholder, packed.unpack())
    latest = packed_latest()
    latest[placeholder.path] = placeholder
    assert latest[placeholder.path] == placeholder and dict(latest) == {placeholder.path: placeholder}
    assert payload_of(latest, next(iter(raw_values(latest)))) == placeholder.payload


@FUZZ
@given(placeholder=placeholders())
def test_a_placeholder_escale_writes_is_always_packed(placeholder: Placeholder) -> None:
    """Fields as escale writes them (canonical names, lowercase hex, numbers
    within 64 bits, a path with a UTF-8 form) always get a record."""
    key = f"{abs(hash(placeholder.path)) % 2**128:032x}"
    version = 1 + abs(placeholder.size) % 2**62
    good = dataclasses.replace(
        placeholder, path=placeholder.path.encode("utf-8", "replace").decode("utf-8"), key=key, version=version,
        generation=abs(placeholder.generation) % 2**63, kind="file", pusher=A,
        size=abs(placeholder.size) % 2**63, mtime_ns=placeholder.mtime_ns % 2**63, checksum="sha256:" + key * 2,
        payload=f"data/{key}.{version:010d}.{key[:16]}", receivers=(B, C), puller_count=None, deliberate=False)
    packed = pack_placeholder(good)
    assert isinstance(packed, PackedPlaceholder)
    assert packed.unpack() == good
    _same(good, packed)


def test_the_packed_latest_reads_as_a_dict_of_placeholders() -> None:
    one, two = _typical(path="one"), _typical(path="two", checksum="odd")
    latest = packed_latest()
    latest["one"] = one
    latest["two"] = two
    plain = {"one": one, "two": two}
    assert latest == plain and dict(latest) == plain and {**latest} == plain and latest.copy() == plain
    assert list(latest) == ["one", "two"] and len(latest) == 2 and "one" in latest
    assert list(latest.values()) == [one, two] and list(latest.items()) == list(plain.items())
    assert latest.get("one") == one and latest.get("three") is None
    stored = list(raw_values(latest))
    assert isinstance(stored[0], PackedPlaceholder) and stored[1] is two
    assert [payload_of(latest, s) for s in stored] == [one.payload, two.payload]
    assert latest.pop("one") == one and "one" not in latest


def _repo(root: str, sealer: Sealer, client: str, cache: dict[str, bytes], *,
          checksum: str | None = "sha256") -> Repository:
    relay = FileRelay(root)
    relay.open()
    repo = Repository(relay, sealer, client_id=client, label=client[:4], receives=True, mode="shared",
                      meta_cache=cache, checksum=checksum)
    repo.prepare()
    return repo


def _on_relay(repo: Repository, placeholder: Placeholder) -> Placeholder:
    """``placeholder``'s version as its relay object decodes."""
    name = layout.meta_name(placeholder.key, placeholder.version)
    return Placeholder.decode(repo.sealer.open(name, repo.relay.get_bytes(name)), name)


def test_a_repository_keeps_its_latest_placeholders_packed_and_serves_them_as_the_relay_has_them(
        tmp_path: Path, sealer: Sealer) -> None:
    root = str(tmp_path / "relay")
    os.makedirs(root)
    files = {"plain.txt": b"a", "日本/ファイル 🎉.txt": b"bb", "gone.txt": b"ccc", "odd name #1.bin": b""}
    for client, checksum in ((A, "sha256"), (C, None)):
        pusher = _repo(root, sealer, client, {}, checksum=checksum)
        lease = LeaseManager(pusher.relay, sealer, client_id=client, label="t", timeout=600).acquire()
        try:
            state = pusher.read_state()
            for path, data in files.items():
                pusher.commit_file(lease, state, LocalVersion(path, len(data), 1_000_000_000, None),
                                   io.BytesIO(data))
            pusher.commit_tombstone(lease, state, "gone.txt", deliberate=True)
            pusher.finish_changes(lease)
            # what the pusher's own state recorded is packed too, and reads as committed
            assert all(isinstance(s, PackedPlaceholder) for s in raw_values(state.latest))
            assert {p: _on_relay(pusher, ph) for p, ph in state.latest.items()} == dict(state.latest)
        finally:
            lease.release(None)
    cache: dict[str, bytes] = {}
    reader = _repo(root, sealer, B, cache)
    state = reader.read_state()
    assert sorted(state.latest) == sorted(files)
    assert all(isinstance(s, PackedPlaceholder) for s in raw_values(state.latest))
    assert state.latest["gone.txt"].deliberate and state.latest["gone.txt"].deleted
    assert state.latest["plain.txt"].checksum is None and state.latest["plain.txt"].pusher == C
    relay_has = {path: _on_relay(reader, ph) for path, ph in state.latest.items()}
    assert dict(state.latest) == relay_has
    assert all(state.has_payload(ph) for ph in state.latest.values() if not ph.deleted)
    again = reader.read_state_again(state)
    assert dict(again.latest) == relay_has
    later = _repo(root, sealer, B, cache).read_state(use_marker=True)
    assert later.from_snapshot and dict(later.latest) == relay_has
    assert all(isinstance(s, PackedPlaceholder) for s in raw_values(later.latest))
