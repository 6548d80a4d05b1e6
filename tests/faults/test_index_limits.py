"""Bounds of the index layout's objects, reached by many files.

A reader refuses an index document above ``MAX_INDEX_BYTES`` (256 MiB
decoded, about half a million paths). What these prove, with in-process
clients on a local-folder relay and the bounds made small for the test:

* a push whose delta would pass the budget is cut into several deltas (each
  with its page), and the receiver gets every file;
* a checkpoint too big for the bound is not written (one warning): the deltas
  it would have replaced stay, and clients still converge, a client that
  starts afterwards included.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from escale.protocol.index import objects as io
from escale.protocol.index import repository as index_repository
from tests.faults.world import World, relay_names, sha, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(300)


def _world(tmp_path: Path, target: RelayTarget) -> World:
    world = World(str(tmp_path), target, target.new_folder())
    world.common.update({"index": "yes", "lock timeout": "600"})
    return world


@pytest.mark.parametrize(("bound", "value", "expected"), [
    ("DELTA_BUDGET", 40 * 1024, range(3, 201)),  # 200 entries of at most ~600 bytes each in 40 KiB budgets
    ("DELTA_ENTRIES", 60, range(4, 5)),  # 60 + 60 + 60 + 20
])
def test_a_push_past_a_delta_bound_is_cut_into_several_deltas(
        tmp_path: Path, target_file: RelayTarget, monkeypatch: pytest.MonkeyPatch,
        bound: str, value: int, expected: range) -> None:
    monkeypatch.setattr(index_repository, bound, value)
    world = _world(tmp_path, target_file)
    a, b = world.add("a"), world.add("b")
    world.sync("b")
    for i in range(200):
        write(a, f"d{i % 7}/file-{i:03d}.txt", f"content {i}\n")
    report = world.sync("a")
    assert len(report.pushed) == 200
    deltas = [n for n in relay_names(world, "index") if io.parse_index_name(n) is not None]
    assert len(deltas) in expected, deltas
    assert len(relay_names(world, "pages")) == len(deltas)  # each delta names the page cut with it
    report = world.sync("b")
    assert len(report.pulled) == 200
    assert tree(b) == tree(a)
    report = world.sync("a")  # every version acknowledged: every page reclaimed
    assert relay_names(world, "pages") == []


def test_a_checkpoint_too_big_for_readers_is_not_written_and_clients_still_converge(
        tmp_path: Path, target_file: RelayTarget, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(index_repository, "CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(index_repository, "CHECKPOINT_LIMIT", 8 * 1024)  # readers keep their own bound
    world = _world(tmp_path, target_file)
    a, b = world.add("a"), world.add("b")
    world.sync("b")
    with caplog.at_level(logging.WARNING, logger="escale.protocol.index.repository"):
        for round_ in range(4):
            for i in range(40):
                write(a, f"r{round_}/file-{i:03d}.txt", f"round {round_} file {i}\n")
            world.sync("a")
            world.sync("b")
            world.sync("a")  # reclaims, and reaches the checkpoint's turn
    assert any("no checkpoint is written" in r.getMessage() for r in caplog.records)
    names = relay_names(world, "index")
    assert not [n for n in names if n.endswith(".full")], names
    assert len(names) >= 4  # the deltas stay
    c = world.add("c")
    world.quiesce(["a", "b", "c"])
    assert tree(a) == tree(b)
    assert len(tree(a)) == 160 and tree(b)["r0/file-000.txt"] == sha(b"round 0 file 0\n")
    assert set(tree(c)) <= set(tree(a))  # the late client read every delta (no checkpoint to start from)
