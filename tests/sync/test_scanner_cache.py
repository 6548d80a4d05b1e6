"""The scanner's checksum cache: trusted only while a file's key is unchanged.

A cached checksum stands for the file's content only while its size, mtime
(ns), inode and ctime (ns) are all those it was computed for, and it was
computed with the algorithm in use; any other entry is ignored and the file
is read again. The cache also shrinks when files go (``prune_checksums`` runs
once per pass). Property tests plant cache entries that differ from the file
in every combination of those fields. A file a pull wrote (its checksum
verified as it arrived) goes into the cache when its stat shows no edit since,
so the receiver's next pass reads none of them again, and an edit afterwards is
still seen.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escale.config.settings import FileFilter
from escale.protocol.objects import Placeholder
from escale.sync.executor import RECEIVED_CACHE_MARGIN_NS, _Received, received_checksum_entries
from escale.sync.scanner import scan
from escale.sync.state import StateDB
from tests.faults.world import World, write
from tests.servers.target import RelayTarget

ALL = FileFilter()
FAKE = "sha256:" + "0" * 64  # what no content hashes to: a cache hit is visible

#: which fields of the planted entry differ from the file's own
fields = st.fixed_dictionaries({
    "size": st.booleans(), "mtime_ns": st.booleans(), "inode": st.booleans(), "ctime_ns": st.booleans(),
    "algorithm": st.booleans(),
})


def _key(path: str, shift: dict[str, bool]) -> os.stat_result:
    real = os.stat(path, follow_symlinks=False)
    return cast(os.stat_result, SimpleNamespace(
        st_size=real.st_size + shift["size"], st_mtime_ns=real.st_mtime_ns + shift["mtime_ns"],
        st_ino=real.st_ino + shift["inode"], st_ctime_ns=real.st_ctime_ns + shift["ctime_ns"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shift=fields, content=st.binary(max_size=64), nested=st.booleans())
def test_cached_checksum_is_used_only_for_an_unchanged_key(shift: dict[str, bool], content: bytes,
                                                           nested: bool) -> None:
    root = tempfile.mkdtemp()
    try:
        rel = "sub/dir/f.bin" if nested else "f.bin"
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content)
        db = StateDB(os.path.join(root, ".escale", "state.db"))
        try:
            planted = ("sha512:" + "0" * 128) if shift["algorithm"] else FAKE
            db.cache_checksum(rel, _key(path, shift), planted)
            # a neighbour with a similar name never lends its entry
            db.cache_checksum(rel + "x", _key(path, {k: False for k in shift}), FAKE)
            result = scan(root, ALL, checksum="sha256", db=db)
            real = "sha256:" + hashlib.sha256(content).hexdigest()
            unchanged = not any(shift.values())
            assert result.files[rel].checksum == (FAKE if unchanged else real)
            assert result.hashed_bytes == (0 if unchanged else len(content))
            # what was read is cached under the file's real key: the next scan reads nothing
            again = scan(root, ALL, checksum="sha256", db=db)
            assert again.files[rel].checksum == result.files[rel].checksum
            assert again.hashed_bytes == 0
        finally:
            db.close()
    finally:
        shutil.rmtree(root)


@settings(max_examples=25, deadline=None)
@given(names=st.sets(st.sampled_from(["a", "b", "c/d", "c/e", "f/g/h", "f/i"]), min_size=1),
       data=st.data())
def test_prune_keeps_exactly_the_paths_still_there(names: set[str], data: st.DataObject) -> None:
    root = tempfile.mkdtemp()
    try:
        for rel in names:
            os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(root, rel), "wb") as handle:
                handle.write(rel.encode())
        db = StateDB(os.path.join(root, ".escale", "state.db"))
        try:
            scan(root, ALL, checksum="sha256", db=db)
            assert db.checksum_count() == len(names)
            gone = data.draw(st.sets(st.sampled_from(sorted(names))))
            for rel in gone:
                os.unlink(os.path.join(root, rel))
            with db.batch():
                result = scan(root, ALL, checksum="sha256", db=db)
                assert db.prune_checksums(result.files) == len(gone)
            assert db.checksum_count() == len(names) - len(gone)
            assert scan(root, ALL, checksum="sha256", db=db).hashed_bytes == 0
        finally:
            db.close()
    finally:
        shutil.rmtree(root)


def test_a_pass_shrinks_the_checksum_cache(tmp_path: Path, target_file: RelayTarget) -> None:
    world = World(str(tmp_path), target_file, target_file.new_folder())
    a = world.add("a")
    for i in range(6):
        write(a, f"d/f{i}.txt", f"file {i}\n")
    world.sync("a")
    state = os.path.join(a, ".escale", "a", "state.db")
    db = StateDB(state)
    try:
        assert db.checksum_count() == 6
    finally:
        db.close()
    for i in range(4):
        os.unlink(os.path.join(a, "d", f"f{i}.txt"))
    world.sync("a")
    db = StateDB(state)
    try:
        assert db.checksum_count() == 2
    finally:
        db.close()


def test_a_batch_commits_what_was_written_before_an_error(tmp_path: Path) -> None:
    db = StateDB(str(tmp_path / "state.db"))
    try:
        try:
            with db.batch():
                db.set_setting("one", "1")
                raise KeyError("boom")
        except KeyError:
            pass
        other = StateDB(str(tmp_path / "state.db"))  # another connection sees it committed
        try:
            assert other.get_setting("one") == "1"
        finally:
            other.close()
    finally:
        db.close()


# --------------------------------------------------------------------------- received files


@pytest.mark.parametrize("layout", ["placeholder", "index"])
def test_received_files_are_not_read_again_and_edits_are_still_seen(tmp_path: Path, target_file: RelayTarget,
                                                                     layout: str) -> None:
    world = World(str(tmp_path), target_file, target_file.new_folder())
    if layout == "index":
        world.common.update({"index": "yes"})
    a, b = world.add("a"), world.add("b")
    hour_ago = (int(os.stat(tmp_path).st_mtime) - 3600) * 10**9
    for i in range(5):
        write(a, f"d/f{i}.txt", f"file {i}\n")
        os.utime(os.path.join(a, "d", f"f{i}.txt"), ns=(hour_ago, hour_ago))
    world.sync("a")
    assert len(world.sync("b").pulled) == 5
    db = StateDB(os.path.join(b, ".escale", "b", "state.db"))
    try:
        received = scan(b, ALL, checksum="sha256", db=db)
        assert received.hashed_bytes == 0  # every checksum came from the pull
        assert received.files["d/f0.txt"].checksum == "sha256:" + hashlib.sha256(b"file 0\n").hexdigest()
        # an edit of the same size right after: the mtime moves, so the cache entry no longer holds
        with open(os.path.join(b, "d", "f0.txt"), "r+b") as handle:
            handle.write(b"edit")
        edited = scan(b, ALL, checksum="sha256", db=db)
        assert edited.hashed_bytes == len(b"edit 0\n")
        assert edited.files["d/f0.txt"].checksum == "sha256:" + hashlib.sha256(b"edit 0\n").hexdigest()
    finally:
        db.close()
    assert world.sync("b").pushed == ["d/f0.txt"]
    world.sync("a")
    with open(os.path.join(a, "d", "f0.txt"), "rb") as handle:
        assert handle.read() == b"edit 0\n"


def _received(*, size: int = 5, mtime_ns: int = 10**18, ctime_ns: int = 10**18 + RECEIVED_CACHE_MARGIN_NS,
              checksum: str | None = FAKE, written_mtime_ns: int | None = None) -> _Received:
    placeholder = cast(Placeholder, SimpleNamespace(size=5, mtime_ns=10**18, checksum=checksum))
    stat = cast(os.stat_result, SimpleNamespace(st_size=size, st_mtime_ns=written_mtime_ns or mtime_ns,
                                                st_ino=7, st_ctime_ns=ctime_ns))
    return _Received("p", placeholder, stat, False)


@pytest.mark.parametrize(("item", "cached"), [
    (_received(), True),
    (_received(size=6), False),  # not what was written: edited since
    (_received(written_mtime_ns=10**18 + 1), False),  # mtime not the one escale set
    (_received(ctime_ns=10**18 + RECEIVED_CACHE_MARGIN_NS - 1), False),  # an edit could hide in the margin
    (_received(checksum=None), False),  # nothing verified
])
def test_a_received_file_is_cached_only_when_no_edit_can_hide(item: _Received, cached: bool) -> None:
    entries = received_checksum_entries([item])
    assert entries == ([("p", item.stat, FAKE)] if cached else [])
