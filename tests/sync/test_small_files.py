"""The per-file savings for many small files keep every contract.

* files made ahead (:class:`localfs.NamelessAhead`) are written as any other
  download: right content, nothing through a link, a name taken meanwhile is
  never replaced, and no file descriptor is left open;
* the state database's prepared-statement writes record every row, inside a
  batch and outside one, and knowledge only moves forward;
* the scanner's cache writes, grouped per folder, still cache every file hashed;
* a pass makes files ahead only where its local folder is not held in memory,
  the file system's type being that of the innermost mount holding the folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from escale.config.settings import FileFilter
from escale.errors import LocalError
from escale.sync import executor, localfs
from escale.sync.localfs import LocalChanged, UnsafeLocalPath
from escale.sync.planner import BaseEntry
from escale.sync.scanner import scan
from escale.sync.state import Delivery, StateDB
from tests.faults.world import World, tree, write
from tests.servers.local import file_target

pytestmark = pytest.mark.skipif(not localfs.NAMELESS_AHEAD, reason="no O_TMPFILE here")


def _put(data: bytes) -> Callable[[BinaryIO], None]:
    def fill(handle: BinaryIO) -> None:
        handle.write(data)
    return fill


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


# --------------------------------------------------------------------------- files made ahead


def test_files_made_ahead_receive_every_file(root: Path) -> None:
    for folder in ("a", "b"):
        (root / folder).mkdir()
    rels = [f"{folder}/{n:03d}" for folder in ("a", "b") for n in range(50)] + ["new/x"]
    before = _open_fds()
    ahead = localfs.NamelessAhead(str(root), rels, ahead=4)
    try:
        for rel in rels:
            st = localfs.write_atomically(str(root), rel, _put(rel.encode()), expect=None, mtime_ns=10**18,
                                          durable=False, ahead=ahead)
            assert st.st_size == len(rel) and st.st_mtime_ns == 10**18
    finally:
        ahead.close()
    assert _open_fds() == before
    assert _files(root) == sorted(rels)  # the folder missing ahead ("new") was made by the write
    assert all((root / rel).read_bytes() == rel.encode() for rel in rels)


@pytest.mark.parametrize("name", ["d/{n}", "d/{n:02d}"], ids=["unsorted", "sorted"])
def test_files_made_ahead_for_skipped_paths_are_closed(root: Path, name: str) -> None:
    # sorted paths are searched in the list given; others are looked up in a set
    (root / "d").mkdir()
    rels = [name.format(n=n) for n in range(20)]
    before = _open_fds()
    ahead = localfs.NamelessAhead(str(root), rels, ahead=3)
    try:
        for rel in rels[5::5]:  # the others are skipped (their actions did not run)
            localfs.write_atomically(str(root), rel, _put(rel.encode()), expect=None, durable=False, ahead=ahead)
        # a path never announced, or one taken already, is written the ordinary way
        localfs.write_atomically(str(root), "d/other", _put(b"y"), expect=None, ahead=ahead)
        localfs.write_atomically(str(root), rels[3], _put(rels[3].encode()), expect=None, ahead=ahead)
        assert ahead.take(rels[5]) is None
    finally:
        ahead.close()
    assert _open_fds() == before
    assert _files(root) == sorted([*rels[5::5], rels[3], "d/other"])
    assert all((root / rel).read_bytes() == rel.encode() for rel in [*rels[5::5], rels[3]])


def test_close_before_any_take_leaves_nothing(root: Path) -> None:
    (root / "d").mkdir()
    before = _open_fds()
    ahead = localfs.NamelessAhead(str(root), [f"d/{n}" for n in range(100)], ahead=2)
    ahead.close()
    assert _open_fds() == before
    assert _files(root) == []


def test_folder_swapped_for_a_link_after_the_file_was_made(root: Path) -> None:
    """The file was made ahead in the real folder; the folder is then replaced
    by a link: the write refuses, nothing is written through the link."""
    outside = root.parent / "outside"
    (root / "d").mkdir()
    ahead = localfs.NamelessAhead(str(root), ["d/f"], ahead=2)
    try:
        ahead._thread.join()  # the file is made (and the end marked): the thread is done
        (root / "d").rename(root / "moved")
        (root / "d").symlink_to(outside)
        with pytest.raises(UnsafeLocalPath):
            localfs.write_atomically(str(root), "d/f", _put(b"x"), expect=None, durable=False, ahead=ahead)
    finally:
        ahead.close()
    assert _files(outside) == []
    assert _files(root / "moved") == []


def test_a_name_taken_meanwhile_is_never_replaced(root: Path) -> None:
    (root / "d").mkdir()
    ahead = localfs.NamelessAhead(str(root), ["d/f"], ahead=1)
    try:
        (root / "d" / "f").write_bytes(b"user's")
        with pytest.raises(LocalChanged):
            localfs.write_atomically(str(root), "d/f", _put(b"relay's"), expect=None, durable=False, ahead=ahead)
    finally:
        ahead.close()
    assert (root / "d" / "f").read_bytes() == b"user's"
    assert _files(root) == ["d/f"]


def test_unsafe_paths_are_refused_every_time(root: Path) -> None:
    for _ in range(3):  # the check's answers are remembered; refusals are not
        with pytest.raises(LocalError, match="unsafe"):
            localfs.safe_join(str(root), "a/../../b")
        with pytest.raises(LocalError, match="unsafe"):
            localfs.safe_join(str(root), "a/.escale-part-x")
        with pytest.raises(LocalError, match="unsafe"):
            localfs.safe_join(str(root), "a/b\x01c")
    assert localfs.safe_join(str(root), "a/b") == str(root / "a" / "b")


# --------------------------------------------------------------------------- the state database


@pytest.mark.parametrize("batched", [False, True])
def test_prepared_writes_record_every_row(tmp_path: Path, batched: bool) -> None:
    db = StateDB(str(tmp_path / "state" / "db.sqlite"))
    bases = [(f"p{n}", BaseEntry(n, n * 10, f"sha256:{n}", n + 1, "remote")) for n in range(300)]
    records = [Delivery(f"p{n}", n + 1, n, "received", 1.5, receivers=("a", "b")) for n in range(300)]
    db.set_seen("k0", 9)

    def write() -> None:
        db.set_bases(bases)
        db.set_deliveries(records)
        db.set_seen_many([(f"k{n}", n) for n in range(300)])
        db.set_bases([])  # nothing to write is fine

    if batched:
        with db.batch():
            write()
    else:
        write()
    db.close()
    db = StateDB(str(tmp_path / "state" / "db.sqlite"))  # what a later process reads
    assert db.base() == dict(bases)
    assert db.deliveries() == sorted(records, key=lambda r: r.path)
    seen = db.seen_versions()
    assert seen["k0"] == 9  # knowledge only moves forward
    assert all(seen[f"k{n}"] == n for n in range(1, 300))


def test_scanner_caches_every_file_hashed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        for n in range(1200):  # more than one group of cache writes per folder
            (root / folder / f"{n}").write_bytes(f"{folder}{n}".encode())
    db = StateDB(str(tmp_path / "state" / "db.sqlite"))
    first = scan(str(root), FileFilter(), checksum="sha256", db=db)
    assert first.hashed_bytes > 0 and len(first.files) == 2400
    assert db.checksum_count() == 2400
    again = scan(str(root), FileFilter(), checksum="sha256", db=db)
    assert again.hashed_bytes == 0  # every checksum came from the cache
    assert again.files == first.files


# --------------------------------------------------------------------------- where files are made ahead

MOUNTS = "\n".join([
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
    "23 22 0:5 / /dev/shm rw,nosuid shared:2 - tmpfs tmpfs rw",
    r"24 22 8:2 / /mnt/my\040disk rw - xfs /dev/sda2 rw",
    "25 24 0:6 / /mnt/my\\040disk/cache rw - ramfs none rw",
    "26 22 0:7 / /dev/shm rw - ext4 /dev/sdb1 rw",  # stacked on /dev/shm: the last one counts
    "a line that does not read",
])


@pytest.mark.parametrize(("path", "kind"), [
    ("/home/user/sync", "ext4"), ("/", "ext4"), ("/dev/shm", "ext4"), ("/dev/shmx/f", "ext4"),
    ("/mnt/my disk/f", "xfs"), ("/mnt/my disk/cache", "ramfs"), ("/mnt/my disk/cache/deep/f", "ramfs")])
def test_file_system_type_is_the_innermost_mount(path: str, kind: str) -> None:
    assert localfs.file_system_type(path, MOUNTS) == kind


def test_file_system_type_unknown() -> None:
    assert localfs.file_system_type("/x", "23 22 0:5 / /dev/shm rw - tmpfs tmpfs rw") is None
    assert localfs.file_system_type("/x", "") is None


def test_file_system_type_of_a_real_folder(tmp_path: Path) -> None:
    if not os.path.exists(localfs.MOUNTINFO):
        pytest.skip("no mountinfo here")
    assert localfs.file_system_type(str(tmp_path)) not in (None, "")
    with open(localfs.MOUNTINFO, encoding="utf-8") as handle:
        mounts = [(line.split()[4], line.split(" - ")[1].split()[0]) for line in handle]
    for point, kind in mounts:
        if kind == "tmpfs" and "\\" not in point:  # a mount point itself: its type, or a mount's stacked on it
            assert localfs.file_system_type(point) in {k for p, k in mounts if p == point}


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_files_are_made_ahead_only_off_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              kind: str) -> None:
    """A pass receiving many new files makes them ahead on a thread, unless
    the local folder is held in memory; the files received are the same."""
    world = World(str(tmp_path), file_target(str(tmp_path / "relay")), "repo")
    a = world.add("a", encryption="no")
    b = world.add("b", encryption="no")
    world.sync("b")
    for i in range(executor.NAMELESS_AHEAD_MIN + 4):
        write(a, f"d/f{i:02d}.txt", f"content {i}\n")
    world.sync("a")
    made: list[localfs.NamelessAhead] = []

    class Recorded(localfs.NamelessAhead):
        def __init__(self, root: str, rels: list[str], **kwargs: Any) -> None:
            super().__init__(root, rels, **kwargs)
            made.append(self)

    asked: list[str] = []

    def file_system_type(path: str) -> str:
        asked.append(path)
        return kind

    monkeypatch.setattr(localfs, "NamelessAhead", Recorded)
    monkeypatch.setattr(localfs, "file_system_type", file_system_type)
    report = world.sync("b")
    assert len(report.pulled) == executor.NAMELESS_AHEAD_MIN + 4
    assert tree(b) == tree(a)
    assert asked == [world.settings("b").local_path]
    assert len(made) == (0 if kind == "tmpfs" else 1)
