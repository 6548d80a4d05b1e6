"""Clients with ``index = yes``: the index layout end to end.

What these prove: five clients of every mode converge under random operations
without losing a write and leave no content object behind, on every backend a
process reaches (local folder, FTP, FTPS, WebDAV, SFTP, the rclone serve
servers, and the rclone backend over a local folder, SFTP and S3, which have
no atomic rename); two clients converge with big files and deletions (local
folder and SFTP); conflicts keep both versions and mass deletions are held;
each attack on the relay's objects (a page or a big object flipped, cut or
swapped, an index delta flipped, cut, swapped or replaced by an older one, an
old index replayed) is refused by a real receiver process that writes no byte
of it, and repairing the relay heals; a client whose ``index`` setting
disagrees with the repository stops with one line; and relay requests are
counted: a push of 1,000 files takes a handful of requests (not one per
file), and a pass with nothing to do at most 3.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from bench.counting import CountingRelay
from escale.crypto import generate_key_file
from escale.relay import make_relay
from escale.relay.retry import RetryingRelay
from escale.sync.client import SyncClient
from tests.faults.world import World, relay_names, tree, write
from tests.relay.backends import PROCESS_BACKENDS
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


#: Every backend a separate process reaches, and the random operations the
#: convergence scenario runs on it: 200 on the fast ones, fewer on the slow
#: servers (each of their requests costs milliseconds: CI's time budget), at
#: least 30 everywhere (some 15 passes, one of them as a process, then
#: quiescence of five clients). rclone's remotes have no atomic rename and
#: S3 has no folders.
CONVERGENCE_OPERATIONS = {
    "file": 200,
    "sftp": 120,
    "ftp": 60,
    "ftps": 40,
    "ftp_rclone": 40,
    "webdav": 40,
    "webdav_rclone": 50,
    "sftp_rclone": 30,
    "rclone_local": 30,
    "rclone_sftp": 30,
    "rclone_s3": 30,
}
assert set(CONVERGENCE_OPERATIONS) == set(PROCESS_BACKENDS), "a backend without an index convergence run"


@pytest.mark.parametrize("backend", list(CONVERGENCE_OPERATIONS))
def test_five_clients_of_every_mode_converge(tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    world = _index_world(tmp_path, target)
    print("\n" + run_scenario(world, seed=20261129, operations=CONVERGENCE_OPERATIONS[backend]))
    assert relay_names(world, "pages") == [] and relay_names(world, "big") == []
    assert relay_names(world, "meta") == [] and relay_names(world, "data") == []


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
    report = world.sync("b")  # allowed on a, the deletions go out deliberate: b applies them unheld
    assert not report.held and len(report.deleted_local) == 19
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) and len(tree(b)) == 2


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


def _push_thousand(world: World, a: str, what: str) -> tuple[Counter[str], int]:
    """Write 1,000 small files in client "a"'s folder ``a`` and run its pass
    with the requests counted; return the counts and the pages on the relay."""
    for i in range(1000):
        write(a, f"d{i % 10}/f{i:04d}.txt", f"small file {i}\n" * 20)
    counts: Counter[str] = Counter()
    report = _counted(world, "a", counts).run_pass()
    assert len(report.pushed) == 1000
    pages = len(relay_names(world, "pages"))
    print(f"\n{what}: {_requests(counts)} requests ({dict(counts)}), {pages} page(s)")
    return counts, pages


def test_request_counts_of_a_big_push_and_of_a_pass_with_nothing_to_do(tmp_path: Path,
                                                                       target_file: RelayTarget) -> None:
    # a long lock timeout: no renewal of the lease (on its own connection) during the push
    world = _index_world(tmp_path, target_file, **{"lock timeout": "600"})
    a, _ = world.add("a"), world.add("b")
    world.sync("a")
    world.sync("b")
    world.sync("a")
    counts, pages = _push_thousand(world, a, "push of 1000 files")
    # the header, clients/ and index/ listed, the lease (list, read the previous record, claim: an
    # atomic exclusive put is not read back), one page, one delta, the release: 8 plus the pages,
    # whatever the number of files; the previous holder's stamp spares a second reading under the
    # lease (issue 10's bound is 10 plus the pages; an old lease pruned adds up to a few deletions,
    # once every 8 generations)
    assert _requests(counts) <= 10 + pages, counts
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


@pytest.mark.parametrize("created_by", ["the pusher", "another client"])
def test_a_clients_first_push_stays_within_the_bound(tmp_path: Path, target_file: RelayTarget,
                                                     created_by: str) -> None:
    """Issue 10's bound (10 requests plus the pages) holds for a client's
    very first pass too: one that creates the repository as it pushes (no
    folder is made ahead, nothing is listed in a repository it just made)
    and one that joins a repository another client made (no record is
    written while it would acknowledge nothing)."""
    world = _index_world(tmp_path, target_file, **{"lock timeout": "600"})
    a, b = world.add("a"), world.add("b")
    if created_by == "another client":
        world.sync("b")
    counts, pages = _push_thousand(world, a, f"first push of 1000 files ({created_by} created the repository)")
    assert _requests(counts) <= 10 + pages, counts
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a)


# ------------------------------------------------------------------ tampering through real processes

def _flip(path: str) -> None:
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))


def _truncate(path: str) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _swap(first: str, second: str) -> None:
    spare = first + ".swap"
    os.rename(first, spare)
    os.rename(second, first)
    os.rename(spare, second)


def _newest(folder: str, count: int = 1) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if not n.endswith(".full"))
    assert len(names) >= count, names
    return [os.path.join(folder, n) for n in names[-count:]]


def _tamper(kind: str, relay: str, saved_index: str) -> None:
    """Apply one attack of :data:`TAMPERING` to the relay folder ``relay``."""
    pages, index, big = (os.path.join(relay, f) for f in ("pages", "index", "big"))
    if kind == "flip page":
        _flip(_newest(pages)[0])
    elif kind == "truncate page":
        _truncate(_newest(pages)[0])
    elif kind == "swap pages":
        _swap(*_newest(pages, 2))
    elif kind == "flip big object":
        _flip(_newest(big)[0])
    elif kind == "truncate big object":
        _truncate(_newest(big)[0])
    elif kind == "flip index delta":
        _flip(_newest(index)[0])
    elif kind == "truncate index delta":
        _truncate(_newest(index)[0])
    elif kind == "swap index deltas":
        _swap(*_newest(index, 2))
    elif kind == "replay an old delta as the newest":
        older, newest = _newest(index, 2)
        shutil.copyfile(older, newest)
    else:
        assert kind == "replay an old index"
        shutil.rmtree(index)
        shutil.copytree(saved_index, index)


#: attacks on content (the files they hold are refused, the rest arrives) and
#: on the index (the receiver applies nothing at all)
CONTENT_ATTACKS = ["flip page", "truncate page", "swap pages", "flip big object", "truncate big object"]
INDEX_ATTACKS = ["flip index delta", "truncate index delta", "swap index deltas",
                 "replay an old delta as the newest", "replay an old index"]
TAMPERING = CONTENT_ATTACKS + INDEX_ATTACKS


@pytest.mark.parametrize("kind", TAMPERING)
def test_tampering_is_detected_by_a_real_receiver_and_repairing_the_relay_heals(
        tmp_path: Path, target_file: RelayTarget, kind: str) -> None:
    """Encrypted: two pushes (pages and a big object each), then one attack on
    the relay's objects; ``escale --once`` on the receiver must refuse what was
    changed, write no byte of it, and say so in the log; once the relay's
    objects are put back, the receiver converges. (An old index replayed is
    detected by a receiver that saw a newer one: one that never did reads a
    consistent earlier state, which is no attack on it.)"""
    generate_key_file(str(tmp_path / "escale.key"))
    world = _index_world(tmp_path, target_file, encryption="yes", key=str(tmp_path / "escale.key"),
                         maxpagesize="1MB")
    a, b = world.add("a"), world.add("b")
    world.sync("b")
    relay = _relay_dir(world)
    for push in ("one", "two"):
        for i in range(3):
            write(a, f"{push}/{i}.txt", f"{push} {i}\n" * 200)
        write(a, f"{push}/big.bin", os.urandom(300_000))  # above a quarter of the page: its own object
        world.sync("a")
        if push == "one":
            shutil.copytree(os.path.join(relay, "index"), str(tmp_path / "saved-index"))
    if kind == "replay an old index":
        world.sync("b")  # a rollback is a rollback of what the receiver saw
    pristine = str(tmp_path / "pristine")
    shutil.copytree(relay, pristine)
    before = tree(b)
    _tamper(kind, relay, str(tmp_path / "saved-index"))

    result = world.run("b", check=False)
    after = tree(b)
    wanted = tree(a)
    assert all(wanted[p] == h for p, h in after.items()), f"{kind}: the receiver wrote content that is not a's"
    if kind in INDEX_ATTACKS:
        assert after == before, f"{kind}: the receiver applied part of a tampered index"
        assert result.returncode != 0 and ("rolled back" in result.stderr or "relay object index/" in result.stderr), (
            result.returncode, result.stderr[-800:])
    else:
        assert set(after) < set(wanted), f"{kind}: every file arrived, the attack went unnoticed"
        assert "refusing relay object" in world.log_text() or result.returncode != 0, result.stderr[-800:]

    shutil.rmtree(relay)
    shutil.copytree(pristine, relay)  # the relay repaired (as from a backup of its own)
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) == wanted
