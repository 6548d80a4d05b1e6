"""The crash-point driver shared by the kill -9 tests of both layouts.

A fixed workload between two shared clients ``a`` and ``b`` (:func:`workload`)
exercises every kind of step: uploads (small files and big ones), a tombstone,
a conflict (both edited ``f3``), downloads, a local deletion, a conflict copy,
acknowledgements, retiring superseded versions, reclaim and clean-up; with
``compaction=True`` also a page most of whose bytes are superseded before the
receiver had it, while one member is still live (the index layout compacts
it). The workload is followed by the passes of :data:`SEQUENCE`.

:class:`CrashDriver` first makes a reference run: those passes as real
``escale --once`` processes with ``ESCALE_CRASH_LOG`` set, which lists every
step each pass reaches (see :mod:`escale.sync.faults`). Then, for each chosen
step ``n`` of pass ``i``, a fresh world replays the passes before ``i`` and
runs pass ``i`` as a real ``escale --once`` process with ``ESCALE_CRASH_AT=n``:
it dies at that step exactly as under ``kill -9`` (``os._exit(137)``, no
cleanup). The same client restarts (an in-process pass, which also proves it
takes over the lease its own dead process left at once), every client runs
until quiescent, and the trees must equal the reference run's (nothing lost,
nothing duplicated) with nothing left in the relay folders named by
``leftovers``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.world import Ledger, World, relay_names, tree
from tests.servers.target import RelayTarget

__all__ = ["SEQUENCE", "CrashDriver", "CrashRun", "Outcome", "all_points", "steps_reached", "workload"]

SEQUENCE = ["a", "b", "a", "b", "a", "b"]

#: Size of each of the three page members superseded for compaction: on a
#: page (below a quarter of a 512 KB page) and together above the dead-byte
#: floor of compaction (256 KiB).
COMPACTED_MEMBER = 120_000


@dataclass
class Outcome:
    trees: dict[str, dict[str, str]]
    steps: list[list[str]]  # step names reached by each pass of SEQUENCE


@dataclass
class CrashRun:
    points: int  # crash points run
    names: set[str]  # distinct step names among them
    lost: int  # files lost over all of them


def workload(world: World, *, compaction: bool = False) -> Ledger:
    """The workload: a synced start, then changes on both sides (not synced yet)."""
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
    if compaction:
        for i in (7, 8, 9):
            ledger.write("a", a, f"page/p{i}.bin", random.Random(i).randbytes(COMPACTED_MEMBER))
        ledger.write("a", a, "page/keep.txt", b"the live member of a page compacted before b had it\n")
    world.sync("a")  # b has not received it: the next edit retires a payload
    ledger.write("a", a, "f6.txt", b"six, edited before b had it\n")
    if compaction:
        ledger.write("a", a, "page/p7.bin", b"p7, edited before b had it\n")
        ledger.write("a", a, "page/p8.bin", b"p8, edited before b had it\n")
        ledger.delete(a, "page/p9.bin")
    ledger.write("a", a, "f1.txt", b"one, edited on a\n")
    ledger.delete(a, "f2.txt")
    ledger.write("a", a, "big/f5.bin", random.Random(5).randbytes(200_000))
    ledger.write("a", a, "f3.txt", b"three, edited on a\n")
    ledger.write("b", b, "f3.txt", b"three, edited on b\n")
    ledger.write("b", b, "g1.txt", b"new on b\n")
    ledger.delete(b, "big/f4.bin")
    return ledger


def steps_reached(log: str) -> list[str]:
    """The step names an ``ESCALE_CRASH_LOG`` file lists, in order."""
    if not os.path.exists(log):
        return []
    with open(log, encoding="utf-8") as handle:
        return [line.split(" ", 1)[1].rstrip("\n") for line in handle]


@dataclass
class CrashDriver:
    """Crash points of :data:`SEQUENCE` after ``prepare`` on ``target``."""

    target: RelayTarget
    prepare: Callable[[World], Ledger] = workload
    #: settings every client of the world gets (``index``, ``maxpagesize`` ...)
    common: dict[str, str] = field(default_factory=dict)
    #: relay folders that must be empty once everyone is quiescent
    leftovers: tuple[str, ...] = ("data",)

    def world(self, base: str) -> World:
        world = World(base, self.target, self.target.new_folder())
        world.common.update(self.common)
        return world

    def reference(self, base: str) -> Outcome:
        """The run without crash: final trees, and the steps each pass reached."""
        world = self.world(base)
        self.prepare(world)
        steps = []
        for index, name in enumerate(SEQUENCE):
            log = os.path.join(base, f"steps-{index}.log")
            world.run(name, env={"ESCALE_CRASH_LOG": log})
            steps.append(steps_reached(log))
        world.quiesce(["a", "b"])
        return Outcome({n: tree(world.path(n)) for n in ("a", "b")}, steps)

    def crash_and_recover(self, base: str, index: int, at: int,
                          expected: list[str] | None = None) -> tuple[World, Ledger, str]:
        """Crash pass ``index`` at its step ``at``, restart it, quiesce;
        return the world, its ledger and the name of the step crashed at.
        ``expected``: the steps the reference run's pass reached, compared in
        the message when the pass does not crash there."""
        world = self.world(base)
        ledger = self.prepare(world)
        for name in SEQUENCE[:index]:
            world.sync(name)
        victim = SEQUENCE[index]
        log = os.path.join(base, "crash.log")
        result = world.run(victim, env={"ESCALE_CRASH_AT": str(at), "ESCALE_CRASH_LOG": log}, check=False)
        if result.returncode != 137:
            reached = steps_reached(log)
            raise AssertionError(f"pass {index} did not crash at step {at} (exit {result.returncode}): "
                                 f"{_step_difference(reached, expected)}; {result.stderr[-500:]}")
        step = steps_reached(log)[-1]
        # the restart. It may wait for the client's lock: a child the dead process
        # forked an instant before dying (an ``ssh`` for an SFTP connection) holds
        # a copy of every descriptor, the lock's too, until it has closed them
        # before its exec, and on a busy host the test may get there first
        report = world.sync(victim, lock_wait=30)
        assert not report.busy, f"the restarted client did not take over its own dead process's lease ({step})"
        world.quiesce(["a", "b"])
        return world, ledger, step

    def check(self, world: World, ledger: Ledger, reference: Outcome, where: str) -> int:
        """Assert the outcome equals the reference; return the files lost."""
        trees = {n: tree(world.path(n)) for n in ("a", "b")}
        lost = ledger.missing(trees.values())
        assert trees["a"] == trees["b"], f"clients differ after a crash at {where}"
        assert trees == reference.trees, f"outcome differs from the run without crash, crash at {where}"
        for folder in self.leftovers:
            assert relay_names(world, folder) == [], f"{folder}/ not empty after a crash at {where}"
        return len(lost)

    def run(self, tmp_path: Path, *, every: int = 1,
            choose: Callable[[Outcome], list[tuple[int, int]]] | None = None) -> tuple[Outcome, CrashRun]:
        """The reference run, then a crash at every ``every``-th step (or at
        the points ``choose`` picks, as (pass, step) pairs counted from 0 and 1)."""
        reference = self.reference(str(tmp_path / "reference"))
        points = choose(reference) if choose is not None else all_points(reference)[::every]
        names = {reference.steps[i][n - 1] for i, n in points}
        lost = 0
        for count, (index, at) in enumerate(points):
            world, ledger, step = self.crash_and_recover(str(tmp_path / f"crash{count}"), index, at,
                                                         reference.steps[index])
            lost += self.check(world, ledger, reference, f"pass {index} ({SEQUENCE[index]}) step {at}: {step}")
        return reference, CrashRun(len(points), names, lost)


def all_points(reference: Outcome) -> list[tuple[int, int]]:
    """Every step of every pass, as (pass, step) pairs."""
    return [(i, n) for i, steps in enumerate(reference.steps) for n in range(1, len(steps) + 1)]


def _step_difference(reached: list[str], expected: list[str] | None) -> str:
    """How the steps a pass ``reached`` differ from the reference's
    ``expected`` ones, in a few words (for a failure's message)."""
    told = f"it reached {len(reached)} steps"
    if expected is None:
        return told
    told += f", the reference run's pass {len(expected)}"
    for number, (got, wanted) in enumerate(zip(reached, expected, strict=False), start=1):
        if got != wanted:
            return f"{told}; first difference at step {number}: {got!r} instead of {wanted!r}"
    return told
