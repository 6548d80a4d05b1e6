"""Received files settle in groups whose barriers overlap the next writes.

A pass receiving many files makes them durable in groups (one ``syncfs``
each, on a thread of its own while the next files are written), and records
and acknowledges a group only once its barrier has returned:

* with groups far smaller than the pass, every file is received, recorded and
  acknowledged: the receiver's next pass has nothing to do, and the sender
  reclaims the page;
* a barrier that fails leaves its group unrecorded and unacknowledged (the
  pass reports it); the next pass records those files as they are, without
  receiving them again, and only then acknowledges them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escale.errors import LocalError
from escale.sync import executor, localfs
from tests.faults.world import World, relay_names, tree, write
from tests.servers.target import RelayTarget

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(not localfs.BULK_DURABILITY, reason="no syncfs here: an fsync per file")]

FILES = 40


def _world(tmp_path: Path, target: RelayTarget) -> tuple[World, str, str]:
    world = World(str(tmp_path), target, target.new_folder())
    world.common["index"] = "yes"
    a, b = world.add("a"), world.add("b")
    world.sync("b")  # a receiver exists: the page waits for it
    for i in range(FILES):
        write(a, f"d{i % 3}/f{i:03d}", os.urandom(300))
    assert len(world.sync("a").pushed) == FILES
    return world, a, b


def test_every_group_is_recorded_and_acknowledged(tmp_path: Path, target_file: RelayTarget,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world, a, b = _world(tmp_path, target_file)
    monkeypatch.setattr(executor, "SETTLE_FILES", 6)
    report = world.sync("b")
    assert len(report.pulled) == FILES and not report.errors, report.summary()
    assert tree(b) == tree(a)
    again = world.sync("b")
    assert not again.pulled and not again.errors, again.summary()
    world.sync("a")  # every version acknowledged: the page is reclaimed
    assert relay_names(world, "pages") == []


def test_a_failed_barrier_leaves_its_group_for_the_next_pass(tmp_path: Path, target_file: RelayTarget,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    world, a, b = _world(tmp_path, target_file)
    monkeypatch.setattr(executor, "SETTLE_FILES", 6)
    real = localfs.make_durable
    calls: list[str] = []

    def second_fails(root: str) -> None:
        calls.append(root)
        if len(calls) == 2:
            raise LocalError(f"cannot flush {root} to disk: injected", path=root)
        real(root)

    monkeypatch.setattr(localfs, "make_durable", second_fails)
    report = world.sync("b")
    assert report.errors or not report.ok, report.summary()
    assert tree(b) == tree(a)  # written, but a group is neither recorded nor acknowledged
    world.sync("a")
    assert relay_names(world, "pages") != [], "the page went before every file was acknowledged"
    monkeypatch.setattr(localfs, "make_durable", real)
    again = world.sync("b")
    assert not again.pulled and not again.errors, again.summary()  # recorded as found, not received again
    world.sync("a")
    assert relay_names(world, "pages") == []
    assert tree(b) == tree(a)
