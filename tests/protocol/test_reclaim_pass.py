"""The reclaim pass of the placeholder layout: what it reports and keeps."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from typing import BinaryIO

import pytest

from escale.errors import EscaleError, RelayPermissionDenied
from escale.protocol import layout, repository
from escale.protocol.lease import Lease
from escale.protocol.repository import RelayState
from escale.relay import Relay, make_relay
from escale.relay.base import Capabilities
from escale.relay.delegating import DelegatingRelay
from escale.sync.client import SyncClient, state_dir_for
from escale.sync.state import StateDB
from tests.faults.world import World, relay_get, relay_names, relay_put


class _AckReads(DelegatingRelay):
    """A real backend that counts the reads of each acknowledgement object."""

    def __init__(self, inner: Relay, reads: Counter[str]) -> None:
        super().__init__(inner)
        self.reads = reads

    def _get(self, name: str, sink: BinaryIO) -> None:
        if name.startswith(layout.ACKS + "/"):
            self.reads[name] += 1
        super()._get(name, sink)


class _AckGroups(DelegatingRelay):
    """A real backend that records the acknowledgement names of each group read."""

    def __init__(self, inner: Relay, groups: list[list[str]]) -> None:
        super().__init__(inner)
        self.groups = groups

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        acks = [name for name in names if name.startswith(layout.ACKS + "/")]
        if acks:
            self.groups.append(acks)
        return super()._get_many(names, limit)


class _DeleteGroups(DelegatingRelay):
    """A real backend that records each group delete, declares group deletes
    when ``group`` is set, and refuses the ``refuse``-th name it is asked
    to delete (counting from 0)."""

    def __init__(self, inner: Relay, groups: list[list[str]], *, group: bool, refuse: int) -> None:
        super().__init__(inner)
        self.groups, self._group, self._refuse = groups, group, refuse
        self.refused = ""

    def _capabilities(self) -> Capabilities:
        return dataclasses.replace(self.inner.capabilities, group_delete=self._group)

    capabilities = property(_capabilities)

    def _delete_many(self, names: Sequence[str]) -> list[EscaleError | None]:
        self.groups.append(list(names))
        asked_before = sum(len(g) for g in self.groups) - len(names)
        if not asked_before <= self._refuse < asked_before + len(names):
            return super()._delete_many(names)
        self.refused = names[self._refuse - asked_before]
        done = iter(super()._delete_many([n for n in names if n != self.refused]))
        return [RelayPermissionDenied(f"refused: {n}", name=n) if n == self.refused else next(done) for n in names]

def _delivery_states(world: World, name: str) -> dict[str, str]:
    db = StateDB(os.path.join(state_dir_for(world.settings(name)), "state.db"))
    try:
        return {record.path: record.state for record in db.deliveries_in(("sent", "delivered"))}
    finally:
        db.close()


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


def _received_by_b(world: World, count: int) -> World:
    """Clients a and b; ``count`` files sent by a, received and acknowledged by b."""
    a = world.add("a")
    world.add("b")
    for i in range(count):
        _write(a, f"f{i:02d}.txt", b"y" * (i + 1))
    world.sync("a")
    world.sync("b")
    return world


def test_reclaim_pass_reads_each_acknowledgement_once(file_world: World) -> None:
    """The pass that reclaims the payloads also finds the files delivered:
    each acknowledgement object is opened once, by the reclaim, which the
    delivery check then trusts for the versions it reclaimed."""
    world = _received_by_b(file_world, 12)
    assert set(_delivery_states(world, "a").values()) == {"sent"}
    reads: Counter[str] = Counter()
    settings = world.settings("a")
    report = SyncClient(settings, relay_factory=lambda: _AckReads(make_relay(settings.relay), reads)).run_pass()
    assert len(report.reclaimed) == 12 and not report.errors
    assert sorted(reads) == relay_names(world, layout.ACKS) and set(reads.values()) == {1}
    assert _delivery_states(world, "a") == {f"f{i:02d}.txt": "delivered" for i in range(12)}


def test_reclaim_reads_the_acknowledgements_in_groups(file_world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reclaim reads the acknowledgements of up to ``RECLAIM_GROUP``
    reclaimable versions with one group read; a forged one in a group keeps
    its own payload only."""
    monkeypatch.setattr(repository, "RECLAIM_GROUP", 5)
    world = _received_by_b(file_world, 12)
    acks = relay_names(world, layout.ACKS)
    relay_put(world, {acks[6]: relay_get(world, acks[7])})  # another version's acknowledgement, renamed
    groups: list[list[str]] = []
    settings = world.settings("a")
    report = SyncClient(settings, relay_factory=lambda: _AckGroups(make_relay(settings.relay), groups)).run_pass()
    assert [len(group) for group in groups[:3]] == [5, 5, 2]  # the reclaim's
    assert sorted(name for group in groups[:3] for name in group) == acks
    assert groups[3:] == [[acks[6]]]  # the delivery check of the one version not reclaimed
    assert len(report.reclaimed) == 11
    forged = layout.parse_ack(acks[6])
    assert forged is not None
    left = relay_names(world, layout.DATA)
    assert len(left) == 1 and left[0].startswith(f"{layout.DATA}/{forged.key}.")


@pytest.mark.parametrize("group", [True, False])
def test_reclaim_deletes_the_payloads_in_groups_each_after_a_lease_check(
        file_world: World, monkeypatch: pytest.MonkeyPatch, group: bool) -> None:
    """Where the relay deletes groups cheaply, the payloads of a group of
    reclaimable versions go in one group delete, after one check of the
    lease; elsewhere one by one, each after its own check. A payload the
    relay refuses to delete stays and is tried again by the next pass; the
    rest of its group is reclaimed."""
    monkeypatch.setattr(repository, "RECLAIM_GROUP", 5)
    checks: list[int] = []
    real_check = Lease.check

    def counted(lease: Lease) -> None:
        checks.append(1)
        real_check(lease)

    monkeypatch.setattr(Lease, "check", counted)
    world = _received_by_b(file_world, 12)
    groups: list[list[str]] = []
    settings = world.settings("a")
    wrapped = _DeleteGroups(make_relay(settings.relay), groups, group=group, refuse=3)
    checks.clear()
    with pytest.raises(RelayPermissionDenied):  # the pass ends on it, as on any refused write
        SyncClient(settings, relay_factory=lambda: wrapped).run_pass()
    payload_groups = [g for g in groups if all(n.startswith(layout.DATA + "/") for n in g)]
    assert [len(g) for g in payload_groups] == ([5] if group else [1] * 4)
    assert len(checks) >= len(payload_groups)
    left = relay_names(world, layout.DATA)
    # the rest of the refused one's group went (one by one: those before it)
    assert len(left) == (8 if group else 9) and wrapped.refused in left
    groups.clear()
    again = SyncClient(settings, relay_factory=lambda: _DeleteGroups(
        make_relay(settings.relay), groups, group=group, refuse=-1)).run_pass()
    assert len(again.reclaimed) == len(left) and not again.errors
    assert relay_names(world, layout.DATA) == []
    assert [len(g) for g in groups if g[0].startswith(layout.DATA + "/")] == ([5, 3] if group else [1] * 9)

def test_refused_acknowledgement_keeps_the_payload_and_goes_with_its_version(file_world: World) -> None:
    """An acknowledgement object that does not open as its name says (here:
    another version's acknowledgement copied under the name of this one)
    never lets the payload go; it is removed with the version it names when
    that version is superseded, as genuine ones are. The relay state keeps
    no acknowledgement names: they are spelled again from key, version and
    client."""
    world = file_world
    a = world.add("a")
    world.add("b")
    _write(a, "f.txt", b"one" * 10)
    _write(a, "g.txt", b"two" * 10)
    world.sync("a")
    world.sync("b")  # receives both, acknowledges both
    acks = relay_names(world, layout.ACKS)
    assert len(acks) == 2
    # g's genuine acknowledgement, stored under f's acknowledgement name
    relay_put(world, {acks[0]: relay_get(world, acks[1])})
    forged_ref = layout.parse_ack(acks[0])
    assert forged_ref is not None
    report = world.sync("a")
    assert len(report.reclaimed) == 1  # the genuine one only
    delivered = {p for p, s in _delivery_states(world, "a").items() if s == "delivered"}
    assert delivered == set(report.reclaimed)  # the file of the refused one is not delivered
    left = relay_names(world, layout.DATA)
    assert len(left) == 1 and left[0].startswith(f"{layout.DATA}/{forged_ref.key}.")
    # the path's next version supersedes the acknowledged one: its payload and
    # every acknowledgement object listed for it, the refused one too, go
    for rel in ("f.txt", "g.txt"):
        _write(a, rel, b"three" * 10)
    world.sync("a")
    assert acks[0] not in relay_names(world, layout.ACKS)
    assert not any(name.startswith(f"{layout.DATA}/{forged_ref.key}.{forged_ref.version:010d}.")
                   for name in relay_names(world, layout.DATA))


def test_relay_state_versions_and_acknowledgements_are_compact() -> None:
    """``RelayState`` keeps one version as an int and several as a sorted
    tuple, shares one group per set of acknowledging clients, and still
    names every listed acknowledgement object, refused ones included."""
    state = RelayState()
    key, other = "a" * 32, "b" * 32
    state.add_version(key, 3)
    state.add_version(key, 1)
    state.add_version(other, 1)
    assert state.versions_of(key) == (1, 3) and state.latest_version(key) == 3
    assert state.versions[other] == 1 and state.next_version(other, "x") == 2
    state.remove_version(key, 3)
    assert state.versions[key] == 1
    state.remove_version(key, 1)
    assert key not in state.versions and state.versions_of(key) == () and state.latest_version(key) == 0
    client, second = "c" * 32, "d" * 32
    for version in (1, 2):
        state.add_ack(key, version, client)
        state.add_ack(key, version, second)
    assert state.acks[key, 1] == {client, second} and state.acks[key, 1] is state.acks[key, 2]
    state.drop_ack(key, 1, second)
    assert state.acks[key, 1] == {client} and state.acks[key, 2] == {client, second}
    assert sorted(state.ack_names_of(key, 1)) == sorted(
        [layout.ack_name(key, 1, client), layout.ack_name(key, 1, second)])
    state.forget_acks(key, 1)
    assert state.ack_names_of(key, 1) == [] and state.ack_pairs() == [(key, 2)]
