"""The versions folder on disk: keeping (link or copy), listing, retention."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from escale.sync import localfs
from escale.sync.planner import LocalFile
from escale.sync.trash import Trash


def _file(root: Path, rel: str, data: bytes) -> LocalFile:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    st = path.stat()
    return LocalFile(st.st_size, st.st_mtime_ns)


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A folder on another file system than the tests' temporary folders (tmpfs)."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("no second file system (/dev/shm) on this machine")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as folder:
        yield Path(folder)


def test_keep_links_and_lists_newest_first(tmp_path: Path) -> None:
    root = tmp_path / "local"
    trash = Trash(str(tmp_path / "versions"), keep_for=86400.0, keep_bytes=None)
    first = trash.keep(str(root), "d/a.txt", _file(root, "d/a.txt", b"one"), "replaced")
    (root / "d" / "a.txt").unlink()  # replaced by a new file, as a pull does (a rename)
    second = trash.keep(str(root), "d/a.txt", _file(root, "d/a.txt", b"two!"), "deleted")
    assert first is not None and second is not None
    listed = trash.versions("d/a.txt")
    assert [(v.reason, v.size) for v in listed] == [("deleted", 4), ("replaced", 3)]
    # a hard link: the same file, no copy
    kept = tmp_path / "versions" / second.name
    assert kept.stat().st_ino == (root / "d" / "a.txt").stat().st_ino
    assert trash.versions("d/b.txt") == [] and trash.versions("a.txt") == []


def test_keep_copies_across_file_systems(tmp_path: Path, other_fs: Path) -> None:
    root = tmp_path / "local"
    expect = _file(root, "big.bin", b"x" * 3_000_000)
    trash = Trash(str(other_fs / "versions"), keep_for=86400.0, keep_bytes=None)
    kept = trash.keep(str(root), "big.bin", expect, "replaced")
    assert kept is not None
    copy = other_fs / "versions" / kept.name
    assert copy.read_bytes() == b"x" * 3_000_000
    assert copy.stat().st_mtime_ns == expect.mtime_ns
    assert not [n for n in os.listdir(other_fs / "versions") if n.startswith(".escale-part-")]


def test_keep_refuses_a_changed_file_and_links_on_the_way(tmp_path: Path) -> None:
    root = tmp_path / "local"
    expect = _file(root, "a.txt", b"one")
    _file(root, "a.txt", b"changed")
    trash = Trash(str(tmp_path / "versions"), keep_for=86400.0, keep_bytes=None)
    with pytest.raises(localfs.LocalChanged):
        trash.keep(str(root), "a.txt", expect, "replaced")
    (tmp_path / "versions").mkdir(exist_ok=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "versions" / "sub")
    inner = _file(root, "sub/b.txt", b"b")
    with pytest.raises(localfs.UnsafeLocalPath):
        trash.keep(str(root), "sub/b.txt", inner, "deleted")
    assert os.listdir(tmp_path / "elsewhere") == []


def test_retention_by_age_and_size(tmp_path: Path) -> None:
    root = tmp_path / "local"
    trash = Trash(str(tmp_path / "versions"), keep_for=3600.0, keep_bytes=11)
    made = []
    for n, data in enumerate([b"1234", b"56789", b"abcdef"]):
        kept = trash.keep(str(root), f"f{n}.txt", _file(root, f"f{n}.txt", data), "replaced")
        assert kept is not None
        made.append(kept)
    # 15 bytes above an 11-byte limit: the oldest goes
    assert trash.prune(now=made[-1].kept_at) == 1
    assert [v.path for v in trash.all_versions()] == ["f1.txt", "f2.txt"]
    # two hours later everything is past keep versions
    assert trash.prune(now=made[-1].kept_at + 7200) == 2
    assert trash.all_versions() == []
    off = Trash(str(tmp_path / "versions"), keep_for=0.0, keep_bytes=None)
    assert off.keep(str(root), "f0.txt", _file(root, "f0.txt", b"x"), "replaced") is None
