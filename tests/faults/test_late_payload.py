"""A version committed while a receiver reads the relay is received, not taken for reclaimed.

In the placeholder layout a reading lists ``data/`` (the payloads), then
``meta/`` (the placeholders). A push that uploads its payload between the two
listings and commits its placeholder before the second shows the receiver a
latest version whose payload seems gone. Taken for reclaimed, a receiver in
conflict with that version kept its own copy, acknowledged the version without
having it, let it be reclaimed, and never received it: its folder lacked the
file for good while every pass reported nothing to do (seen with twenty clients
on one S3 relay). The reading now lists ``data/`` again when a latest
placeholder names a payload not listed that nobody acknowledged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from bench.counting import CountingRelay
from escale.protocol import layout
from escale.relay import Entry, Relay, make_relay
from escale.relay.retry import RetryingRelay
from escale.sync.client import SyncClient
from tests.faults.world import World, tree, write

pytestmark = pytest.mark.timeout(120)


class _BetweenListings(CountingRelay):
    """Runs ``then()`` once: right before the first listing of ``meta/`` that
    follows a listing of ``data/`` (a reading of the relay state)."""

    def __init__(self, inner: Relay, then: Callable[[], None]) -> None:
        super().__init__(inner, Counter())
        self._then: Callable[[], None] | None = then
        self._data_listed = False

    def _list(self, folder: str) -> list[Entry]:
        if folder == layout.DATA:
            self._data_listed = True
        elif folder == layout.META and self._data_listed and self._then is not None:
            then, self._then = self._then, None
            then()
        return super()._list(folder)


def test_a_conflicting_version_committed_during_the_reading_is_received(world: World) -> None:
    a = world.add("a")
    b = world.add("b")
    c = world.add("c")
    write(a, "shared.txt", "base\n")
    world.quiesce(["a", "b", "c"])
    write(c, "other.txt", "from c\n")  # the relay changed: b's next pass reads it in full
    assert world.sync("c").pushed == ["other.txt"]
    write(b, "shared.txt", "edited on b\n")
    write(a, "shared.txt", "edited on a\n")
    pushed = []

    def push_from_a() -> None:  # between b's listings of data/ and meta/
        report = world.sync("a")
        assert report.pushed == ["shared.txt"] and not report.errors, report.summary()
        pushed.append(True)

    settings = world.settings("b")
    client = SyncClient(settings, relay_factory=lambda: RetryingRelay(
        _BetweenListings(make_relay(settings.relay), push_from_a)))
    report = client.run_pass()
    assert pushed, "a's push did not run during b's reading"
    assert not report.errors, report.summary()
    world.quiesce(["a", "b", "c"])
    trees = {name: tree(world.path(name)) for name in ("a", "b", "c")}
    assert trees["a"] == trees["b"] == trees["c"], "b did not receive the version committed while it read the relay"
    with open(f"{world.path('b')}/shared.txt", encoding="utf-8") as handle:
        assert handle.read() == "edited on a\n"
    assert len(trees["b"]) == 3  # other.txt, and b's own edit kept as a conflict copy
