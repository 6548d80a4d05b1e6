"""The placeholder layout's rules, still holding in the index layout (``index = yes``).

* ``disk quota``: a push packs files into a page only while the page fits the
  space left, commits that page and leaves the rest waiting (nothing is
  dropped); once the receiver took the page and the pusher reclaimed it, the
  next files go, until all have; the relay's pages never exceed the quota.
* Store and forward: a receiver that is down pins only the pages holding
  versions it has not acknowledged; when it comes back it receives them and
  the relay empties.
* ``priority = upload``: a real ``escale --once`` sends its pending files
  before it receives (the order of its steps says so); without it, receiving
  comes first.
* ``puller count = 1``: the page goes once one receiver took it; a second
  receiver is told what it missed (logged once), and a newer version reaches it.
* Access modifiers set with a real ``escalectl access``: an ``r-`` file is not
  sent, a ``w-`` file is not overwritten, and everything else still flows.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from escale.errors import RelayNotFound
from escale.protocol.index import repository as index_repository
from tests.faults.crash_points import steps_reached
from tests.faults.world import World, relay_names, relay_put, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(240)

SIZE = 100_000


def _index_world(base: Path, target: RelayTarget) -> World:
    world = World(str(base), target, target.new_folder())
    world.common["index"] = "yes"
    return world


@pytest.fixture
def file_index_world(tmp_path: Path, target_file: RelayTarget) -> World:
    return _index_world(tmp_path, target_file)


@pytest.fixture(params=["file", "sftp"])
def index_world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    target: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    return _index_world(tmp_path, target)


def _stored(world: World) -> int:
    """Bytes of content objects (pages and big objects) on the relay (a
    folder appears with its first object)."""
    relay = world.target.relay(world.folder)
    relay.open()
    try:
        total = 0
        for folder in ("pages", "big"):
            with contextlib.suppress(RelayNotFound):
                total += sum(e.size for e in relay.list(folder) if not e.is_dir)
        return total
    finally:
        relay.close()


def test_quota_cuts_pages_to_fit_and_the_rest_waits_for_reclaim(index_world: World) -> None:
    world = index_world
    quota = int(SIZE * 2.5)
    a = world.add("a", disk_quota=f"{quota}B")
    b = world.add("b")
    world.sync("b")  # a receiver exists: pages wait for it
    for i in range(5):
        write(a, f"f{i}.bin", os.urandom(SIZE))  # incompressible: stored as is
    first = world.sync("a")
    assert len(first.pushed) == 2 and first.pending_up == 3, first.summary()
    assert len(relay_names(world, "pages")) == 1 and _stored(world) <= quota
    passes = 1
    while set(tree(b)) != set(tree(a)):
        assert passes < 20, "the push never completed"
        world.sync("b")
        world.sync("a")
        passes += 1
        assert _stored(world) <= quota, "the relay holds more than the quota"
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) and len(tree(b)) == 5, "a file was dropped"
    assert relay_names(world, "pages") == [] and relay_names(world, "big") == []
    print(f"\n[{world.target.name}] quota {quota} bytes, five files of {SIZE}: pages of at most two files, "
          f"all sent after {passes} passes of a; nothing dropped")


def test_a_receiver_down_pins_only_the_pages_it_lacks(file_index_world: World) -> None:
    world = file_index_world
    a, b, c = world.add("a"), world.add("b"), world.add("c")
    write(a, "before.bin", os.urandom(5_000))
    world.quiesce(["a", "b", "c"])
    assert relay_names(world, "pages") == [], "acknowledged by everyone, yet kept"
    write(a, "while-down-1.bin", os.urandom(5_000))  # c is down: a sends two, b takes them
    write(a, "while-down-2.bin", os.urandom(5_000))
    world.quiesce(["a", "b"])
    assert len(relay_names(world, "pages")) == 1, "the page c lacks was not kept (or more than it)"
    assert set(tree(b)) == {"before.bin", "while-down-1.bin", "while-down-2.bin"}
    world.quiesce(["c", "a", "b"])  # c comes back
    assert tree(c) == tree(a) == tree(b)
    assert relay_names(world, "pages") == []


@pytest.mark.parametrize("priority", [True, False])
def test_priority_upload_sends_before_receiving(file_index_world: World, tmp_path: Path, priority: bool) -> None:
    world = file_index_world
    a = world.add("a", **({"priority": "upload"} if priority else {}))
    b = world.add("b")
    write(b, "from-b.txt", "b wrote this\n")
    world.sync("a")
    world.sync("b")
    write(a, "from-a.txt", "a wrote this\n")
    log = str(tmp_path / "steps.log")
    world.run("a", env={"ESCALE_CRASH_LOG": log})
    steps = steps_reached(log)
    pushed, received = steps.index("pushed from-a.txt"), steps.index("downloaded from-b.txt")
    assert (pushed < received) == priority, steps
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) and set(tree(a)) == {"from-a.txt", "from-b.txt"}
    assert relay_names(world, "pages") == []


def test_puller_count_one_lets_the_page_go_and_tells_the_second_receiver(file_index_world: World) -> None:
    world = file_index_world
    a = world.add("a", puller_count="1")
    b, c = world.add("b"), world.add("c")
    world.sync("b")
    world.sync("c")
    write(a, "report.txt", "only one puller gets this")
    assert world.sync("a").pushed == ["report.txt"]
    assert world.sync("b").pulled == ["report.txt"]
    assert world.sync("a").reclaimed == ["report.txt"]  # puller count 1 reached
    assert relay_names(world, "pages") == []
    world.run("c")
    assert "report.txt" not in tree(c)
    # "from a" or "from a@<host>", as the pusher names itself
    lines = [line for line in world.log_text().splitlines() if "report.txt: version 1 from a" in line]
    assert len(lines) == 1 and lines[0].endswith(
        " missed: puller count 1 reached before this client received it"), lines
    report = world.sync("c")  # still listed in the pass's warnings, not logged again
    assert len(report.warnings) == 1 and report.warnings[0].startswith("report.txt: version 1 from a")
    assert world.log_text().count("report.txt: version 1 from a") == 1, "logged more than once"
    write(a, "report.txt", "version two")
    world.sync("a")
    assert world.sync("c").pulled == ["report.txt"]
    assert tree(c)["report.txt"] == tree(a)["report.txt"] != tree(b)["report.txt"]


def test_access_modifiers_hold(file_index_world: World) -> None:
    world = file_index_world
    a, b = world.add("a"), world.add("b")
    write(a, "kept.txt", "original\n")
    world.quiesce(["a", "b"])
    world.access(os.path.join(b, "kept.txt"), "w-")
    world.access(os.path.join(a, "draft.txt"), "r-")
    write(a, "draft.txt", "private\n")
    write(a, "public.txt", "for everyone\n")
    write(a, "kept.txt", "changed on a\n")
    world.quiesce(["a", "b"])
    assert tree(b)["public.txt"] == tree(a)["public.txt"], "the pull did not happen"
    assert "draft.txt" not in tree(b), "an r- file was sent"
    with open(os.path.join(b, "kept.txt"), encoding="utf-8") as handle:
        assert handle.read() == "original\n", "a w- file was overwritten"


def test_a_page_whose_member_a_receiver_declines_is_still_reclaimed(file_index_world: World) -> None:
    """b keeps its own kept.txt (``w-``): declining a version acknowledges it, so the page
    holding it goes once everyone is done, and the relay holds no content afterwards."""
    world = file_index_world
    a, b = world.add("a"), world.add("b")
    write(a, "kept.txt", "original\n")
    world.quiesce(["a", "b"])
    world.access(os.path.join(b, "kept.txt"), "w-")
    write(a, "kept.txt", "changed on a, declined by b\n")
    world.quiesce(["a", "b"])
    with open(os.path.join(b, "kept.txt"), encoding="utf-8") as handle:
        assert handle.read() == "original\n"
    world.quiesce(["a", "b"])
    assert relay_names(world, "pages") == [] and relay_names(world, "big") == []


def test_orphans_of_other_clients_are_swept_every_few_generations(file_index_world: World,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A page no generation names (another client died between its upload and its
    delta; it never comes back to settle it) is not looked for at every pass (two
    listings saved per push), but is removed once SWEEP_EVERY generations went by."""
    monkeypatch.setattr(index_repository, "SWEEP_EVERY", 4)
    world = file_index_world
    a, b = world.add("a"), world.add("b")
    write(a, "first.txt", "1\n")
    world.quiesce(["a", "b"])
    orphan = "pages/000000000999.0123456789abcdef"
    relay_put(world, {orphan: b"left by a client that never came back"})
    swept = False
    for round_ in range(12):
        write(a, f"file{round_}.txt", f"{round_}\n")
        world.sync("a")
        world.sync("b")
        if orphan not in relay_names(world, "pages"):
            swept = True
            break
        assert round_ < 8, "the orphan outlived more than SWEEP_EVERY generations"
    assert swept
    assert tree(a) == tree(b)
