"""Four clients under random operations on whole folders: files written at
names that are folders elsewhere (``p`` beside ``p/f0``), folders removed
with everything in them, folders renamed (moved under another one, or
replacing one that went).

Every client registers before anything is sent (a client that joins later
misses what was reclaimed before it came: the relay is a buffer). After the
operations, the clients run until nothing changes; then every pass has ended
without an error, the shared clients hold identical trees, and no write is
lost (unless the test itself overwrote or removed it on a client holding it).
Removing a folder deletes many files at once, which the mass-deletion guard
would hold: the passes allow it, as a user would once asked.
"""

from __future__ import annotations

import os
import random
import shutil

import pytest

from tests.faults.world import Ledger, World, placeable, tree

pytestmark = pytest.mark.timeout(300)

CLIENTS = {"a": "shared", "b": "shared", "c": "conservative", "d": "download"}
FOLDERS = ["p", "p/q", "r", "p/q/s"]
FILES = [f"{folder}/f{i}" for folder in FOLDERS for i in range(2)] + ["p", "r", "p/q"]


@pytest.mark.parametrize(("index", "seed"), [("no", 4), ("yes", 23)])
def test_random_folder_operations_converge_without_loss(file_world: World, index: str, seed: int) -> None:
    world = file_world
    world.common["index"] = index
    for name, mode in CLIENTS.items():
        world.add(name, mode=mode)
    world.quiesce(list(CLIENTS))
    rng = random.Random(seed)
    ledger = Ledger()
    for step in range(200):
        client = rng.choice(["a", "b", "c", "a", "b", "d"])
        root = world.path(client)
        kind = rng.choices(["write", "remove folder", "rename folder", "sync"], [6, 1, 1, 5])[0]
        if kind == "write":
            free = [f for f in FILES if placeable(root, f)]
            if free:
                rel = rng.choice(free)
                ledger.write(client, root, rel, f"{client}:{rel}:{step}\n".encode())
        elif kind == "remove folder":
            folder = os.path.join(root, rng.choice(FOLDERS))
            if os.path.isdir(folder):
                for rel in tree(folder):
                    ledger.replace(folder, rel)
                shutil.rmtree(folder)
        elif kind == "rename folder":
            src, dst = rng.sample(FOLDERS, 2)
            source, target = os.path.join(root, src), os.path.join(root, dst)
            if (os.path.isdir(source) and not os.path.lexists(target) and not dst.startswith(src + "/")
                    and placeable(root, dst)):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.rename(source, target)
        else:
            report = world.sync(client, allow_mass_deletion=True)
            assert report.errors == [], report.errors
    world.quiesce(list(CLIENTS), max_rounds=10)
    trees = {name: tree(world.path(name)) for name in CLIENTS}
    assert trees["a"] == trees["b"], "shared clients differ"
    lost = ledger.missing(trees.values())
    assert not lost, f"writes lost: {lost}"
