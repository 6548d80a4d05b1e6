"""The change marker: a pass with nothing to do costs a few requests, not one per file.

A writer advances the relay's ``marker`` object whenever it changes ``meta/``
or ``data/``; a reader that finds the marker as it was at its last full read
lists neither folder and reads no placeholder. The marker is only an
optimisation: a marker that goes back is reported as a rollback, and the
reader then reads the relay in full (so nothing older is applied).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import BinaryIO

import pytest

from bench.counting import CountingRelay
from escale.protocol import layout
from escale.protocol.marker import MARKER
from escale.relay import Entry, Relay, make_relay
from escale.relay.retry import RetryingRelay
from escale.sync.client import PassReport, SyncClient
from tests.faults.world import World, relay_delete, relay_get, relay_put, tree, write

pytestmark = pytest.mark.timeout(240)


class Recording(CountingRelay):
    """A counting relay that also remembers the names listed and read."""

    def __init__(self, inner: Relay, counts: Counter[str], names: list[tuple[str, str]]) -> None:
        super().__init__(inner, counts)
        self.names = names

    def _list(self, folder: str) -> list[Entry]:
        self.names.append(("list", folder))
        return super()._list(folder)

    def _get(self, name: str, sink: BinaryIO) -> None:
        self.names.append(("get", name))
        super()._get(name, sink)


def _counted_pass(world: World, name: str) -> tuple[PassReport, Counter[str], list[tuple[str, str]]]:
    settings = world.settings(name)
    counts: Counter[str] = Counter()
    names: list[tuple[str, str]] = []
    client = SyncClient(settings, relay_factory=lambda: RetryingRelay(
        Recording(make_relay(settings.relay), counts, names)))
    return client.run_pass(), counts, names


def _in(folder: str, name: str) -> bool:
    return name == folder or name.startswith(folder + "/")


def test_a_pass_with_nothing_to_do_reads_no_placeholder(world: World) -> None:
    a = world.add("a")
    b = world.add("b")
    for i in range(30):
        write(a, f"folder{i % 3}/file{i}.txt", f"content {i}\n")
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b)
    for name in ("a", "b"):
        report, counts, names = _counted_pass(world, name)
        assert not report.changed and not report.errors, report.summary()
        read = [n for op, n in names if op == "get" and (_in(layout.META, n) or _in(layout.DATA, n))]
        assert read == [], f"[{name}] a pass with nothing to do read {read}"
        assert counts["get"] <= 2, names  # the repository header and the marker
        assert counts["put"] == counts["delete"] == 0, counts
        lists = [n for op, n in names if op == "list"]
        if world.target.name == "file":
            # the root (layout check), clients/ and acks/; meta/ and data/ only when their
            # folder times moved
            assert len(lists) <= 3 and not {layout.META, layout.DATA} & set(lists), lists
        else:
            # whole-second folder times cannot show a change made within the second of the last
            # read: meta/ and data/ are listed too (names only), never one request per file
            assert len(lists) <= 5, lists


def test_a_change_on_the_relay_is_seen_after_no_change_passes(world: World) -> None:
    a = world.add("a")
    b = world.add("b")
    write(a, "doc.txt", "one\n")
    world.quiesce(["a", "b"])
    world.sync("b")  # a pass with nothing to do: b trusts its snapshot from here
    write(a, "doc.txt", "two, longer\n")
    write(a, "new.txt", "new\n")
    world.sync("a")
    world.sync("b")
    with open(os.path.join(b, "doc.txt"), encoding="utf-8") as handle:
        assert handle.read() == "two, longer\n"
    assert tree(a) == tree(b)


def test_a_marker_that_goes_back_is_reported(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    b = world.add("b")
    write(a, "doc.txt", "one\n")
    world.quiesce(["a", "b"])
    old_marker = relay_get(world, MARKER)
    write(a, "doc.txt", "two\n")
    world.quiesce(["a", "b"])
    trees = (tree(a), tree(b))
    relay_put(world, {MARKER: old_marker})  # the relay replays an older marker
    report = world.sync("b")
    assert any("change marker" in line and "went back" in line for line in report.warnings), report.warnings
    assert (tree(a), tree(b)) == trees  # nothing older applied
    # a full read still happened: a change made meanwhile by hand is not missed either
    report = world.sync("a")
    assert any("went back" in line for line in report.warnings), report.warnings


def test_a_lost_marker_is_reported(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    world.add("b")
    write(a, "doc.txt", "one\n")
    world.quiesce(["a", "b"])
    relay_delete(world, [MARKER])
    report = world.sync("b")
    assert any("change marker" in line and "missing" in line for line in report.warnings), report.warnings
