"""The local folder's edges, through real ``escale --once`` processes.

Two clients share a local-folder relay. Each test puts something odd in a
local folder (an unreadable file or folder, a symbolic link, a name that is
not UTF-8, a 255-byte name in conflict, a temporary file left by a killed
pass) and checks what a user relies on: nothing is deleted elsewhere, nothing
is written outside the folder, the other files keep syncing, and the passes
succeed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.cluster import Cluster, tree, write
from tests.unprivileged import permissions_apply, unprivileged_command

pytestmark = pytest.mark.timeout(300)


def _listing(folder: str) -> list[str]:
    """Every file below ``folder`` (escale's own state folder excluded), links not followed."""
    out: list[str] = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not (parent == folder and d == ".escale")]
        out.extend(os.path.relpath(os.path.join(parent, f), folder) for f in files)
    return sorted(out)


def _log(cluster: Cluster) -> str:
    with open(os.path.join(cluster.base, "escale.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def _run_unprivileged(cluster: Cluster, name: str) -> subprocess.CompletedProcess[str]:
    """``escale --once`` for ``name`` without root's file privileges."""
    argv = [sys.executable, "-m", "escale.cli.main", "--once", "-c", cluster.config, "-r", name]
    return subprocess.run(unprivileged_command(argv), capture_output=True, text=True, timeout=180, check=False)


def test_unreadable_file_and_folder_are_not_deleted(file_cluster: Cluster) -> None:
    """chmod 000 on a synced file and on a folder of 8 files: the sender warns
    and sends no deletion; the receiver keeps all 9 copies."""
    if not permissions_apply():
        pytest.fail("setpriv cannot drop the capabilities that bypass file permissions here")
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    write(a, "synced.txt", "one")
    for i in range(8):
        write(a, f"locked/f{i}.txt", f"file {i}")
    write(a, "other.txt", "keeps syncing")
    file_cluster.sync_all(2)
    assert len(tree(b)) == 10
    os.chmod(os.path.join(a, "synced.txt"), 0)
    os.chmod(os.path.join(a, "locked"), 0)
    try:
        write(a, "new.txt", "still sent")
        first = _run_unprivileged(file_cluster, "a")
        second = _run_unprivileged(file_cluster, "a")
        file_cluster.run("b")
        assert first.returncode == 0, first.stderr[-3000:]
        assert second.returncode == 0, second.stderr[-3000:]
        assert len(tree(b)) == 11 and "new.txt" in tree(b)
        log = _log(file_cluster)
        assert "skipping synced.txt: cannot read" in log and "skipping locked: cannot" in log
    finally:
        os.chmod(os.path.join(a, "locked"), 0o755)
        os.chmod(os.path.join(a, "synced.txt"), 0o644)
    file_cluster.sync_all(2)
    assert tree(a) == tree(b) and len(tree(a)) == 11


def test_symlinked_folder_on_the_receiver(file_cluster: Cluster) -> None:
    """B has ``d -> ../outside``; A sends ``d/f``: nothing is written outside
    B's folder, B warns and keeps syncing everything else."""
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    outside = os.path.join(file_cluster.base, "outside")
    os.makedirs(outside)
    os.symlink("../outside", os.path.join(b, "d"))
    write(a, "d/f", "must not leave b's folder")
    write(a, "d/sub/g", "nor this")
    write(a, "ok.txt", "fine")
    for _ in range(2):
        file_cluster.run("a")
        result = file_cluster.run("b", check=False)
        assert result.returncode == 0, result.stderr[-3000:]
    assert _listing(outside) == []
    assert _listing(b) == ["ok.txt"] and os.path.islink(os.path.join(b, "d"))
    assert sorted(tree(a)) == ["d/f", "d/sub/g", "ok.txt"]
    assert "symbolic link" in _log(file_cluster)


def test_synced_folder_replaced_by_a_symlink(file_cluster: Cluster) -> None:
    """A synced folder on B is moved away and replaced by a link: B sends no
    deletion for its files, and A's later edits are not written through it."""
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    write(a, "d/f1", "one")
    write(a, "d/f2", "two")
    file_cluster.sync_all(2)
    outside = os.path.join(file_cluster.base, "outside")
    os.makedirs(outside)
    write(outside, "unrelated", "the link's target")
    os.rename(os.path.join(b, "d"), os.path.join(b, "moved"))
    os.symlink("../outside", os.path.join(b, "d"))
    write(a, "d/f1", "one, edited on a")
    write(a, "d/new", "new on a")
    for _ in range(2):
        for name in ("a", "b"):
            result = file_cluster.run(name, check=False)
            assert result.returncode == 0, result.stderr[-3000:]
    assert _listing(outside) == ["unrelated"]
    assert {"d/f1", "d/f2", "d/new"} <= set(tree(a))  # no deletion came from b
    with open(os.path.join(a, "d/f1"), encoding="utf-8") as handle:
        assert handle.read() == "one, edited on a"


def test_name_that_is_not_utf8(file_cluster: Cluster) -> None:
    """A non-UTF-8 name is skipped with a warning; the other files sync and
    every pass succeeds."""
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    with open(os.path.join(os.fsencode(a), b"caf\xe9.txt"), "wb") as handle:
        handle.write(b"latin-1 name")
    os.makedirs(os.path.join(os.fsencode(a), b"dir\xff"))
    with open(os.path.join(os.fsencode(a), b"dir\xff", b"inside.txt"), "wb") as handle:
        handle.write(b"below a bad folder name")
    write(a, "fine.txt", "fine")
    write(a, "sub/also.txt", "also fine")
    file_cluster.sync_all(2)  # raises if any pass exits non-zero
    assert sorted(tree(b)) == ["fine.txt", "sub/also.txt"]
    log = _log(file_cluster)
    assert "caf\\xe9.txt: its name is not valid UTF-8" in log
    assert "dir\\xff: its name is not valid UTF-8" in log


def test_255_byte_name_in_conflict_converges(file_cluster: Cluster) -> None:
    """Both sides edit a file whose name is 255 bytes: the conflict copy's name
    is shortened to fit, keeps the extension, and both clients converge."""
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    name = "é" * 124 + "abc.txt"
    assert len(name.encode()) == 255
    write(a, name, "original")
    file_cluster.sync_all(2)
    write(a, name, "edit on a")
    write(b, name, "edit on b")
    file_cluster.sync_all(3)  # raises if any pass exits non-zero
    assert tree(a) == tree(b)
    files = sorted(tree(a))
    assert len(files) == 2 and name in files
    [copy] = [f for f in files if f != name]
    assert ".conflict-" in copy and copy.endswith(".txt") and len(copy.encode()) <= 255
    contents = set()
    for rel in files:
        with open(os.path.join(a, rel), encoding="utf-8") as handle:
            contents.add(handle.read())
    assert contents == {"edit on a", "edit on b"}


def test_leftover_part_files_are_removed(file_cluster: Cluster) -> None:
    """``.escale-part-*`` files left by a killed pass are removed by the next
    pass; the user's files are untouched and nothing is sent for them."""
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    write(a, "keep.txt", "user file")
    write(a, "sub/.escale-part-0123456789ab", os.urandom(200_000))
    write(a, ".escale-part-ba9876543210", b"half")
    file_cluster.run("a")
    assert _listing(a) == ["keep.txt"]
    file_cluster.run("b")
    assert sorted(tree(b)) == ["keep.txt"]
