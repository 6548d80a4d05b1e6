"""Five clients of every mode under random writes, deletions, passes and
access modifiers (``r+``, ``r-``, ``w+``, ``w-`` and their removal, set as
``escalectl access`` sets them): whatever the modifiers say, the clients
settle and no write is lost.

Modifiers make clients disagree on purpose (a ``w-`` file keeps its local
content, an ``r-`` file stays home), so the trees are not compared; what must
hold is that every content the test wrote, unless the test itself overwrote
or deleted it on a client holding it, is still on some client, at its path or
as a conflict copy. Written after a ``w-`` client was found replacing
another client's version on the relay (``test_kept_versions.py``); without
that fix, 15 of 30 seeds fail in each layout, seed 15 among them. Seed 15 then
found a conservative ``r-`` file whose relay version was fetched as a copy
at every pass, until the payload was reclaimed under the fetch. Every pass
must also end without an error.
"""

from __future__ import annotations

import random

import pytest

from escale.ops.access import set_access
from tests.faults.world import Ledger, World, tree

pytestmark = pytest.mark.timeout(300)

CLIENTS = {"a": "shared", "b": "shared", "c": "conservative", "u": "upload", "d": "download"}
NAMES = [f"{folder}f{i}.txt" for folder in ("", "s/") for i in range(4)]


@pytest.mark.parametrize(("index", "seed"), [("no", 15), ("yes", 15)])
def test_random_modifiers_never_lose_a_write(file_world: World, index: str, seed: int) -> None:
    world = file_world
    world.common["index"] = index
    for name, mode in CLIENTS.items():
        world.add(name, mode=mode, **({"priority": "upload"} if name in ("b", "c") else {}))
    rng = random.Random(seed)
    ledger = Ledger()
    for step in range(250):
        client = rng.choice(list(CLIENTS))
        root = world.path(client)
        rel = rng.choice(NAMES)
        kind = rng.choices(["write", "delete", "access", "sync"], [5, 1, 2, 4])[0]
        if kind == "write":
            data = f"{client}:{rel}:{step}\n".encode() + rng.randbytes(rng.choice([0, 50]))
            ledger.write(client, root, rel, data)
        elif kind == "delete" and rel in tree(root):
            ledger.delete(root, rel)
        elif kind == "access":
            set_access(world.settings(client), rel, {rng.choice("rw"): rng.choice([True, False, None])})
        elif kind == "sync":
            report = world.sync(client)
            assert report.errors == [], report.errors
    world.quiesce(list(CLIENTS), max_rounds=10)
    lost = ledger.missing(tree(world.path(name)) for name in CLIENTS)
    assert not lost, f"writes lost: {lost}"
