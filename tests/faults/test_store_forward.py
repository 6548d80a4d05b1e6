"""Store and forward: a full relay makes pushers wait, never drop a file; a
receiver that is down pins only the payloads it has not acknowledged.

* ``disk quota`` smaller than two files: the first is sent, the second waits
  (logged, retried each pass) until the first was received and reclaimed, then
  goes; the relay never holds more than the quota; nothing is dropped.
* Three clients, one of them down: the payloads it acknowledged before going
  down are reclaimed; those sent while it is down stay (and only those) until
  it comes back and takes them.
"""

from __future__ import annotations

import os

import pytest

from tests.faults.world import World, relay_names, tree, write

pytestmark = pytest.mark.timeout(180)

SIZE = 100_000


def _stored(world: World) -> int:
    relay = world.target.relay(world.folder)
    relay.open()
    try:
        return sum(e.size for e in relay.list("data"))
    finally:
        relay.close()


def test_quota_makes_pushers_wait(world: World) -> None:
    a = world.add("a", disk_quota=f"{int(SIZE * 1.5)}B")  # a bare number means megabytes
    b = world.add("b")
    world.sync("b")  # a receiver exists: payloads wait for it
    write(a, "one.bin", os.urandom(SIZE))
    write(a, "two.bin", os.urandom(SIZE))
    first = world.sync("a")
    assert len(first.pushed) == 1 and first.pending_up == 1, first.summary()
    assert _stored(world) <= SIZE * 1.5
    waited = 0
    for _ in range(10):  # b receives, a reclaims, then the second file goes
        world.sync("b")
        report = world.sync("a")
        assert _stored(world) <= SIZE * 1.5, "the relay holds more than the quota"
        if report.pushed:
            break
        waited += 1
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) and len(tree(b)) == 2, "a file was dropped"
    assert relay_names(world, "data") == []
    print(f"\n[{world.target.name}] quota {int(SIZE * 1.5)} bytes, two files of {SIZE}: the second waited "
          f"{waited + 1} passes of a, then went; nothing dropped")


def test_receiver_down_pins_only_its_pending_payloads(world: World) -> None:
    a = world.add("a")
    b = world.add("b")
    c = world.add("c")
    write(a, "before.bin", os.urandom(5_000))
    world.quiesce(["a", "b", "c"])
    assert relay_names(world, "data") == [], "acknowledged by everyone, yet kept"
    # c goes down; a sends two more, b takes them
    write(a, "while-down-1.bin", os.urandom(5_000))
    write(a, "while-down-2.bin", os.urandom(5_000))
    world.quiesce(["a", "b"])
    pinned = relay_names(world, "data")
    assert len(pinned) == 2, pinned  # exactly the versions c has not acknowledged
    assert set(tree(b)) == {"before.bin", "while-down-1.bin", "while-down-2.bin"}
    # c comes back: it receives them and the relay empties
    world.quiesce(["c", "a", "b"])
    assert tree(c) == tree(a) == tree(b)
    assert relay_names(world, "data") == []
