"""The local folder's write primitives: atomic, guarded, and never through a link.

Every test works on a real folder. A symbolic link anywhere below the local
root (a parent folder, the file itself, one planted while a download runs)
must never lead a write, rename, delete or read outside the root.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escale.errors import DiskFull, LocalError
from escale.sync import localfs
from escale.sync.localfs import LocalChanged, LocalUnreadable, UnsafeLocalPath
from escale.sync.planner import LocalFile
from tests.unprivileged import permissions_apply, unprivileged_command


def _put(data: bytes) -> Callable[[BinaryIO], None]:
    def fill(handle: BinaryIO) -> None:
        handle.write(data)
    return fill


def _local(path: Path) -> LocalFile:
    st = os.stat(path)
    return LocalFile(st.st_size, st.st_mtime_ns)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "outside").mkdir()
    return tmp_path / "root"


# --------------------------------------------------------------------------- write_atomically


def test_write_creates_folders_and_sets_mtime(root: Path) -> None:
    st = localfs.write_atomically(str(root), "a/b/c.txt", _put(b"hello"), expect=None, mtime_ns=10**18)
    assert (root / "a/b/c.txt").read_bytes() == b"hello"
    assert st.st_size == 5 and st.st_mtime_ns == 10**18
    assert _files(root) == ["a/b/c.txt"]


def test_write_replaces_only_the_expected_file(root: Path) -> None:
    (root / "f").write_bytes(b"old")
    expect = _local(root / "f")
    localfs.write_atomically(str(root), "f", _put(b"new"), expect=expect)
    assert (root / "f").read_bytes() == b"new"
    with pytest.raises(LocalChanged):  # still expecting "old"
        localfs.write_atomically(str(root), "f", _put(b"newer"), expect=expect)
    with pytest.raises(LocalChanged):  # expecting absence
        localfs.write_atomically(str(root), "f", _put(b"newer"), expect=None)
    assert (root / "f").read_bytes() == b"new"
    assert _files(root) == ["f"]


def test_failed_fill_leaves_nothing(root: Path) -> None:
    def fill(handle: BinaryIO) -> None:
        handle.write(b"partial")
        raise OSError(errno.EFBIG, "File too large")

    with pytest.raises(DiskFull):
        localfs.write_atomically(str(root), "d/x", fill, expect=None)
    assert _files(root) == []


def test_new_file_never_has_a_temporary_name(root: Path) -> None:
    """A new name is written through a nameless file: nothing else appears in
    the folder while the content is written, not even a part file."""
    seen: list[list[str]] = []

    def fill(handle: BinaryIO) -> None:
        handle.write(b"content")
        seen.append(os.listdir(root / "d"))

    (root / "d").mkdir()
    st = localfs.write_atomically(str(root), "d/new", fill, expect=None, mtime_ns=10**18)
    assert seen == [[]]
    assert (root / "d/new").read_bytes() == b"content"
    assert st.st_ino == os.stat(root / "d/new").st_ino and st.st_mtime_ns == 10**18 and st.st_size == 7


@pytest.mark.parametrize("planted", ["file", "link"])
def test_new_file_never_replaces_what_appeared_during_the_write(root: Path, planted: str) -> None:
    """A file or a symbolic link that takes the name while the download is
    written stays as it is: the download is refused and leaves nothing."""
    outside = root.parent / "outside" / "target"
    outside.write_bytes(b"outside")

    def fill(handle: BinaryIO) -> None:
        handle.write(b"download")
        if planted == "file":
            (root / "f").write_bytes(b"the user's")
        else:
            (root / "f").symlink_to(outside)

    with pytest.raises(LocalChanged, match="appeared"):
        localfs.write_atomically(str(root), "f", fill, expect=None)
    if planted == "file":
        assert (root / "f").read_bytes() == b"the user's"
    else:
        assert os.readlink(root / "f") == str(outside)
    assert outside.read_bytes() == b"outside"
    assert os.listdir(root) == ["f"]


def test_write_refuses_a_symlinked_folder(root: Path) -> None:
    outside = root.parent / "outside"
    (root / "d").symlink_to("../outside")
    with pytest.raises(UnsafeLocalPath, match="symbolic link d"):
        localfs.write_atomically(str(root), "d/f", _put(b"x"), expect=None)
    (root / "a").mkdir()
    (root / "a/b").symlink_to(outside)
    with pytest.raises(UnsafeLocalPath, match="symbolic link a/b"):
        localfs.write_atomically(str(root), "a/b/c/f", _put(b"x"), expect=None)
    assert _files(outside) == []
    assert not any(n.startswith(".escale-part-") for n in os.listdir(root))


def test_write_refuses_a_file_on_the_way(root: Path) -> None:
    (root / "plain").write_bytes(b"a file")
    with pytest.raises(UnsafeLocalPath, match="not a folder"):
        localfs.write_atomically(str(root), "plain/f", _put(b"x"), expect=None)
    assert (root / "plain").read_bytes() == b"a file"


def test_write_never_replaces_a_symlink(root: Path) -> None:
    outside = root.parent / "outside"
    (outside / "secret").write_bytes(b"keep")
    (root / "f").symlink_to(outside / "secret")
    with pytest.raises(LocalChanged):
        localfs.write_atomically(str(root), "f", _put(b"x"), expect=None)
    # even when the plan's expectation matches the file the link points to
    with pytest.raises(LocalChanged):
        localfs.write_atomically(str(root), "f", _put(b"x"), expect=_local(outside / "secret"))
    assert (outside / "secret").read_bytes() == b"keep"
    assert os.path.islink(root / "f")


def test_root_may_be_a_symlink(tmp_path: Path, root: Path) -> None:
    (tmp_path / "link-to-root").symlink_to(root)
    localfs.write_atomically(str(tmp_path / "link-to-root"), "d/f", _put(b"x"), expect=None)
    assert (root / "d/f").read_bytes() == b"x"


def test_missing_root_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(LocalError, match="missing"):
        localfs.write_atomically(str(tmp_path / "gone"), "f", _put(b"x"), expect=None)
    assert not (tmp_path / "gone").exists()


def test_folder_swapped_for_a_link_during_the_download(root: Path) -> None:
    """The folder is replaced by a link while the content is being written:
    the rename happens in the folder that was opened, never through the link."""
    outside = root.parent / "outside"
    (root / "d").mkdir()

    def fill(handle: BinaryIO) -> None:
        handle.write(b"payload")
        os.rename(root / "d", root / "moved")
        (root / "d").symlink_to(outside)

    localfs.write_atomically(str(root), "d/f", fill, expect=None)
    assert _files(outside) == []
    assert (root / "moved/f").read_bytes() == b"payload"


# --------------------------------------------------------------------------- rename, delete, read


def test_rename_aside(root: Path) -> None:
    (root / "f.txt").write_bytes(b"mine")
    expect = _local(root / "f.txt")
    localfs.rename_aside(str(root), "f.txt", "copies/f.conflict.txt", expect=expect)
    assert _files(root) == ["copies/f.conflict.txt"]
    with pytest.raises(LocalChanged):  # the source is gone
        localfs.rename_aside(str(root), "f.txt", "g.txt", expect=expect)


def test_rename_aside_keeps_an_existing_copy(root: Path) -> None:
    (root / "f").write_bytes(b"mine")
    (root / "copy").write_bytes(b"mine")
    localfs.rename_aside(str(root), "f", "copy", expect=_local(root / "f"))
    assert _files(root) == ["copy"]


def test_rename_aside_refuses_links(root: Path) -> None:
    outside = root.parent / "outside"
    (root / "f").write_bytes(b"mine")
    (root / "d").symlink_to(outside)
    with pytest.raises(UnsafeLocalPath):
        localfs.rename_aside(str(root), "f", "d/copy", expect=_local(root / "f"))
    (outside / "g").write_bytes(b"theirs")
    with pytest.raises(UnsafeLocalPath):
        localfs.rename_aside(str(root), "d/g", "g", expect=_local(outside / "g"))
    assert _files(outside) == ["g"] and (root / "f").read_bytes() == b"mine"


def test_delete_if_unchanged(root: Path) -> None:
    (root / "d").mkdir()
    (root / "d/f").write_bytes(b"x")
    expect = _local(root / "d/f")
    assert not localfs.delete_if_unchanged(str(root), "d/f", LocalFile(99, expect.mtime_ns))
    assert localfs.delete_if_unchanged(str(root), "d/f", expect)
    assert not localfs.delete_if_unchanged(str(root), "d/f", expect)
    assert not localfs.delete_if_unchanged(str(root), "gone/f", expect)
    assert (root / "d").is_dir()  # the emptied folder stays


def test_delete_never_goes_through_a_link(root: Path) -> None:
    outside = root.parent / "outside"
    (outside / "f").write_bytes(b"x")
    (root / "d").symlink_to(outside)
    (root / "l").symlink_to(outside / "f")
    with pytest.raises(UnsafeLocalPath):
        localfs.delete_if_unchanged(str(root), "d/f", _local(outside / "f"))
    assert not localfs.delete_if_unchanged(str(root), "l", _local(outside / "f"))
    assert _files(outside) == ["f"] and os.path.islink(root / "l")


def test_open_for_push(root: Path) -> None:
    (root / "f").write_bytes(b"content")
    expect = _local(root / "f")
    with localfs.open_for_push(str(root), "f", expect) as handle:
        assert handle.read() == b"content"
    (root / "f").write_bytes(b"changed!")
    with pytest.raises(LocalChanged):
        localfs.open_for_push(str(root), "f", expect)
    with pytest.raises(LocalChanged):
        localfs.open_for_push(str(root), "nope/f", expect)


def test_open_for_push_never_reads_through_a_link(root: Path) -> None:
    outside = root.parent / "outside"
    (outside / "secret").write_bytes(b"secret")
    expect = _local(outside / "secret")
    (root / "l").symlink_to(outside / "secret")
    (root / "d").symlink_to(outside)
    with pytest.raises(UnsafeLocalPath, match="symbolic link l"):
        localfs.open_for_push(str(root), "l", expect)
    with pytest.raises(UnsafeLocalPath, match="symbolic link d"):
        localfs.open_for_push(str(root), "d/secret", expect)


_OPEN_PROBE = """
import sys
from escale.sync import localfs
from escale.sync.planner import LocalFile
try:
    localfs.open_for_push(sys.argv[1], "f", LocalFile(int(sys.argv[2]), int(sys.argv[3])))
except Exception as exc:
    print(type(exc).__name__)
"""


def test_unreadable_file_is_reported_as_unreadable(root: Path) -> None:
    if not permissions_apply():
        pytest.fail("setpriv cannot drop the capabilities that bypass file permissions here")
    (root / "f").write_bytes(b"x")
    os.chmod(root / "f", 0)
    st = os.stat(root / "f")
    out = subprocess.run(unprivileged_command([sys.executable, "-c", _OPEN_PROBE, str(root), str(st.st_size),
                                               str(st.st_mtime_ns)]),
                         capture_output=True, text=True, check=True, cwd=os.getcwd())
    assert out.stdout.strip() == LocalUnreadable.__name__


# --------------------------------------------------------------------------- names and leftovers


@pytest.mark.parametrize("rel", ["", "/abs", "a/../b", "a//b", ".", ".escale/x", "d/.escale-part-1", "a\\b",
                                 "ctl\x01", "nul\x00", "bad\udcff"])
def test_safe_join_refuses(rel: str) -> None:
    with pytest.raises(LocalError):
        localfs.safe_join("/r", rel)


def test_remove_leftovers(root: Path) -> None:
    outside = root.parent / "outside"
    (root / "d").mkdir()
    (root / "d/.escale-part-aaaa").write_bytes(b"x" * 1000)
    (root / ".escale-part-bbbb").write_bytes(b"y")
    (root / "keep.txt").write_bytes(b"user")
    (outside / ".escale-part-cccc").write_bytes(b"outside")
    (root / "l").symlink_to(outside)
    count = localfs.remove_leftovers(str(root), ["d/.escale-part-aaaa", ".escale-part-bbbb", "keep.txt",
                                                 "l/.escale-part-cccc", "gone/.escale-part-dddd"])
    assert count == 2
    assert _files(root) == ["keep.txt", "l"]
    assert _files(outside) == [".escale-part-cccc"]


# --------------------------------------------------------------------------- install_prepared


def _prepared(folder: Path, data: bytes) -> BinaryIO:
    handle = localfs.new_prepared(str(folder))
    handle.write(data)
    return handle


@pytest.fixture
def spool(root: Path) -> Path:
    """A spool folder on the local folder's file system (as in the state folder)."""
    folder = root.parent / "spool"
    folder.mkdir()
    return folder


def test_prepared_file_has_no_name_and_is_linked_into_place(root: Path, spool: Path) -> None:
    with _prepared(spool, b"verified") as handle:
        assert os.listdir(spool) == []
        st = localfs.install_prepared(str(root), "a/b/c.txt", handle, expect=None, mtime_ns=10**18)
        assert st.st_ino == os.fstat(handle.fileno()).st_ino  # the very file, not a copy
    assert (root / "a/b/c.txt").read_bytes() == b"verified"
    assert st.st_size == 8 and st.st_mtime_ns == 10**18
    assert _files(root) == ["a/b/c.txt"] and os.listdir(spool) == []


def test_prepared_file_gets_the_mode_of_a_written_file(root: Path, spool: Path) -> None:
    written = localfs.write_atomically(str(root), "w", _put(b"x"), expect=None)
    with _prepared(spool, b"x") as handle:
        installed = localfs.install_prepared(str(root), "p", handle, expect=None)
    assert installed.st_mode == written.st_mode


def test_install_replaces_only_the_expected_file(root: Path, spool: Path) -> None:
    (root / "f").write_bytes(b"old")
    planned = _local(root / "f")
    (root / "f").write_bytes(b"edited meanwhile")
    with _prepared(spool, b"new") as handle, pytest.raises(LocalChanged):
        localfs.install_prepared(str(root), "f", handle, expect=planned)
    assert (root / "f").read_bytes() == b"edited meanwhile"
    with _prepared(spool, b"new") as handle, pytest.raises(LocalChanged):
        localfs.install_prepared(str(root), "f", handle, expect=None)  # appeared since the plan
    assert (root / "f").read_bytes() == b"edited meanwhile"
    with _prepared(spool, b"new") as handle:
        localfs.install_prepared(str(root), "f", handle, expect=_local(root / "f"))
    assert (root / "f").read_bytes() == b"new"
    assert _files(root) == ["f"]


def test_install_refuses_a_symlinked_folder(root: Path, spool: Path) -> None:
    outside = root.parent / "outside"
    (root / "d").symlink_to(outside)
    with _prepared(spool, b"payload") as handle, pytest.raises(UnsafeLocalPath):
        localfs.install_prepared(str(root), "d/f", handle, expect=None)
    assert _files(outside) == []
    assert _files(root) == ["d"]


def test_install_never_replaces_a_symlink(root: Path, spool: Path) -> None:
    outside = root.parent / "outside"
    (outside / "victim").write_bytes(b"theirs")
    (root / "f").symlink_to(outside / "victim")
    with _prepared(spool, b"payload") as handle, pytest.raises(LocalChanged):
        localfs.install_prepared(str(root), "f", handle, expect=_local(outside / "victim"))
    assert (outside / "victim").read_bytes() == b"theirs"
    assert (root / "f").is_symlink()


def _other_file_system(root: Path) -> Path:
    """A folder on another file system than ``root``'s (skips the test when there is none)."""
    for candidate in ("/dev/shm", "/run/user", "/tmp"):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK) \
                and os.stat(candidate).st_dev != os.stat(root).st_dev:
            return Path(candidate)
    pytest.skip("no writable folder on another file system")


def test_install_copies_across_file_systems(root: Path) -> None:
    other = _other_file_system(root)
    folder = other / f"escale-test-spool-{os.getpid()}"
    folder.mkdir()
    try:
        with _prepared(folder, b"across") as handle:
            with pytest.raises(OSError, match="cross-device") as linked:  # what install_prepared meets
                os.link(f"/proc/self/fd/{handle.fileno()}", root / "probe", follow_symlinks=True)
            assert linked.value.errno == errno.EXDEV
            (root / "f").write_bytes(b"old")
            st = localfs.install_prepared(str(root), "f", handle, expect=_local(root / "f"), mtime_ns=10**18)
            assert st.st_ino != os.fstat(handle.fileno()).st_ino
        assert (root / "f").read_bytes() == b"across" and st.st_mtime_ns == 10**18
        assert _files(root) == ["f"]
    finally:
        folder.rmdir()


def test_install_copies_a_file_that_cannot_be_linked(root: Path, spool: Path) -> None:
    """A file that had a name and lost it (new_prepared's fallback) is copied."""
    (spool / "named").write_bytes(b"content")
    with open(spool / "named", "r+b") as handle:
        os.unlink(spool / "named")
        localfs.install_prepared(str(root), "f", handle, expect=None)
    assert (root / "f").read_bytes() == b"content"
    assert _files(root) == ["f"] and os.listdir(spool) == []


_NAME_PARTS = st.sampled_from(["a", "é", ".", "..", "", ".escale", ".escale-tmp", ".hidden", "b c", "x\\y", "z\x01",
                               "\udcff", "\x7f", "-", "名前"])


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.lists(_NAME_PARTS, max_size=4).map("/".join), st.text(max_size=12)))
def test_the_quick_path_check_refuses_exactly_what_the_full_one_refuses(rel: str) -> None:
    """check_relative (one match for a plain path) and safe_join refuse the same paths."""
    try:
        localfs.safe_join("/root", rel)
    except LocalError:
        with pytest.raises(LocalError):
            localfs.check_relative(rel)
    else:
        localfs.check_relative(rel)
