"""Handoff after delivery (instrument -> data centre), with real processes.

An ``upload`` client ``up`` (``after delivery = move``) sends files that a
``download`` client ``down`` receives. Once ``down`` acknowledged them, the
next pass of ``up`` moves them into the holding folder. That pass is killed
(``kill -9``, :mod:`escale.sync.faults`) at each of its steps in turn; after a
restart nothing is lost (each file is in the holding folder, whole), nothing is
duplicated, and no deletion ever reaches ``down``. A new file with the same
name is then sent as a new version, not as a conflict.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.faults.world import World, tree, write
from tests.servers.target import RelayTarget

FILES = {"run1/a.dat": b"spectrum a\n" * 50, "run1/b.dat": b"spectrum b\n" * 70}


def _prepare(base: str, target: RelayTarget) -> tuple[World, str, str, str]:
    world = World(base, target, target.new_folder())
    holding = os.path.join(base, "holding")
    up = world.add("up", mode="upload", after_delivery="move", holding_folder=holding)
    down = world.add("down", mode="download")
    for rel, data in FILES.items():
        write(up, rel, data)
    world.sync("down")  # registered: a receiver that must acknowledge
    world.sync("up")  # sent
    world.sync("down")  # received and acknowledged
    return world, up, down, holding


def _steps(log: str) -> list[str]:
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as handle:
        return [line.split(" ", 1)[1].rstrip("\n") for line in handle]


def _check_handed_off(world: World, up: str, down: str, holding: str) -> None:
    expected = {rel: data for rel, data in FILES.items()}
    held = tree(holding)
    assert set(held) == set(expected), held
    for rel, data in expected.items():
        with open(os.path.join(holding, rel), "rb") as handle:
            assert handle.read() == data
    assert tree(up) == {}
    world.sync("down")  # a tombstone would delete the files here
    assert set(tree(down)) == set(FILES)


@pytest.fixture
def reference(tmp_path_factory: pytest.TempPathFactory, target_file: RelayTarget) -> list[str]:
    """The steps of the handoff pass, from a run that is not killed."""
    base = str(tmp_path_factory.mktemp("reference"))
    world, up, down, holding = _prepare(base, target_file)
    log = os.path.join(base, "steps.log")
    world.run("up", env={"ESCALE_CRASH_LOG": log})
    _check_handed_off(world, up, down, holding)
    steps = _steps(log)
    assert any(s.startswith("handoff copy ") for s in steps), steps
    return steps


def test_handoff_killed_at_every_step_loses_nothing(tmp_path: Path, target_file: RelayTarget,
                                                    reference: list[str]) -> None:
    for index, step in enumerate(reference, 1):
        base = str(tmp_path / f"crash-{index}")
        os.makedirs(base)
        world, up, down, holding = _prepare(base, target_file)
        result = world.run("up", env={"ESCALE_CRASH_AT": str(index)}, check=False)
        assert result.returncode == 137, f"step {index} ({step}) not reached: {result.stderr[-2000:]}"
        world.sync("up")  # restarted: finishes what the killed pass began
        world.sync("up")
        _check_handed_off(world, up, down, holding)


def test_recreated_file_is_a_new_file(file_world: World) -> None:
    world, up, down, holding = _prepare(file_world.base, file_world.target)
    world.sync("up")
    assert tree(up) == {}
    write(up, "run1/a.dat", b"a new spectrum, same name\n")
    world.sync("up")
    world.sync("down")
    with open(os.path.join(down, "run1", "a.dat"), "rb") as handle:
        assert handle.read() == b"a new spectrum, same name\n"
    assert not [p for p in tree(down) if ".conflict-" in p]
    world.sync("up")
    # the earlier delivery keeps its name in the holding folder; the new one gets ~1
    with open(os.path.join(holding, "run1", "a.dat~1"), "rb") as handle:
        assert handle.read() == b"a new spectrum, same name\n"
    with open(os.path.join(holding, "run1", "a.dat"), "rb") as handle:
        assert handle.read() == FILES["run1/a.dat"]
    assert tree(up) == {}


@pytest.mark.parametrize("index", ["no", "yes"])
def test_handoff_delete_waits_for_every_receiver(file_world: World, index: str) -> None:
    # in the index layout the receivers' acknowledgement records say who has a
    # version, whether or not its page was reclaimed since
    up = file_world.add("up", mode="upload", after_delivery="delete", index=index)
    d1 = file_world.add("d1", mode="download", index=index)
    file_world.add("d2", mode="download", index=index)
    write(up, "x.dat", b"x\n")
    file_world.sync("d1")
    file_world.sync("d2")
    file_world.sync("up")
    file_world.sync("d1")
    file_world.sync("up")
    assert set(tree(up)) == {"x.dat"}  # d2 has not acknowledged it yet
    file_world.sync("d2")
    file_world.sync("up")
    assert tree(up) == {}
    file_world.sync("d1")
    assert set(tree(d1)) == {"x.dat"}


def test_delivered_when_sent_hands_off_in_the_same_pass(file_world: World) -> None:
    up = file_world.add("up", mode="upload", after_delivery="delete", delivered_when="sent")
    write(up, "x.dat", b"x\n")
    file_world.sync("up")  # no receiver exists yet: "sent" does not wait for one
    assert tree(up) == {}
    down = file_world.add("down", mode="download")
    file_world.sync("down")
    assert set(tree(down)) == {"x.dat"}


def test_handoff_to_another_file_system_copies_then_removes(file_world: World) -> None:
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(file_world.base).st_dev:
        pytest.skip("no second file system (/dev/shm) on this machine")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as holding:
        up = file_world.add("up", mode="upload", after_delivery="move", holding_folder=holding)
        file_world.add("down", mode="download")
        write(up, "deep/x.dat", b"x" * 2_500_000)
        file_world.sync("down")
        file_world.sync("up")
        file_world.sync("down")
        file_world.sync("up")
        assert tree(up) == {}
        with open(os.path.join(holding, "deep", "x.dat"), "rb") as handle:
            assert handle.read() == b"x" * 2_500_000
        assert not [n for n in os.listdir(os.path.join(holding, "deep")) if n.startswith(".escale-")]
