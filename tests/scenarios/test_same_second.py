"""Edits the clock cannot see are still changes.

The scanner re-reads a file when its size, mtime (ns), inode or ctime (ns)
differ from the checksum cache's key. An edit that keeps the size and puts the
mtime back (``touch -r``, some editors and archivers), an edit within the same
second as the previous one, an mtime set backwards, and a file replaced by
another with the same size and mtime (new inode) are all sent.
"""

from __future__ import annotations

import os

import pytest

from tests.faults.world import World, tree, write

pytestmark = pytest.mark.timeout(120)


def _content(world: World, name: str, rel: str) -> bytes:
    with open(os.path.join(world.path(name), rel), "rb") as handle:
        return handle.read()


def test_invisible_edits_are_sent(world: World) -> None:
    a = world.add("a")
    world.add("b")
    path = os.path.join(a, "same.txt")
    write(a, "same.txt", b"AAAAAAAA")
    world.quiesce(["a", "b"])
    st = os.stat(path)

    edits = [("same size, mtime restored", b"BBBBBBBB", st.st_mtime_ns),
             ("same second again", b"CCCCCCCC", st.st_mtime_ns),
             ("mtime set back a day", b"DDDDDDDD", st.st_mtime_ns - 86_400 * 10**9)]
    for what, data, mtime in edits:
        with open(path, "r+b") as handle:  # in place: same inode
            handle.write(data)
        os.utime(path, ns=(mtime, mtime))
        world.quiesce(["a", "b"])
        assert _content(world, "b", "same.txt") == data, what

    # replaced by another file with the same size and mtime (a new inode)
    before = os.stat(path)
    write(a, "other.tmp", b"EEEEEEEE")
    os.utime(os.path.join(a, "other.tmp"), ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(os.path.join(a, "other.tmp"), path)
    world.quiesce(["a", "b"])
    assert _content(world, "b", "same.txt") == b"EEEEEEEE"
    assert tree(a) == tree(world.path("b"))
