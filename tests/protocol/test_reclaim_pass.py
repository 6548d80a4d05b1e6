"""The reclaim pass of the placeholder layout: what it reports and keeps."""

from __future__ import annotations

import os

from escale.protocol import layout
from tests.faults.world import World, relay_names


def _write(root: str, rel: str, data: bytes) -> None:
    with open(os.path.join(root, rel), "wb") as handle:
        handle.write(data)


def test_reclaim_pass_reports_the_relay_as_it_left_it(file_world: World) -> None:
    """A pass that writes reports the relay's stored bytes as its relay
    phase left them (the state read under the lease, not the one read
    before): after the push, then after the reclaim; every path keeps its
    placeholder."""
    world = file_world
    a = world.add("a")
    world.add("b")
    for i in range(5):
        _write(a, f"f{i}.txt", b"x" * 100)
    first = world.sync("a")
    assert first.relay_bytes > 0
    world.sync("b")  # receives and acknowledges
    report = world.sync("a")
    assert sorted(report.reclaimed) == [f"f{i}.txt" for i in range(5)]
    assert report.relay_bytes == 0
    assert relay_names(world, layout.DATA) == []
    assert len(relay_names(world, layout.META)) == 5
    # the next pass reads the relay as the reclaim left it: nothing more to do
    again = world.sync("a")
    assert again.reclaimed == [] and again.relay_bytes == 0
