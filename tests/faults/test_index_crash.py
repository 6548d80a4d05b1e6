"""kill -9 at every step of a pass in the index layout: restart, converge, lose nothing.

The driver and the workload are :mod:`tests.faults.crash_points`'s (two shared
clients, uploads small and big, a tombstone, a conflict, downloads, local
deletions, acknowledgements, reclaim, clean-up), with ``index = yes``, a page
size (512 KB) small enough that the 200 and 300 kB files are big objects, and
the workload's compaction part: three 120 kB members of a page are superseded
before the receiver had them while a fourth is still live, so the pusher's
next pass compacts that page (copies the live member into a new page, commits
a delta that moves it, deletes the old page). The steps reached are those of
packing, big-object upload, page upload, index commit, acknowledgement
records, reclaim, compaction and clean-up; each one of each pass is a crash
point (a real ``escale --once`` process dying by ``os._exit(137)``). After a
restart and quiescence the trees must equal the run without crash, nothing
may be lost, and no page or big object may be left on the relay.

Beside the local folder, a sample of the points runs on OpenSSH SFTP and on
the rclone backend over a local remote, which has no atomic rename (an
upload there is a copy: a crash mid-way may leave a partial object under its
final name).

On SFTP (a network relay: ``transfers = 4``), big objects are uploaded on
worker connections while the pass packs the small files: with four big
files in one push, every step of that push from its first file to its index
commit is a crash point (uploads in flight on other connections, entries of
big objects packed, the page upload, the fenced commit), but for the inner
ones of the small files' serial steps, and so is every step of the pull that
fetches them ahead on worker connections, up to the flush of what it received
(the acknowledgement records after it are serial, crashed at one by one in the
full run on the local folder; their final write is kept).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.crash_points import SEQUENCE, CrashDriver, Outcome, all_points, workload
from tests.faults.world import Ledger, World
from tests.servers.target import RelayTarget

INDEX = {"index": "yes", "maxpagesize": "512KB"}

#: Each kind of step the index layout marks, by a prefix of its name; the
#: full run must crash at least once at each.
KINDS = {
    "packing": "packed ",
    "big-object upload": "big object uploaded ",
    "page upload": "page uploaded ",
    "index commit (fenced)": "fenced index ",
    "index commit": "index committed ",
    "acknowledgement": "acknowledgements written",
    "reclaim (object deleted)": "deleted ",
    "reclaim (reported)": "reclaimed ",
    "compaction": "compacted page uploaded ",
}


def _driver(target: RelayTarget) -> CrashDriver:
    return CrashDriver(target, prepare=functools.partial(workload, compaction=True), common=dict(INDEX),
                       leftovers=("pages", "big"))


def _kinds(names: set[str]) -> dict[str, int]:
    return {kind: sum(1 for n in names if n.startswith(prefix)) for kind, prefix in KINDS.items()}


@pytest.mark.timeout(900)
def test_crash_at_every_step_of_the_index_layout_loses_nothing(tmp_path: Path, target_file: RelayTarget) -> None:
    reference, run = _driver(target_file).run(tmp_path)
    kinds = _kinds(run.names)
    print(f"\n[file, index layout] {run.points} crash points ({len(run.names)} distinct step names) over "
          f"{len(SEQUENCE)} passes; by kind {kinds}; files lost: {run.lost}")
    assert run.points >= 50
    assert all(kinds.values()), f"kinds of step never crashed at: {kinds}; steps {reference.steps}"
    assert run.lost == 0


def _sample(every: int) -> Callable[[Outcome], list[tuple[int, int]]]:
    return functools.partial(_every_and_compaction, every)


def _every_and_compaction(every: int, reference: Outcome) -> list[tuple[int, int]]:
    """Every ``every``-th point, plus each compaction step (the rarest)."""
    points = all_points(reference)
    chosen = set(points[::every])
    chosen |= {(i, n) for i, n in points if reference.steps[i][n - 1].startswith(KINDS["compaction"])}
    return sorted(chosen)


@pytest.mark.timeout(400)
def test_crash_on_sftp_in_the_index_layout(tmp_path: Path, target_sftp: RelayTarget) -> None:
    _, run = _driver(target_sftp).run(tmp_path, choose=_sample(24))
    print(f"\n[sftp, index layout] {run.points} crash points; files lost: {run.lost}")
    assert run.lost == 0


@pytest.mark.timeout(400)
def test_crash_without_atomic_rename_in_the_index_layout(tmp_path: Path, target_rclone_local: RelayTarget) -> None:
    _, run = _driver(target_rclone_local).run(tmp_path, choose=_sample(40))
    print(f"\n[rclone local, index layout] {run.points} crash points; files lost: {run.lost}")
    assert run.lost == 0


def _parallel_workload(world: World) -> Ledger:
    """The workload, with three more big files on a: its first pass pushes
    four big objects (on four connections) and b's next pass fetches them."""
    ledger = workload(world)
    a = world.path("a")
    for i in range(3):
        ledger.write("a", a, f"big/more{i}.bin", random.Random(10 + i).randbytes(150_000 + 20_000 * i))
    return ledger


def _window(steps: list[str], first: str, last: str) -> list[int]:
    """The numbers (from 1) of ``steps`` from the first that starts with
    ``first`` to the first after it that starts with ``last``."""
    start = next(n for n, s in enumerate(steps, 1) if s.startswith(first))
    end = next(n for n, s in enumerate(steps, 1) if n >= start and s.startswith(last))
    return list(range(start, end + 1))


def _parallel_points(reference: Outcome) -> list[tuple[int, int]]:
    """The steps where transfers run on worker connections. Of the first push
    (pass 0): every step from its first file to its index commit, except the
    inner ones of the small files' ``push`` and ``packed`` steps (serial, one
    like the other, each crashed at in the full run on the local folder: the
    first and last of each kind are kept). Of the first pull (pass 1): every
    step from its first download to the flush of what it received (big files
    fetched ahead on worker connections), then the writing of its
    acknowledgements."""
    push, pull = reference.steps[0], reference.steps[1]
    window = _window(push, "push ", "index committed ")
    inner = {n for kind in ("push ", "packed ")
             for n in [m for m in window if push[m - 1].startswith(kind) and "big/" not in push[m - 1]][1:-1]}
    chosen = [(0, n) for n in window if n not in inner]
    chosen += [(1, n) for n in _window(pull, "download ", "flushed ")]
    chosen += [(1, n) for n in _window(pull, "acknowledgements written", "acknowledgements written")]
    return chosen


@pytest.mark.timeout(900)
def test_crash_during_parallel_big_transfers_in_the_index_layout(tmp_path: Path, target_sftp: RelayTarget) -> None:
    driver = CrashDriver(target_sftp, prepare=_parallel_workload, common={**INDEX, "transfers": "4"},
                         leftovers=("pages", "big"))
    reference, run = driver.run(tmp_path, choose=_parallel_points)
    uploaded = [s for s in reference.steps[0] if s.startswith("big object uploaded ")]
    print(f"\n[sftp, index layout, 4 transfers] {run.points} crash points; steps {sorted(run.names)}; "
          f"files lost: {run.lost}")
    assert len(uploaded) == 4
    assert any(n.startswith("big object uploaded ") for n in run.names)
    assert run.lost == 0
