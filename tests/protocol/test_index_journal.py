"""The local journal of the index layout's materialised index: a pass that
applies a few small deltas adds them to the state database instead of
writing the whole index again; a later load replays them, and a journal
entry that does not belong to the copy, or does not decode, is never
applied."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escale.protocol.index import repository as index_repository
from escale.protocol.index.repository import IndexRepository
from escale.protocol.sealer import Sealer
from tests.protocol.test_index_repository import A, B, Setup
from tests.protocol.test_index_repository import setup as setup  # the fixture

MATERIALISED = "index@materialised"


def _journal(cache: dict[str, bytes]) -> list[str]:
    return sorted(k for k in cache if k.startswith("index@journal:"))


def _view(repo: IndexRepository) -> dict[str, tuple[str, int, str | None, str | None]]:
    state = repo.read_state()
    return {path: (p.key, p.version, p.checksum, p.payload) for path, p in state.latest.items()}


def _loaded_from(setup: Setup, client: str, cache: dict[str, bytes]) -> IndexRepository:
    """A repository of ``client`` whose state database holds ``cache``."""
    setup.caches[client] = cache
    return setup.repo(client)


def test_a_small_change_goes_to_the_journal_and_a_later_load_replays_it(setup: Setup) -> None:
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {f"d/f{i}": b"%d" % i for i in range(300)})
    b.read_state()
    cache = setup.caches[B]
    whole = cache[MATERIALISED]
    assert _journal(cache) == []
    setup.push(a, {"d/f7": b"changed"})
    setup.push(a, {"new": b"new"})
    expected = _view(b)
    assert cache[MATERIALISED] == whole  # not written again
    assert len(_journal(cache)) == 2 and len(_journal(setup.caches[A])) >= 2  # the pusher's own commits too
    again = _loaded_from(setup, B, dict(cache))
    again._load_materialised()
    assert again.head == b.head  # replayed from the journal, before the relay is read
    assert _view(again) == expected
    truth = _loaded_from(setup, B, {})
    assert _view(truth) == expected


def test_the_journal_is_folded_into_a_whole_copy_when_it_is_full(setup: Setup,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_repository, "JOURNAL_DELTAS", 3)
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {f"d/f{i}": b"%d" % i for i in range(20)})
    b.read_state()
    cache = setup.caches[B]
    whole = cache[MATERIALISED]
    for i in range(3):
        setup.push(a, {"d/f1": b"round %d" % i})
        b.read_state()
    assert cache[MATERIALISED] == whole and len(_journal(cache)) == 3
    setup.push(a, {"d/f1": b"round 3"})
    expected = _view(b)
    assert cache[MATERIALISED] != whole and _journal(cache) == []
    assert _view(_loaded_from(setup, B, dict(cache))) == expected


def test_many_deltas_at_once_are_written_whole(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catch-up whose deltas hold more than the journal takes writes the
    copy whole (the journal stays bounded by the index's size)."""
    monkeypatch.setattr(index_repository, "JOURNAL_MIN_ENTRIES", 10)
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {f"d/f{i}": b"%d" % i for i in range(20)})
    b.read_state()
    whole = setup.caches[B][MATERIALISED]
    setup.push(a, {f"d/f{i}": b"again %d" % i for i in range(15)})
    expected = _view(b)
    assert setup.caches[B][MATERIALISED] != whole and _journal(setup.caches[B]) == []
    assert _view(_loaded_from(setup, B, dict(setup.caches[B]))) == expected


def test_a_journal_entry_of_another_copy_is_skipped(setup: Setup) -> None:
    """An entry that names another copy's digest (left by a crash between
    writing a copy whole and clearing the journal) is not applied."""
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {"f": b"one"})
    b.read_state()
    setup.push(a, {"f": b"two"})
    expected = _view(b)
    cache = dict(setup.caches[B])
    (key,) = _journal(cache)
    cache[key] = b"0" * 64 + cache[key][64:]
    again = _loaded_from(setup, B, cache)
    again._load_materialised()
    assert again.head == b.head - 1  # the copy alone
    assert _view(again) == expected  # the delta read from the relay instead


def test_a_damaged_journal_entry_ends_the_replay(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {"f": b"one"})
    b.read_state()
    setup.push(a, {"f": b"two"})
    setup.push(a, {"g": b"three"})
    expected = _view(b)
    cache = dict(setup.caches[B])
    first, _ = _journal(cache)
    damaged = bytearray(cache[first])
    damaged[-5] ^= 0x40
    cache[first] = bytes(damaged)
    with caplog.at_level("WARNING"):
        again = _loaded_from(setup, B, cache)
        again._load_materialised()
    assert "the local journal of the index is unreadable" in caplog.text
    assert again.head == b.head - 2  # neither the damaged entry nor the one after it
    assert _view(again) == expected
    assert _view(_loaded_from(setup, B, dict(setup.caches[B]))) == expected  # and written right since


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(st.tuples(st.lists(st.integers(0, 30), min_size=1, max_size=12), st.booleans()),
                       min_size=1, max_size=8),
       deltas=st.integers(1, 4), entries=st.integers(1, 20))
def test_a_load_from_the_state_database_equals_a_read_from_the_relay(
        tmp_path_factory: pytest.TempPathFactory, sealer: Sealer, rounds: list[tuple[list[int], bool]],
        deltas: int, entries: int) -> None:
    """Whatever the pushes, the readings and the journal's bounds, a
    client's index as loaded from its state database (copy and journal) is
    the index a client with an empty state database reads from the relay."""
    setup = Setup(str(tmp_path_factory.mktemp("journal")), sealer)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(index_repository, "JOURNAL_DELTAS", deltas)
        patch.setattr(index_repository, "JOURNAL_MIN_ENTRIES", entries)
        a, b = setup.repo(A), setup.repo(B)
        for number, (files, read) in enumerate(rounds):
            setup.push(a, {f"d/f{i}": b"%d %d" % (number, i) for i in files})
            if read:
                b.read_state()
        expected = _view(b)
        for client in (A, B):
            assert _view(_loaded_from(setup, client, dict(setup.caches[client]))) == expected
        assert _view(_loaded_from(setup, B, {})) == expected
