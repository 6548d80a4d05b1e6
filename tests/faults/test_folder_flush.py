"""Big received files are made durable on their own, not by flushing the whole file system.

A pass that receives only big files (at least ``localfs.FLUSH_ALONE_MIN``)
flushes each one itself (``fsync``, mostly in the transfer that wrote it)
and then the folders that name them; it never waits for a ``syncfs``, which
would also wait for every other write pending on that file system (a local
relay's objects, another program's files). As soon as the group holds
anything else (a small file, a deletion, a version kept) the whole-file-system
barrier comes back, and a folder that cannot be flushed falls back to it.
Either way a file is recorded and acknowledged only once it is durable.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escale.errors import LocalError
from escale.sync import localfs
from tests.faults.world import World, relay_names, tree, write
from tests.servers.target import RelayTarget

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not localfs.BULK_DURABILITY, reason="no syncfs here: an fsync per file")]

BIG = localfs.FLUSH_ALONE_MIN + 300_000
BIG_FILES = ("top.bin", "d1/x.bin", "d1/d2/deep.bin", "d3/y.bin")


class Flushes:
    """What the executor asked to flush: whole-file-system barriers, and the
    files whose folders were flushed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.whole: list[str] = []
        self.folders: list[str] = []
        real_whole, real_folders = localfs.make_durable, localfs.make_folders_durable

        def whole(root: str) -> None:
            self.whole.append(root)
            real_whole(root)

        def folders(root: str, rels: list[str]) -> None:
            self.folders.extend(rels)
            real_folders(root, rels)

        monkeypatch.setattr(localfs, "make_durable", whole)
        monkeypatch.setattr(localfs, "make_folders_durable", folders)


def _world(tmp_path: Path, target: RelayTarget, layout: str) -> tuple[World, str, str]:
    world = World(str(tmp_path), target, target.new_folder())
    if layout == "index":
        # big objects of their own from 1 MB on, fetched by the transfers
        world.common.update({"index": "yes", "maxpagesize": "4"})
    a, b = world.add("a"), world.add("b")
    world.sync("b")
    return world, a, b


@pytest.mark.parametrize("layout", ["placeholder", "index"])
def test_a_pass_receiving_big_files_flushes_their_folders_only(tmp_path: Path, target_ftp: RelayTarget,
                                                               layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    world, a, b = _world(tmp_path, target_ftp, layout)
    for rel in BIG_FILES:
        write(a, rel, os.urandom(BIG))
    assert len(world.sync("a").pushed) == len(BIG_FILES)
    if layout == "index":
        assert len(relay_names(world, "big")) == len(BIG_FILES)  # not packed into a page
    flushes = Flushes(monkeypatch)
    report = world.sync("b")
    assert sorted(report.pulled) == sorted(BIG_FILES) and not report.errors, report.summary()
    assert flushes.whole == []
    assert sorted(flushes.folders) == sorted(BIG_FILES)
    assert tree(b) == tree(a)
    again = world.sync("b")
    assert not again.changed and not again.errors, again.summary()  # recorded: nothing left to do
    world.sync("a")
    if layout == "index":
        assert relay_names(world, "big") == []  # acknowledged by b: reclaimed


@pytest.mark.parametrize("extra", ["a small file", "a deletion", "a replaced file kept as a version"])
def test_anything_else_in_the_group_brings_back_the_whole_barrier(tmp_path: Path, target_file: RelayTarget,
                                                                  extra: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world, a, b = _world(tmp_path, target_file, "index")
    write(a, "old.txt", b"old")
    world.sync("a")
    world.sync("b")
    for rel in BIG_FILES:
        write(a, rel, os.urandom(BIG))
    if extra == "a small file":
        write(a, "d1/small.txt", b"small")
    elif extra == "a deletion":
        os.remove(os.path.join(a, "old.txt"))
    else:
        write(a, "old.txt", os.urandom(BIG))  # b replaces its old.txt, keeping the old one
    world.sync("a")
    flushes = Flushes(monkeypatch)
    report = world.sync("b")
    assert not report.errors, report.summary()
    assert len(flushes.whole) == 1 and flushes.folders == []
    assert tree(b) == tree(a)


def test_a_folder_that_cannot_be_flushed_falls_back_to_the_whole_barrier(tmp_path: Path, target_file: RelayTarget,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    world, a, b = _world(tmp_path, target_file, "placeholder")
    for rel in BIG_FILES:
        write(a, rel, os.urandom(BIG))
    world.sync("a")
    whole: list[str] = []
    real_whole = localfs.make_durable

    def failing(root: str, rels: list[str]) -> None:
        raise LocalError(f"cannot flush {root}/d1 to disk: injected", path=root)

    def counted(root: str) -> None:
        whole.append(root)
        real_whole(root)

    monkeypatch.setattr(localfs, "make_folders_durable", failing)
    monkeypatch.setattr(localfs, "make_durable", counted)
    report = world.sync("b")
    assert sorted(report.pulled) == sorted(BIG_FILES) and not report.errors, report.summary()
    assert whole == [os.path.realpath(b)] or whole == [b]
    again = world.sync("b")
    assert not again.changed and not again.errors, again.summary()


def _fsynced_folders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    done: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        done.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return done


def test_make_folders_durable_flushes_each_folder_once_deepest_first(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "local"
    (root / "a" / "b").mkdir(parents=True)
    (root / "e").mkdir()
    done = _fsynced_folders(monkeypatch)
    localfs.make_folders_durable(str(root), ["a/b/c.bin", "a/d.bin", "top.bin", "a/b/f.bin", "e/g.bin"])
    expected = {str(root / "a" / "b"), str(root / "a"), str(root / "e"), str(root), str(tmp_path)}
    assert sorted(done) == sorted(expected)  # the folder holding the root too: the pass may have made it
    depth = [p.count("/") for p in done]
    assert depth == sorted(depth, reverse=True)


def test_make_folders_durable_refuses_a_link_and_a_missing_folder(tmp_path: Path) -> None:
    root = tmp_path / "local"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "linked").symlink_to(outside)
    with pytest.raises(LocalError, match="symbolic link"):
        localfs.make_folders_durable(str(root), ["linked/x.bin"])
    with pytest.raises(LocalError, match="gone"):
        localfs.make_folders_durable(str(root), ["missing/x.bin"])
