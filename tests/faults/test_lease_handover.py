"""The hand-over stamp (doc/protocol.rst, "The hand-over stamp"), in both layouts.

A pass reads the relay before it takes the lease. It reuses that reading
under the lease, without reading the relay again, only when the previous
holder released its lease with the stamp of the very state this client read:
in the index layout the index (``index/`` is then listed once), in the
placeholder layout the clean change marker under which it read (``meta/``,
listed by a full reading, is then listed once). What these prove, with
real clients on a local-folder relay:

* a commit that lands between a client's reading and its lease (another
  client's whole pass runs there) is seen: the client reads again, and its own
  change to the same file becomes a conflict, not a silent overwrite;
* a holder that ends with an error releases without a stamp, so the next
  holder reads again;
* where the stamp matches, the relay phase costs no second reading (the
  request count of a push shows it), and reclaim still sees the
  acknowledgement the client wrote after its reading;
* in the placeholder layout, a holder that changed nothing leaves no stamp
  (a change made behind the marker could hide behind the one it read).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from bench.counting import CountingRelay
from escale.crypto import plain_envelope
from escale.errors import RelayPermissionDenied
from escale.protocol.lease import list_leases, read_record
from escale.protocol.objects import LeaseRecord
from escale.relay import Entry, Relay, make_relay
from escale.relay.delegating import DelegatingRelay
from escale.relay.retry import RetryingRelay
from escale.sync.client import SyncClient
from tests.faults.world import World, open_relay, sha, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(300)


class _BeforeLease(DelegatingRelay):
    """``inner``; the first listing of ``lease/`` first runs ``hook`` (another
    client's pass, between this client's reading and its lease)."""

    def __init__(self, inner: Relay, hook: Callable[[], object], counts: Counter[str]) -> None:
        super().__init__(inner)
        self._hook: Callable[[], object] | None = hook
        self.counts = counts

    def _list(self, folder: str) -> list[Entry]:
        if folder == "lease" and self._hook is not None:
            hook, self._hook = self._hook, None
            hook()
        self.counts[folder or "/"] += 1
        return super()._list(folder)


#: the folder that a reading lists once, and a second reading under the lease again
READ_AGAIN = {"index": "index", "placeholder": "meta"}


@pytest.fixture(params=sorted(READ_AGAIN))
def layout(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _world(tmp_path: Path, target: RelayTarget, layout: str = "index") -> World:
    """Clients in ``layout``, without encryption (the tests read lease records)."""
    world = World(str(tmp_path), target, target.new_folder())
    world.common.update({"index": "yes" if layout == "index" else "no", "lock timeout": "600"})
    return world


def _one_file_sent(tmp_path: Path, target: RelayTarget, layout: str = "index") -> tuple[World, str, str]:
    """Clients a and b; a has sent one.txt (and released its lease with a stamp)."""
    world = _world(tmp_path, target, layout)
    a, b = world.add("a"), world.add("b")
    write(a, "one.txt", "one\n")
    world.sync("a")
    return world, a, b


def _client_with_hook(world: World, name: str, hook: Callable[[], object], counts: Counter[str]) -> SyncClient:
    settings = world.settings(name)
    hooked: list[bool] = []

    def factory() -> Relay:
        inner = make_relay(settings.relay)
        if hooked:  # only the pass's main connection (the first) runs the hook
            return RetryingRelay(CountingRelay(inner, Counter()))
        hooked.append(True)
        return RetryingRelay(_BeforeLease(inner, hook, counts))

    return SyncClient(settings, relay_factory=factory)


def test_a_commit_between_the_reading_and_the_lease_is_seen(tmp_path: Path, target_file: RelayTarget,
                                                            layout: str) -> None:
    world = _world(tmp_path, target_file, layout)
    a, b = world.add("a"), world.add("b")
    write(a, "shared.txt", "first\n")
    world.sync("a")
    world.sync("b")
    assert tree(b) == {"shared.txt": sha(b"first\n")}
    write(b, "shared.txt", "b's edit\n")
    write(a, "shared.txt", "a's edit\n")
    counts: Counter[str] = Counter()
    # a reads the relay; then b's whole pass commits its edit; then a takes the lease
    report = _client_with_hook(world, "a", lambda: world.sync("b"), counts).run_pass()
    assert not report.errors, report.errors
    assert counts[READ_AGAIN[layout]] == 2, counts  # the stamp differed: read again under the lease
    world.quiesce(["a", "b"])
    for root in (a, b):  # both edits kept, one as a conflict copy
        contents = sorted(tree(root).values())
        assert contents == sorted([sha(b"a's edit\n"), sha(b"b's edit\n")]), tree(root)


def test_the_first_lease_of_a_repository_is_trusted_only_while_nothing_was_written(
        tmp_path: Path, target_file: RelayTarget) -> None:
    world = _world(tmp_path, target_file)
    a, b = world.add("a"), world.add("b")
    world.sync("a")  # creates the repository; nothing to push, no lease yet
    write(a, "new.txt", "from a\n")
    write(b, "new.txt", "from b\n")
    counts: Counter[str] = Counter()
    # a reads an empty index; b's first push takes the repository's first lease meanwhile
    report = _client_with_hook(world, "a", lambda: world.sync("b"), counts).run_pass()
    assert not report.errors, report.errors
    assert counts["index"] == 2, counts
    world.quiesce(["a", "b"])
    for root in (a, b):
        assert sorted(tree(root).values()) == sorted([sha(b"from a\n"), sha(b"from b\n")]), tree(root)


def test_the_stamp_spares_the_second_reading_and_reclaim_sees_the_new_acknowledgement(
        tmp_path: Path, target_file: RelayTarget, layout: str) -> None:
    world, a, b = _one_file_sent(tmp_path, target_file, layout)
    # b receives one.txt and, in the same pass, pushes two.txt: its acknowledgement
    # is written after its reading, and its relay phase reuses that reading
    write(b, "two.txt", "two\n")
    counts: Counter[str] = Counter()
    report = _client_with_hook(world, "b", lambda: None, counts).run_pass()
    assert report.pulled == ["one.txt"] and report.pushed == ["two.txt"], report.summary()
    assert counts[READ_AGAIN[layout]] == 1, counts  # a's release carried the stamp b read: no second reading
    # b's acknowledgement, written after its reading, counted: one.txt's content was reclaimed
    assert report.reclaimed == ["one.txt"], report.reclaimed
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) == {"one.txt": sha(b"one\n"), "two.txt": sha(b"two\n")}


class _FailingCommit(DelegatingRelay):
    """``inner``, refusing every put into ``index/`` (a server error that is
    not worth retrying)."""

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if name.startswith("index/"):
            raise RelayPermissionDenied(f"refused by the test: {name}", name=name)
        super()._put(name, source, exclusive)


def _last_lease(world: World) -> LeaseRecord:
    with open_relay(world) as relay:
        generation = list_leases(relay).current
        record = read_record(relay, plain_envelope(), generation)
    assert record is not None
    return record


def test_a_holder_that_failed_leaves_no_stamp_and_the_next_one_reads_again(
        tmp_path: Path, target_file: RelayTarget) -> None:
    world, a, b = _one_file_sent(tmp_path, target_file)
    first = _last_lease(world)
    assert first.released and first.stamp is not None and first.stamp.startswith("index "), first
    write(a, "two.txt", "two\n")
    settings = world.settings("a")
    failing = SyncClient(settings, relay_factory=lambda: _FailingCommit(make_relay(settings.relay)))
    with pytest.raises(RelayPermissionDenied):
        failing.run_pass()
    failed = _last_lease(world)
    assert failed.generation > first.generation and failed.released and failed.stamp is None, failed
    write(b, "three.txt", "three\n")
    counts: Counter[str] = Counter()
    report = _client_with_hook(world, "b", lambda: None, counts).run_pass()
    assert report.pushed == ["three.txt"], report.summary()
    assert counts["index"] == 2, counts  # no stamp to trust: index/ listed again under the lease
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) == {n: sha(f"{n[:-4]}\n".encode()) for n in ("one.txt", "two.txt", "three.txt")}


def test_a_placeholder_holder_that_changed_nothing_leaves_no_stamp(
        tmp_path: Path, target_file: RelayTarget) -> None:
    world, a, b = _one_file_sent(tmp_path, target_file, "placeholder")
    sent = _last_lease(world)
    assert sent.released and sent.stamp is not None and sent.stamp.startswith("placeholder "), sent
    write(a, "gone.txt", "soon gone\n")
    counts: Counter[str] = Counter()
    # the file a planned to push is gone when it holds the lease: it changes nothing
    report = _client_with_hook(world, "a", lambda: os.remove(os.path.join(a, "gone.txt")), counts).run_pass()
    assert report.pushed == [], report.summary()
    idle = _last_lease(world)
    assert idle.generation > sent.generation and idle.released and idle.stamp is None, idle
    write(b, "two.txt", "two\n")
    counts.clear()
    report = _client_with_hook(world, "b", lambda: None, counts).run_pass()
    assert report.pushed == ["two.txt"], report.summary()
    assert counts["meta"] == 2, counts  # no stamp to trust: read again under the lease
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) == {"one.txt": sha(b"one\n"), "two.txt": sha(b"two\n")}
