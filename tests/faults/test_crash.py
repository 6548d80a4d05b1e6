"""kill -9 at every mutating step of push and pull: restart, converge, lose nothing.

A fixed workload between two shared clients ``a`` and ``b`` exercises every
kind of step: uploads (a small and a multi-chunk file), a tombstone, a
conflict (both edited ``f3``), downloads, a local deletion, a conflict copy,
acknowledgements, retiring superseded versions, reclaim and clean-up. It runs
as six passes, ``a b a b a b``.

A reference run executes those passes as real ``escale --once`` processes with
``ESCALE_CRASH_LOG`` set, which lists every step each pass reaches (see
:mod:`escale.sync.faults`). Then, for each step ``n`` of pass ``i``, a fresh
world replays passes before ``i`` normally and runs pass ``i`` as a real
``escale --once`` process with ``ESCALE_CRASH_AT=n``: it dies at that step
exactly as under ``kill -9`` (``os._exit(137)``, no cleanup). The same client
is then restarted (an in-process pass, which also proves that a client takes
over the lease its own dead process left at once), every client runs until
quiescent, and the final trees must equal the reference run's: same paths,
same contents, nothing lost, nothing duplicated.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.faults.world import Ledger, World, relay_names, tree
from tests.servers.target import RelayTarget

SEQUENCE = ["a", "b", "a", "b", "a", "b"]


@dataclass
class Outcome:
    trees: dict[str, dict[str, str]]
    steps: list[list[str]]  # step names reached by each pass of SEQUENCE


def _prepare(world: World) -> Ledger:
    """The workload: a synced start, then changes on both sides."""
    ledger = Ledger()
    a = world.add("a")
    b = world.add("b")
    ledger.write("a", a, "f1.txt", b"one\n")
    ledger.write("a", a, "f2.txt", b"two\n")
    ledger.write("a", a, "f3.txt", b"three\n")
    ledger.write("a", a, "big/f4.bin", random.Random(4).randbytes(300_000))
    world.sync("a")
    world.sync("b")
    world.sync("a")
    ledger.write("a", a, "f6.txt", b"six\n")
    world.sync("a")  # b has not received it: the next edit retires a payload
    ledger.write("a", a, "f6.txt", b"six, edited before b had it\n")
    ledger.write("a", a, "f1.txt", b"one, edited on a\n")
    ledger.delete(a, "f2.txt")
    ledger.write("a", a, "big/f5.bin", random.Random(5).randbytes(200_000))
    ledger.write("a", a, "f3.txt", b"three, edited on a\n")
    ledger.write("b", b, "f3.txt", b"three, edited on b\n")
    ledger.write("b", b, "g1.txt", b"new on b\n")
    ledger.delete(b, "big/f4.bin")
    return ledger


def _steps(log: str) -> list[str]:
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as handle:
        return [line.split(" ", 1)[1].rstrip("\n") for line in handle]


def _reference(base: str, target: RelayTarget) -> Outcome:
    world = World(base, target, target.new_folder())
    _prepare(world)
    steps = []
    for index, name in enumerate(SEQUENCE):
        log = os.path.join(base, f"steps-{index}.log")
        world.run(name, env={"ESCALE_CRASH_LOG": log})
        steps.append(_steps(log))
    world.quiesce(["a", "b"])
    return Outcome({n: tree(world.path(n)) for n in ("a", "b")}, steps)


def _crash_and_recover(base: str, target: RelayTarget, index: int, at: int) -> tuple[World, Ledger, str]:
    world = World(base, target, target.new_folder())
    ledger = _prepare(world)
    for name in SEQUENCE[:index]:
        world.sync(name)
    victim = SEQUENCE[index]
    log = os.path.join(base, "crash.log")
    result = world.run(victim, env={"ESCALE_CRASH_AT": str(at), "ESCALE_CRASH_LOG": log}, check=False)
    assert result.returncode == 137, f"pass {index} did not crash at step {at}: {result.stderr[-500:]}"
    step = _steps(log)[-1]
    report = world.sync(victim)  # the restart
    assert not report.busy, f"the restarted client did not take over its own dead process's lease ({step})"
    world.quiesce(["a", "b"])
    return world, ledger, step


def _check(world: World, ledger: Ledger, reference: Outcome, where: str) -> int:
    trees = {n: tree(world.path(n)) for n in ("a", "b")}
    lost = ledger.missing(trees.values())
    assert trees["a"] == trees["b"], f"clients differ after a crash at {where}"
    assert trees == reference.trees, f"outcome differs from the run without crash, crash at {where}"
    assert relay_names(world, "data") == [], f"payloads left behind after a crash at {where}"
    return len(lost)


def _points(reference: Outcome) -> list[tuple[int, int]]:
    return [(i, n) for i, steps in enumerate(reference.steps) for n in range(1, len(steps) + 1)]


@pytest.mark.timeout(420)
def test_crash_at_every_step_loses_nothing(tmp_path: Path, target_file: RelayTarget) -> None:
    reference = _reference(str(tmp_path / "reference"), target_file)
    points = _points(reference)
    names = {reference.steps[i][n - 1] for i, n in points}
    assert len(points) >= 50 and len(names) >= 30, (len(points), sorted(names))
    lost = 0
    for count, (index, at) in enumerate(points):
        world, ledger, step = _crash_and_recover(str(tmp_path / f"crash{count}"), target_file, index, at)
        lost += _check(world, ledger, reference, f"pass {index} ({SEQUENCE[index]}) step {at}: {step}")
    print(f"\n[file] {len(points)} crash points ({len(names)} distinct step names) over "
          f"{len(SEQUENCE)} passes; files lost: {lost}")
    assert lost == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["ftp", "webdav", "sftp"])
def test_crash_on_network_relays(tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    """Every twelfth step, on each network protocol (the relay-side steps differ
    there: uploads to temporary names, guards, retried connections)."""
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    reference = _reference(str(tmp_path / "reference"), target)
    points = _points(reference)[::12]
    lost = 0
    for count, (index, at) in enumerate(points):
        world, ledger, step = _crash_and_recover(str(tmp_path / f"crash{count}"), target, index, at)
        lost += _check(world, ledger, reference, f"pass {index} ({SEQUENCE[index]}) step {at}: {step}")
    print(f"\n[{backend}] {len(points)} crash points; files lost: {lost}")
    assert lost == 0
