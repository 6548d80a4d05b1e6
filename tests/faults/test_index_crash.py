"""kill -9 at every step of a pass in the index layout: restart, converge, lose nothing.

The workload and the method are those of :mod:`tests.faults.test_crash` (two
shared clients, uploads small and big, a tombstone, a conflict, downloads,
local deletions, acknowledgements, reclaim, clean-up), with ``index = yes``
and a page size (512 KB) small enough that the 200 and 300 kB files are big objects: the steps
reached are those of packing, big-object upload, page upload, index commit,
acknowledgement records, reclaim and clean-up. Each step of each pass is a
crash point (a real ``escale --once`` process dying by ``os._exit(137)``);
after a restart and quiescence the trees must equal the run without crash,
nothing may be lost, and no page or big object may be left on the relay.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.test_crash import SEQUENCE, Outcome, _prepare, _steps
from tests.faults.world import Ledger, World, relay_names, tree
from tests.servers.target import RelayTarget

INDEX = {"index": "yes", "maxpagesize": "512KB"}


def _world(base: str, target: RelayTarget) -> World:
    world = World(base, target, target.new_folder())
    world.common.update(INDEX)
    return world


def _reference(base: str, target: RelayTarget) -> Outcome:
    world = _world(base, target)
    _prepare(world)
    steps = []
    for index, name in enumerate(SEQUENCE):
        log = os.path.join(base, f"steps-{index}.log")
        world.run(name, env={"ESCALE_CRASH_LOG": log})
        steps.append(_steps(log))
    world.quiesce(["a", "b"])
    return Outcome({n: tree(world.path(n)) for n in ("a", "b")}, steps)


def _crash_and_recover(base: str, target: RelayTarget, index: int, at: int) -> tuple[World, Ledger, str]:
    world = _world(base, target)
    ledger = _prepare(world)
    for name in SEQUENCE[:index]:
        world.sync(name)
    victim = SEQUENCE[index]
    log = os.path.join(base, "crash.log")
    result = world.run(victim, env={"ESCALE_CRASH_AT": str(at), "ESCALE_CRASH_LOG": log}, check=False)
    assert result.returncode == 137, f"pass {index} did not crash at step {at}: {result.stderr[-500:]}"
    step = _steps(log)[-1]
    report = world.sync(victim)
    assert not report.busy, f"the restarted client did not take over its own dead process's lease ({step})"
    world.quiesce(["a", "b"])
    return world, ledger, step


def _check(world: World, ledger: Ledger, reference: Outcome, where: str) -> int:
    trees = {n: tree(world.path(n)) for n in ("a", "b")}
    lost = ledger.missing(trees.values())
    assert trees["a"] == trees["b"], f"clients differ after a crash at {where}"
    assert trees == reference.trees, f"outcome differs from the run without crash, crash at {where}"
    assert relay_names(world, "pages") == [] and relay_names(world, "big") == [], (
        f"content left behind after a crash at {where}")
    return len(lost)


def _run(tmp_path: Path, target: RelayTarget, every: int) -> tuple[int, int, int]:
    reference = _reference(str(tmp_path / "reference"), target)
    points = [(i, n) for i, steps in enumerate(reference.steps) for n in range(1, len(steps) + 1)][::every]
    names = {reference.steps[i][n - 1] for i, n in points}
    lost = 0
    for count, (index, at) in enumerate(points):
        world, ledger, step = _crash_and_recover(str(tmp_path / f"crash{count}"), target, index, at)
        lost += _check(world, ledger, reference, f"pass {index} ({SEQUENCE[index]}) step {at}: {step}")
    return len(points), len(names), lost


@pytest.mark.timeout(600)
def test_crash_at_every_step_of_the_index_layout_loses_nothing(tmp_path: Path, target_file: RelayTarget) -> None:
    points, names, lost = _run(tmp_path, target_file, 1)
    print(f"\n[file, index layout] {points} crash points ({names} distinct step names); files lost: {lost}")
    assert points >= 50 and lost == 0


@pytest.mark.timeout(400)
def test_crash_on_sftp_in_the_index_layout(tmp_path: Path, target_sftp: RelayTarget) -> None:
    points, _names, lost = _run(tmp_path, target_sftp, 6)
    print(f"\n[sftp, index layout] {points} crash points; files lost: {lost}")
    assert lost == 0
