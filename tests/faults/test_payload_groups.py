"""Small payloads uploaded in groups (placeholder layout, ``transfers = 4``).

Where the relay declares a group put cheap (OpenSSH SFTP, escale's rclone
backend), the payloads of small files go up several at a time, in one
``put_fresh`` (straight under their names), on the transfers' connections.
What these prove, on real servers:

* the payloads really go up in groups (a relay wrapper sees the groups), a
  bigger file's payload still goes alone, and the receiver ends with the
  same tree, every payload reclaimed afterwards;
* a file that changes while its payload is being sealed fails alone: the
  other members of its group are committed, and the next pass sends the new
  content;
* a group whose upload fails part-way (one payload cut short under its
  name) commits none of its members, loses nothing, leaves no spool file,
  and the next pass sends them and removes the part;
* a payload name found taken (a retried group's own earlier attempt) is
  written again, so what the placeholder names is what was sealed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from escale.errors import RelayPermissionDenied
from escale.relay import Relay, make_relay
from escale.relay.delegating import DelegatingRelay
from escale.relay.retry import RetryingRelay
from escale.sync import faults
from escale.sync.client import SyncClient
from tests.faults.world import World, encrypted_pair, relay_names, small_files, tree
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(300)


class GroupWatch(DelegatingRelay):
    """A real backend that records the payload names of each group put, and
    can fail the ``fail_group``-th group of payloads (its first payload
    stored in part, as an upload cut short leaves it), or plant each payload
    of the first group before it is put (as a retried group finds them)."""

    def __init__(self, inner: Relay, groups: list[list[str]], *, fail_group: int = 0,
                 plant_first: bool = False) -> None:
        super().__init__(inner)
        self.groups = groups
        self.fail_group = fail_group
        self.plant_first = plant_first

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        payloads = [name for name, _ in items if name.startswith("data/")]
        if payloads:
            self.groups.append(payloads)
            if len(self.groups) == self.fail_group:
                self.inner.put_bytes(items[0][0], items[0][1][:10])
                raise RelayPermissionDenied("permission denied (test)", name=payloads[0])
            if self.plant_first and len(self.groups) == 1:
                for name, _ in items:
                    self.inner.put_bytes(name, b"an earlier attempt, cut short")
        self.inner.put_fresh(items)




def _watched(world: World, name: str, groups: list[list[str]], **kwargs: object) -> SyncClient:
    settings = world.settings(name)
    return SyncClient(settings, relay_factory=lambda: RetryingRelay(
        GroupWatch(make_relay(settings.relay), groups, **kwargs), base_delay=0.01))  # type: ignore[arg-type]



@pytest.mark.parametrize("backend", ["sftp", "rclone_local"])
def test_small_payloads_go_up_in_groups(tmp_path: Path, request: pytest.FixtureRequest, backend: str) -> None:
    target: RelayTarget = request.getfixturevalue(f"target_{backend}")
    files = small_files(90, 1)
    files["big/one.bin"] = random.Random(2).randbytes(200_000)  # above the in-memory spool: alone
    world, a, b = encrypted_pair(str(tmp_path), target, files)
    groups: list[list[str]] = []
    report = _watched(world, "a", groups).run_pass()
    assert not report.errors and len(report.pushed) == len(files)
    grouped = [name for group in groups for name in group]
    assert len(grouped) == len(set(grouped)) == 90  # every small payload, once, in a group
    assert max(len(group) for group in groups) > 1
    assert len(groups) < 90
    assert len(relay_names(world, "data")) == len(files)

    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) == {rel: tree(a)[rel] for rel in files}
    assert relay_names(world, "data") == []  # every payload received and reclaimed


def test_a_file_changed_while_sealed_fails_alone(tmp_path: Path, target_sftp: RelayTarget,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    files = small_files(40, 3)
    files["s1/f005.txt"] = b"x" * 3000
    world, a, b = encrypted_pair(str(tmp_path), target_sftp, files)
    step = faults.step
    victim = os.path.join(a, "s1", "f005.txt")

    def truncate_once_opened(name: str) -> None:
        # marked once the file is opened and checked, before a worker seals it
        if name == "push s1/f005.txt":
            os.truncate(victim, 100)
        step(name)

    monkeypatch.setattr(faults, "step", truncate_once_opened)
    groups: list[list[str]] = []
    report = _watched(world, "a", groups).run_pass()
    monkeypatch.setattr(faults, "step", step)
    assert [error.split(":")[0] for error in report.errors] == ["s1/f005.txt"]
    assert "changed while it was being sent" in report.errors[0]
    assert max(len(group) for group in groups) > 1
    assert len(report.pushed) == len(files) - 1
    assert len(relay_names(world, "meta")) == len(files) - 1

    world.quiesce(["a", "b"])
    assert tree(b) == tree(a)
    with open(os.path.join(b, "s1", "f005.txt"), "rb") as handle:
        assert handle.read() == b"x" * 100


def test_a_failed_group_upload_commits_none_of_it(tmp_path: Path, target_sftp: RelayTarget) -> None:
    files = small_files(100, 4)
    world, a, b = encrypted_pair(str(tmp_path), target_sftp, files)
    groups: list[list[str]] = []
    with pytest.raises(RelayPermissionDenied):
        _watched(world, "a", groups, fail_group=2).run_pass()
    failed = {name.split("/")[1].rsplit(".", 2)[0] for name in groups[1]}  # their keys
    committed = {name.split("/")[1].rsplit(".", 1)[0] for name in relay_names(world, "meta")}
    assert failed and not failed & committed  # none of the failed group has a version
    cut_short = groups[1][0]
    assert cut_short in relay_names(world, "data")  # the part stays, named by nothing
    spool = os.path.join(world.path("a"), ".escale", "a", "spool")
    assert not os.path.isdir(spool) or os.listdir(spool) == []

    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) == {rel: tree(a)[rel] for rel in files}
    assert relay_names(world, "data") == []  # the part removed as an orphan, the rest reclaimed


def test_a_payload_name_found_taken_is_written_again(tmp_path: Path, target_sftp: RelayTarget) -> None:
    files = small_files(20, 5)
    world, a, b = encrypted_pair(str(tmp_path), target_sftp, files)
    groups: list[list[str]] = []
    report = _watched(world, "a", groups, plant_first=True).run_pass()
    assert not report.errors and len(groups[0]) > 1
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a) == {rel: tree(a)[rel] for rel in files}
