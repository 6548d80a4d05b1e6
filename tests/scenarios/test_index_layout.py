"""Clients with ``index = yes``: the index layout end to end.

What these prove, on a local-folder relay and a network relay (SFTP, OpenSSH):
five clients of every mode converge under random operations without losing a
write and leave no content object behind; conflicts keep both versions and
mass deletions are held; a relay whose index was rolled back, or whose page
was tampered with, stops the receiver without touching its files; a client
whose ``index`` setting disagrees with the repository stops with one line; and
relay requests are counted: a push of 1,000 files takes a handful of requests
(not one per file), and a pass with nothing to do at most 3.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from bench.counting import CountingRelay
from escale.crypto import generate_key_file
from escale.errors import ProtocolError
from escale.relay import make_relay
from escale.relay.retry import RetryingRelay
from escale.sync.client import SyncClient
from tests.faults.world import World, relay_names, tree, write
from tests.scenarios.test_convergence import run_scenario
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(400)


def _index_world(base: Path, target: RelayTarget, **common: str) -> World:
    world = World(str(base), target, target.new_folder())
    world.common.update({"index": "yes", **common})
    return world


@pytest.fixture(params=["file", "sftp"])
def index_world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    target: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    return _index_world(tmp_path, target)


def _counted(world: World, name: str, counts: Counter[str]) -> SyncClient:
    settings = world.settings(name)
    return SyncClient(settings, relay_factory=lambda: RetryingRelay(CountingRelay(make_relay(settings.relay),
                                                                                  counts)))


def _relay_dir(world: World) -> str:
    return world.target.config_for(world.folder)["relay directory"]


def _requests(counts: Counter[str]) -> int:
    """Requests made to the relay (connections not counted)."""
    return sum(n for op, n in counts.items() if op != "open")


def test_five_clients_of_every_mode_converge(index_world: World) -> None:
    print("\n" + run_scenario(index_world, seed=20261129))
    assert relay_names(index_world, "pages") == [] and relay_names(index_world, "big") == []
    assert relay_names(index_world, "meta") == [] and relay_names(index_world, "data") == []


def test_two_clients_converge_with_big_files_and_deletions(index_world: World) -> None:
    a = index_world.add("a", maxpagesize="1MB")
    b = index_world.add("b", maxpagesize="1MB")
    for i in range(40):
        write(a, f"docs/{i:02d}.txt", f"text {i}\n" * (i * 50))
    write(a, "big.bin", os.urandom(600_000))  # above a quarter of the page: its own object
    write(b, "from-b.txt", "b wrote this\n")
    index_world.quiesce(["a", "b"])
    assert tree(a) == tree(b) and len(tree(a)) == 42
    for i in range(0, 40, 2):
        os.remove(os.path.join(a, f"docs/{i:02d}.txt"))
    write(b, "docs/01.txt", "changed on b\n")
    index_world.quiesce(["a", "b"])
    assert tree(a) == tree(b) and len(tree(a)) == 22
    assert relay_names(index_world, "pages") == [] and relay_names(index_world, "big") == []


def test_conflicts_keep_both_and_mass_deletions_are_held(tmp_path: Path, target_file: RelayTarget) -> None:
    world = _index_world(tmp_path, target_file)
    a, b = world.add("a"), world.add("b")
    for i in range(20):
        write(a, f"f{i}.txt", f"file {i}\n")
    world.quiesce(["a", "b"])
    write(a, "f0.txt", "edited on a\n")
    write(b, "f0.txt", "edited on b\n")
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b)
    copies = [p for p in tree(a) if p.startswith("f0.conflict-")]
    assert len(copies) == 1 and len(tree(a)) == 21
    for i in range(1, 20):
        os.remove(os.path.join(a, f"f{i}.txt"))
    report = world.sync("a")
    assert len(report.held) == 19 and not report.deleted_remote
    world.sync("b")
    assert len(tree(b)) == 21  # nothing deleted on b
    report = world.sync("a", allow_mass_deletion=True)
    assert len(report.deleted_remote) == 19
    report = world.sync("b")  # the receiving side guards its own folder too
    assert len(report.held) == 19 and len(tree(b)) == 21
    report = world.sync("b", allow_mass_deletion=True)
    assert len(report.deleted_local) == 19
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) and len(tree(b)) == 2


def test_a_rolled_back_index_stops_the_receiver(tmp_path: Path, target_file: RelayTarget) -> None:
    world = _index_world(tmp_path, target_file)
    a, b = world.add("a"), world.add("b")
    write(a, "one.txt", "one\n")
    world.quiesce(["a", "b"])
    index = os.path.join(_relay_dir(world), "index")
    saved = str(tmp_path / "saved-index")
    shutil.copytree(index, saved)
    write(a, "two.txt", "two\n")
    world.quiesce(["a", "b"])
    assert set(tree(b)) == {"one.txt", "two.txt"}
    shutil.rmtree(index)
    shutil.copytree(saved, index)  # the relay serves an older index
    before = tree(b)
    with pytest.raises(ProtocolError, match="rolled back"):
        world.sync("b")
    assert tree(b) == before


def test_a_tampered_page_is_refused_and_the_file_left_alone(tmp_path: Path, target_file: RelayTarget) -> None:
    generate_key_file(str(tmp_path / "escale.key"))
    world = _index_world(tmp_path, target_file, encryption="yes", key=str(tmp_path / "escale.key"))
    a, b = world.add("a"), world.add("b")
    world.sync("b")
    write(a, "secret.txt", "content\n" * 100)
    world.sync("a")
    pages = os.path.join(_relay_dir(world), "pages")
    (name,) = os.listdir(pages)
    with open(os.path.join(pages, name), "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0x40]))
    report = world.sync("b")
    assert report.errors and not os.path.exists(os.path.join(b, "secret.txt"))
    assert "secret.txt" not in tree(b)


def test_a_client_whose_setting_disagrees_stops_with_one_line(tmp_path: Path, target_file: RelayTarget) -> None:
    world = _index_world(tmp_path, target_file)
    a = world.add("a")
    write(a, "x.txt", "x\n")
    world.sync("a")
    world.add("p", index="no")
    result = world.run("p", check=False)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "layout" in line]
    assert lines and "index layout" in lines[-1] and "escalectl migrate" in lines[-1]


def test_request_counts_of_a_big_push_and_of_a_pass_with_nothing_to_do(tmp_path: Path,
                                                                       target_file: RelayTarget) -> None:
    world = _index_world(tmp_path, target_file)
    a, _ = world.add("a"), world.add("b")
    world.sync("a")
    world.sync("b")
    world.sync("a")
    for i in range(1000):
        write(a, f"d{i % 10}/f{i:04d}.txt", f"small file {i}\n" * 20)
    counts: Counter[str] = Counter()
    report = _counted(world, "a", counts).run_pass()
    assert len(report.pushed) == 1000
    pages = len(relay_names(world, "pages"))
    print(f"\npush of 1000 files: {_requests(counts)} requests ({dict(counts)}), {pages} page(s)")
    # header, listings, lease (take, read back, renew, release), one page, one delta, acknowledgements:
    # a constant, not one per file
    assert _requests(counts) <= 20 + pages, counts
    counts.clear()
    report = _counted(world, "b", counts).run_pass()
    assert len(report.pulled) == 1000
    print(f"pull of 1000 files: {_requests(counts)} requests ({dict(counts)})")
    assert _requests(counts) <= 20, counts
    world.quiesce(["a", "b"])
    for name in ("a", "b"):
        counts.clear()
        report = _counted(world, name, counts).run_pass()
        assert not report.changed
        print(f"pass with nothing to do ({name}): {_requests(counts)} requests ({dict(counts)})")
        assert _requests(counts) <= 3, counts
