"""The state database's cache of relay objects: placeholder writes held back
and written in groups, every other record written at once, in order; a
large value written in pieces (from a spool file) whole or not at all."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from escale.protocol import spooled
from escale.protocol.spooled import SpooledValue
from escale.sync import state
from escale.sync.state import StateDB


def _on_disk(path: Path) -> dict[str, bytes]:
    """What another connection reads from the cache table now."""
    with sqlite3.connect(path) as other:
        return {name: bytes(data) for name, data in other.execute("SELECT name, data FROM relay_meta")}


def test_placeholder_writes_are_held_seen_and_written_on_close(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = StateDB(str(path))
    cache = db.meta_cache()
    assert db.meta_cache() is cache  # one per database: every user sees what is held
    cache["meta/k1.0000000001"] = b"one"
    cache["meta/k2.0000000001"] = b"two"
    assert cache["meta/k1.0000000001"] == b"one" and "meta/k2.0000000001" in cache
    assert _on_disk(path) == {}  # held back
    db.close()
    assert _on_disk(path) == {"meta/k1.0000000001": b"one", "meta/k2.0000000001": b"two"}


def test_another_record_is_written_at_once_after_what_was_held(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = StateDB(str(path))
    cache = db.meta_cache()
    cache["meta/k1.0000000001"] = b"one"
    cache["marker-highest"] = b"7"  # a record, not a cache entry: on disk now, the earlier write with it
    assert _on_disk(path) == {"meta/k1.0000000001": b"one", "marker-highest": b"7"}
    db.close()


def test_held_writes_go_in_groups_and_before_listing_or_removal(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = StateDB(str(path))
    cache = db.meta_cache()
    for i in range(state.CACHE_WRITES):
        cache[f"meta/k{i}.0000000001"] = b"x"
    assert len(_on_disk(path)) == state.CACHE_WRITES  # a full group is written
    cache["meta/last.0000000001"] = b"y"
    assert sorted(cache)[-1] == "meta/last.0000000001"  # listing sees (and writes) it
    assert "meta/last.0000000001" in _on_disk(path)
    cache["meta/gone.0000000001"] = b"z"
    del cache["meta/gone.0000000001"]
    assert "meta/gone.0000000001" not in cache and "meta/gone.0000000001" not in _on_disk(path)
    db.close()


def test_a_value_written_in_pieces_is_on_disk_whole_after_what_was_held(tmp_path: Path) -> None:
    # put_pieces (the index layout's local copy of its index) writes the
    # concatenation, replacing any older value, after the writes held before it
    path = tmp_path / "state.db"
    db = StateDB(str(path))
    cache = db.meta_cache()
    cache["meta/k1.0000000001"] = b"held"
    cache["index@materialised"] = b"old value, longer than the new one"
    value = b"ab" + b"c" * 70000 + b"d"
    cache.put_pieces("index@materialised", len(value), iter([b"ab", b"", b"c" * 70000, b"d"]))  # type: ignore[attr-defined]
    assert _on_disk(path) == {"meta/k1.0000000001": b"held", "index@materialised": value}
    assert cache["index@materialised"] == value
    with db.batch():
        cache.put_pieces("index@materialised", 3, [b"new"])  # type: ignore[attr-defined]
        assert cache["index@materialised"] == b"new"
    assert _on_disk(path)["index@materialised"] == b"new"
    db.close()


@pytest.mark.parametrize("in_batch", [False, True])
@pytest.mark.parametrize("pieces", [[b"ab"], [b"abcd", b"e"], [b"abc", b"d"]])
def test_pieces_that_do_not_add_up_write_nothing(tmp_path: Path, in_batch: bool, pieces: list[bytes]) -> None:
    # a value of the wrong length, or whose pieces fail while they are made,
    # leaves the previous value, inside a batch (whose other writes stay) or not
    path = tmp_path / "state.db"
    db = StateDB(str(path))
    cache = db.meta_cache()
    cache["index@materialised"] = b"previous"

    def failing() -> Iterator[bytes]:
        yield b"ab"
        raise OSError("disk full")

    with db.batch() if in_batch else contextlib.nullcontext():
        cache["meta/k1.0000000001"] = b"beside"
        if pieces == [b"abc", b"d"]:
            with pytest.raises(OSError, match="disk full"):
                cache.put_pieces("index@materialised", 4, failing())  # type: ignore[attr-defined]
        else:
            with pytest.raises(ValueError, match="index@materialised"):
                cache.put_pieces("index@materialised", 4, pieces)  # type: ignore[attr-defined]
        assert cache["index@materialised"] == b"previous"
        cache.put_pieces("index@materialised", 4, [b"abc", b"d"])  # type: ignore[attr-defined]
    assert _on_disk(path) == {"index@materialised": b"abcd", "meta/k1.0000000001": b"beside"}
    db.close()


def test_a_spooled_value_is_stored_whole_and_its_file_goes(tmp_path: Path) -> None:
    db = StateDB(str(tmp_path / "state.db"))
    spool = tmp_path / "spool"
    spool.mkdir()
    value = bytes(range(256)) * 9000  # more than one read of the spool file
    for cache in (db.meta_cache(), {}):
        with SpooledValue(str(spool)) as out:
            for start in range(0, len(value), 1000):
                out.append(value[start:start + 1000])
            assert out.length == len(value)
            spooled.store(cache, "snapshot", out, head=b"head\n")
            spooled.store(cache, "again", out)  # the pieces are read from the start each time
        assert cache["snapshot"] == b"head\n" + value and cache["again"] == value
    assert not os.listdir(spool)  # the spool file has no name, and is closed
    db.close()


def test_a_held_write_reads_nothing_first(tmp_path: Path) -> None:
    # a placeholder cached for the first time costs no lookup of what it
    # replaces; a record written at once is still skipped when unchanged
    db = StateDB(str(tmp_path / "state.db"))
    cache = db.meta_cache()
    statements: list[str] = []
    db._conn.set_trace_callback(statements.append)
    cache["meta/k1.0000000001"] = b"one"
    assert statements == []
    cache["marker-highest"] = b"7"
    statements.clear()
    cache["marker-highest"] = b"7"
    assert [s for s in statements if not s.startswith("SELECT")] == []
    db._conn.set_trace_callback(None)
    db.close()


def test_values_looked_up_together_are_those_looked_up_one_by_one(tmp_path: Path) -> None:
    db = StateDB(str(tmp_path / "state.db"))
    try:
        cache = db.meta_cache()
        written = {f"meta/k{i:05d}.0000000001": f"value {i}".encode() for i in range(2 * state.SEEN_CHUNK + 5)}
        for name, value in written.items():
            cache[name] = value
        db.close()  # on disk
        db = StateDB(str(tmp_path / "state.db"))
        cache = db.meta_cache()
        cache["meta/held.0000000001"] = b"held back"  # not on disk yet: seen all the same
        cache["meta/k00003.0000000001"] = b"replaced, held back"
        asked = [*written, "meta/held.0000000001", "meta/none.0000000001"]
        together = cache.values_of(asked)  # type: ignore[attr-defined]
        assert together == {name: cache[name] for name in asked if name in cache}
        assert together["meta/k00003.0000000001"] == b"replaced, held back" and "meta/none.0000000001" not in together
        assert cache.values_of([]) == {}  # type: ignore[attr-defined]
    finally:
        db.close()
