"""The index layout's relay state reads versions and acknowledgements from the
index (issues 10 and 11: no per-file copy of them).

What these prove: for any index (files and tombstones of several pushers, at
several index generations) and any acknowledgement records (each with its
generation and missing versions), :class:`IndexRelayState`'s ``versions``
and ``acks`` views hold exactly what the materialised dicts held (the rule
written out plainly here as the oracle), by key, by placeholder and as
"acknowledged by another client" of a stored record; the next
version of a path goes above its entry and above a declared floor; nothing is
superseded; writing to the views raises; and a state that takes a fresh
reading answers from that reading, records included.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escale.protocol.index.objects import AckRecord, IndexEntry, Location, PackedIndex, pack
from escale.protocol.index.state import IndexRelayState

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CLIENTS = ("a" * 32, "b" * 32, "c" * 32)


def _key(i: int) -> str:
    return f"{i:032x}"


def _entry(i: int, version: int, generation: int, kind: str, pusher: str) -> IndexEntry:
    location = Location(f"pages/{generation:012d}.0123456789abcdef", 0, 10, "none") if kind == "file" else None
    return IndexEntry(path=f"dir/file-{i}", key=_key(i), version=version, generation=generation, lease=1,
                      kind=cast(Literal["file", "tombstone"], kind), pusher=pusher, pusher_label="host",
                      size=10, mtime_ns=1, checksum=None,
                      receivers=(), puller_count=None, location=location)


@st.composite
def worlds(draw: Any) -> tuple[list[IndexEntry], dict[str, AckRecord]]:
    count = draw(st.integers(0, 12))
    entries = [_entry(i, draw(st.integers(1, 300)), draw(st.integers(1, 9)),
                      draw(st.sampled_from(["file", "file", "tombstone"])), draw(st.sampled_from(CLIENTS)))
               for i in range(count)]
    records = {}
    for client in draw(st.lists(st.sampled_from(CLIENTS), unique=True)):
        missing = sorted({(e.key, e.version) for e in entries if draw(st.booleans())})
        records[client] = AckRecord(client, draw(st.integers(0, 10)), tuple(missing))
    return entries, records


def _state(entries: list[IndexEntry], records: dict[str, AckRecord]) -> IndexRelayState:
    index = PackedIndex()
    for entry in entries:
        index.put(entry)
    state = IndexRelayState(index)
    state.use_records(records)
    return state


def _oracle(entries: list[IndexEntry], records: dict[str, AckRecord]) -> dict[tuple[str, int], frozenset[str]]:
    acks: dict[tuple[str, int], frozenset[str]] = {}
    for e in entries:
        clients = frozenset(c for c, r in records.items() if e.kind == "file" and e.generation <= r.generation
                            and c != e.pusher and (e.key, e.version) not in r.missing)
        if clients:
            acks[e.key, e.version] = clients
    return acks


@FUZZ
@given(worlds())
def test_the_views_hold_what_the_materialised_dicts_held(world: tuple[list[IndexEntry], dict[str, AckRecord]]) -> None:
    entries, records = world
    state = _state(entries, records)
    expected = _oracle(entries, records)
    assert dict(state.acks) == expected
    assert dict(state.versions) == {e.key: e.version for e in entries}
    for e in entries:
        ph = e.to_placeholder()
        assert state.acks_of(ph) == expected.get((e.key, e.version), frozenset())
        assert state.acks.get((e.key, e.version), frozenset()) == expected.get((e.key, e.version), frozenset())
        assert state.acks.get((e.key, e.version + 1)) is None  # another version: acknowledged by nobody
        assert state.acks_of(dataclasses.replace(ph, version=e.version + 1)) == frozenset()
        assert state.versions_of(e.key) == (e.version,)
        assert state.next_version(e.key, e.path) == e.version + 1
        assert state.lists(e.key, e.path)
        # asked of the index's own record: read from its head, as the set would say
        stored = state._index.stored(e.path)
        for client in CLIENTS:
            assert state.acked_by_another(e.path, stored, client) == bool(
                expected.get((e.key, e.version), frozenset()) - {client})
            # a record that is not the index's (an older one) is asked as a placeholder would be
            stale = pack(dataclasses.replace(e, version=e.version + 1))
            assert state.acked_by_another(e.path, stale, client) is False
    assert state.superseded() == []
    assert state.versions.get(_key(999)) is None and not state.lists(_key(999), "elsewhere")
    assert state.next_version(_key(999), "elsewhere") == 1
    # versions acknowledged by the same clients share one group
    groups = list(state.acks.values())
    assert len({id(g) for g in groups}) == len(set(groups))


def test_a_floor_declared_above_an_entry_numbers_the_next_commit_above_it() -> None:
    entry = _entry(1, 4, 1, "file", CLIENTS[0])
    state = _state([entry], {})
    state.add_version(entry.key, 9)
    assert state.latest_version(entry.key) == 9
    assert state.next_version(entry.key, entry.path) == 10
    state.remove_version(entry.key, 9)
    assert state.next_version(entry.key, entry.path) == 5
    assert state.versions[entry.key] == 4  # the index itself was never changed


def test_the_views_are_read_only() -> None:
    entry = _entry(1, 4, 1, "file", CLIENTS[0])
    state = _state([entry], {})
    with pytest.raises(TypeError, match="index layout"):
        state.versions[entry.key] = 5
    with pytest.raises(TypeError, match="index layout"):
        state.acks[entry.key, 4] = frozenset({CLIENTS[1]})
    with pytest.raises(TypeError, match="index layout"):
        del state.versions[entry.key]


def test_a_state_that_takes_a_fresh_reading_answers_from_it() -> None:
    old_entry = _entry(1, 4, 1, "file", CLIENTS[0])
    stale = _state([old_entry], {})
    views = stale.versions, stale.acks
    new_entry = _entry(1, 5, 2, "file", CLIENTS[0])
    fresh = _state([new_entry], {CLIENTS[1]: AckRecord(CLIENTS[1], 2, ())})
    stale.take(fresh)
    assert stale.versions is not views[0] and stale.acks is not views[1]
    assert stale.versions[new_entry.key] == 5
    assert stale.acks_of(new_entry.to_placeholder()) == frozenset({CLIENTS[1]})
    assert stale.acks_of(old_entry.to_placeholder()) == frozenset()
    stale.use_records({})  # records replaced later (the holder's own record, under the lease)
    assert stale.acks_of(new_entry.to_placeholder()) == frozenset()
    assert fresh.acks_of(new_entry.to_placeholder()) == frozenset({CLIENTS[1]})


def test_the_key_table_follows_entries_added_after_it_was_built() -> None:
    first = _entry(1, 1, 1, "file", CLIENTS[0])
    index = PackedIndex()
    index.put(first)
    state = IndexRelayState(index)
    assert state.versions[first.key] == 1  # builds the key table
    later = _entry(2, 3, 2, "file", CLIENTS[0])
    index.put(later)  # a commit of this pass
    assert state.versions[later.key] == 3
    assert len(state.versions) == 2
