"""Twenty clients share one S3 relay and converge.

The relay is a real S3 server (``rclone serve s3`` on 127.0.0.1, see
tests/servers/s3.py) reached through escale's rclone backend: no rename, no
exclusive create, folders that are only name prefixes. The lease therefore
rests on *settle and read back* (doc/protocol.rst, *Object stores (S3)*).

Every client writes a file of its own, and two pairs of clients edit one
shared file before either syncs. The first passes run four at a time from
threads, so that clients really meet at the lease (a pass that finds it held
reports ``busy`` and is simply run again later); then every client runs
passes until a whole round changes nothing. What must hold then: all twenty
folders are identical, every file written is there (a concurrent edit of the
shared file is kept, at its path or as a conflict copy), and no payload is
left on the relay (all delivered and reclaimed).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.faults.world import World, relay_names, sha, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(600)

CLIENTS = [f"c{i:02d}" for i in range(20)]
PARALLEL = 4


def _passes(world: World, names: list[str]) -> tuple[int, list[str]]:
    """One pass of each of ``names``, :data:`PARALLEL` at a time from threads;
    returns (passes that found the lease held, failures)."""
    pending = list(names)
    failures: list[str] = []
    guard = threading.Lock()
    busy = [0]

    def worker() -> None:
        while True:
            with guard:
                if not pending:
                    return
                name = pending.pop(0)
            try:
                report = world.sync(name)
            except Exception as exc:  # reported by the caller; the thread ends cleanly
                with guard:
                    failures.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            with guard:
                if report.busy:
                    busy[0] += 1  # met another client at the lease: a later pass runs again
                elif report.errors:
                    failures.append(f"{name}: {report.errors}")

    threads = [threading.Thread(target=worker) for _ in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return busy[0], failures


def test_twenty_clients_converge_on_one_s3_relay(tmp_path: Path, target_rclone_s3: RelayTarget) -> None:
    world = World(str(tmp_path), target_rclone_s3, target_rclone_s3.new_folder())
    for name in CLIENTS:
        world.add(name)
    # the repository is born once, from one client; then everyone registers
    # (a client receives what is pushed after it registered)
    assert not world.sync(CLIENTS[0]).errors
    busy, failures = _passes(world, CLIENTS[1:])
    assert not failures, failures
    world.quiesce(CLIENTS, max_rounds=4)

    write(world.path(CLIENTS[0]), "shared/base.txt", b"base\n")
    assert not world.sync(CLIENTS[0]).errors
    edits = {CLIENTS[1]: b"edit by c01\n", CLIENTS[2]: b"edit by c02\n",
             CLIENTS[3]: b"edit by c03\n", CLIENTS[4]: b"edit by c04\n"}
    for name in edits:  # they hold the shared file before editing it
        assert not world.sync(name).errors
    for name, data in edits.items():
        write(world.path(name), "shared/base.txt", data)
    written = {"shared/base.txt"}
    for index, name in enumerate(CLIENTS):
        rel = f"own/{name}/note.txt"
        write(world.path(name), rel, f"{name} {index}\n".encode())
        written.add(rel)

    more, failures = _passes(world, CLIENTS)
    busy += more
    assert not failures, failures

    rounds = world.quiesce(CLIENTS, max_rounds=6)
    trees = {name: tree(world.path(name)) for name in CLIENTS}
    first = trees[CLIENTS[0]]
    for name in CLIENTS[1:]:
        assert trees[name] == first, f"{name} differs from {CLIENTS[0]}"
    assert written <= set(first), sorted(written - set(first))
    # every concurrent edit of the shared file survives, at its path or as a conflict copy
    contents = {first[path] for path in first if path.startswith("shared/")}
    for name, data in edits.items():
        assert sha(data) in contents, f"the edit of {name} was lost"
    assert relay_names(world, "data") == [], "payloads left on the relay after everyone synced"
    print(f"\n[rclone_s3] {len(CLIENTS)} clients: {busy} passes met a held lease, converged in {rounds} rounds")
