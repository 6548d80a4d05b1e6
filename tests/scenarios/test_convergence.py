"""Five clients of every mode, 200 seeded random operations, then convergence.

Clients: ``a`` and ``b`` (shared), ``c`` (conservative), ``u`` (upload), ``d``
(download); ``b`` and ``c`` with ``priority = upload``. The test draws 200 operations from a seeded generator: create,
modify, delete and rename a file on one client, and the same file edited on
two clients before either syncs. Two of the names (``docs``, ``deep/er``) are
also folders of others: one client's file meets another's folder. After each operation, with probability 0.4, a
random client runs a pass: in-process (:meth:`World.sync`) for the bulk, and
every tenth pass as a real ``escale --once`` process. Then every client runs
passes until a whole round changes nothing.

What must hold then (the guarantees, stated precisely):

1. the shared clients hold identical trees;
2. the upload client's folder is exactly what the test wrote there (pulls never
   touch it);
3. the conservative and the download clients hold exactly the shared tree on
   every path the test never touched on them (their own edits are theirs to
   keep, and may add conflict copies; so are the copies a conservative client
   makes of a file whose name another client's folder took, which it then
   sends as its own);
4. no write is lost: every content the test wrote, unless the test itself later
   overwrote or deleted it on a client holding it, exists on some client, at its
   path or as a conflict copy;
5. nothing is left on the relay: every payload was delivered and reclaimed.
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.faults.world import Ledger, World, origin_path, placeable, relay_names, tree

pytestmark = pytest.mark.timeout(300)

OPERATIONS = 200
WRITERS = ["a", "b", "c", "u", "d"]
WEIGHTS = [5, 5, 3, 3, 1]
NAMES = [f"{folder}f{i}.{ext}" for folder in ("", "docs/", "deep/er/") for i in range(6)
         for ext in ("txt",)]
# files named like a folder of other names: one client's file, another's folder
NAMES += ["docs", "deep/er"]


class Scenario:
    def __init__(self, world: World, seed: int) -> None:
        self.world = world
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.roots = {name: world.path(name) for name in WRITERS}
        self.touched: dict[str, set[str]] = {name: set() for name in WRITERS}
        self.upload_model: dict[str, str] = {}
        self.passes = 0
        self.process_passes = 0
        self.counter = 0

    def content(self, client: str, path: str) -> bytes:
        self.counter += 1
        size = self.rng.choice([0, 10, 100, 3000, 70_000])
        nonce = f"{client}:{path}:{self.counter}:{self.rng.random()}\n".encode()
        return nonce + self.rng.randbytes(size)

    def files(self, client: str) -> list[str]:
        return sorted(tree(self.roots[client]))

    def put(self, client: str, rel: str) -> None:
        data = self.content(client, rel)
        self.ledger.write(client, self.roots[client], rel, data)
        self.touched[client].add(origin_path(rel))
        if client == "u":
            self.upload_model = tree(self.roots["u"])

    def operate(self) -> None:
        client = self.rng.choices(WRITERS, WEIGHTS)[0]
        existing = self.files(client)
        kind = self.rng.choices(["create", "modify", "delete", "rename", "both"], [4, 4, 2, 1, 1])[0]
        if kind == "create" or not existing:
            free = [n for n in NAMES if n not in existing and placeable(self.roots[client], n)]
            if free:
                self.put(client, self.rng.choice(free))
        elif kind == "modify":
            self.put(client, self.rng.choice(existing))
        elif kind == "delete":
            rel = self.rng.choice(existing)
            self.ledger.delete(self.roots[client], rel)
            self.touched[client].add(origin_path(rel))
        elif kind == "rename":
            rel = self.rng.choice(existing)
            free = [n for n in NAMES if n not in existing and placeable(self.roots[client], n)]
            if free:
                target = self.rng.choice(free)
                dest = os.path.join(self.roots[client], target)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.rename(os.path.join(self.roots[client], rel), dest)
                self.touched[client] |= {origin_path(rel), origin_path(target)}
        else:  # the same file edited on two clients before either syncs
            other = self.rng.choice([w for w in WRITERS if w != client])
            common = sorted(set(existing) & set(self.files(other)))
            if common:
                rel = self.rng.choice(common)
                self.put(client, rel)
                self.put(other, rel)
        if client == "u":
            self.upload_model = tree(self.roots["u"])

    def sync_one(self) -> None:
        client = self.rng.choice(WRITERS)
        self.passes += 1
        if self.passes % 10 == 0:
            self.process_passes += 1
            self.world.run(client)
        else:
            self.world.sync(client)


def _untouched(t: dict[str, str], touched: set[str]) -> dict[str, str]:
    return {p: h for p, h in t.items() if origin_path(p) not in touched}


def run_scenario(world: World, seed: int, operations: int = OPERATIONS) -> str:
    """Run the whole scenario (``operations`` random operations) on ``world``;
    assert the guarantees; return a summary."""
    for name, mode in (("a", "shared"), ("b", "shared"), ("c", "conservative"), ("u", "upload"),
                       ("d", "download")):
        # b and c send before they receive (priority = upload): c's conflicts keep the
        # relay's version as a copy and send its own, in one pass
        world.add(name, mode=mode, **({"priority": "upload"} if name in ("b", "c") else {}))
    started = time.monotonic()
    scenario = Scenario(world, seed)
    for _ in range(operations):
        scenario.operate()
        if scenario.rng.random() < 0.4:
            scenario.sync_one()
    rounds = world.quiesce(WRITERS)
    trees = {name: tree(world.path(name)) for name in WRITERS}

    assert trees["a"] == trees["b"], "shared clients differ"
    assert trees["u"] == scenario.upload_model, "the upload client's folder was modified by a pull"
    taken = {n for n in NAMES if any(p.startswith(n + "/") for t in trees.values() for p in t)}
    for name in ("c", "d"):
        own = scenario.touched[name] | (taken if name == "c" else set())
        assert _untouched(trees[name], own) == _untouched(trees["a"], own), (
            f"{name} differs from the shared tree on paths it never touched")
    lost = scenario.ledger.missing(trees.values())
    assert not lost, f"writes lost: {lost}"
    assert relay_names(world, "data") == [], "payloads left on the relay after everyone synced"
    return (f"[{world.target.name}] seed {seed}: {operations} operations, {scenario.passes} passes during them "
            f"({scenario.process_passes} as processes), {len(scenario.ledger.written)} writes, "
            f"{len(scenario.ledger.superseded)} superseded, converged in {rounds} rounds, "
            f"{len(trees['a'])} files in the shared tree, {time.monotonic() - started:.1f}s")


def test_random_operations_converge_without_loss(world: World) -> None:
    print("\n" + run_scenario(world, seed=20261122))
