"""kill -9 at every mutating step of push and pull: restart, converge, lose nothing.

The driver and the workload are :mod:`tests.faults.crash_points`'s. A fixed
workload between two shared clients ``a`` and ``b`` exercises every kind of
step: uploads (a small and a multi-chunk file), a tombstone, a conflict (both
edited ``f3``), downloads, a local deletion, a conflict copy,
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

from pathlib import Path

import pytest

from tests.faults.crash_points import SEQUENCE, CrashDriver
from tests.servers.target import RelayTarget


@pytest.mark.timeout(420)
def test_crash_at_every_step_loses_nothing(tmp_path: Path, target_file: RelayTarget) -> None:
    _, run = CrashDriver(target_file).run(tmp_path)
    assert run.points >= 50 and len(run.names) >= 30, (run.points, sorted(run.names))
    print(f"\n[file] {run.points} crash points ({len(run.names)} distinct step names) over "
          f"{len(SEQUENCE)} passes; files lost: {run.lost}")
    assert run.lost == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["ftp", "webdav", "sftp"])
def test_crash_on_network_relays(tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    """Every twelfth step, on each network protocol (the relay-side steps differ
    there: uploads to temporary names, guards, retried connections)."""
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    _, run = CrashDriver(target).run(tmp_path, every=12)
    print(f"\n[{backend}] {run.points} crash points; files lost: {run.lost}")
    assert run.lost == 0
