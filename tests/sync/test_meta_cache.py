"""The state database's cache of relay objects: placeholder writes held back
and written in groups, every other record written at once, in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

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
    # put_chunks (the index layout's local copy of its index) writes the
    # concatenation, replacing any older value, after the writes held before it
    path = tmp_path / "state.db"
    db = StateDB(str(path))
    cache = db.meta_cache()
    cache["meta/k1.0000000001"] = b"held"
    cache["index@materialised"] = b"old value, longer than the new one"
    cache.put_chunks("index@materialised", [b"ab", b"", b"c" * 70000, b"d"])  # type: ignore[attr-defined]
    assert _on_disk(path) == {"meta/k1.0000000001": b"held", "index@materialised": b"ab" + b"c" * 70000 + b"d"}
    assert cache["index@materialised"] == b"ab" + b"c" * 70000 + b"d"
    with db.batch():
        cache.put_chunks("index@materialised", [b"new"])  # type: ignore[attr-defined]
        assert cache["index@materialised"] == b"new"
    assert _on_disk(path)["index@materialised"] == b"new"
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
