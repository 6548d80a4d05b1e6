"""The quiet pass (escale/sync/quiet.py): a pass whose inputs are those of an
earlier pass that planned nothing stops before any per-file work.

What these prove, with real clients in the index layout on a local-folder
relay, and in the placeholder layout on a local-folder relay (whose folder
times stand for their content) and over SFTP (whose ``data/`` and
``acks/`` are listed): the quiet path is taken only after a full pass that
did nothing, and whatever a full pass would act upon makes the next pass a
full one: an edit that keeps size and modification time, a new file deep in
a folder, a file removed, a change on the relay, a permission change, a
setting changed, the ``allow-deletions`` file; and a change made after a
full pass scanned (which it therefore did not see) is sent by the next pass.
In the placeholder layout, an acknowledgement of a payload still on the
relay makes its pusher's next pass a full one (which reclaims it), and a
change marker that does not open means full passes only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from escale.config.settings import FileFilter
from escale.protocol.layout import DATA
from escale.protocol.marker import MARKER
from escale.sync import client as client_module
from escale.sync.client import allow_deletions_flag
from escale.sync.quiet import settings_digest
from escale.sync.report import PassReport
from tests.faults.world import World, relay_names, relay_put, sha, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(300)

QUIET = "nothing changed since the last pass that had nothing to do"


@pytest.fixture(params=["index", "placeholder", "placeholder-sftp"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    layout = str(request.param)
    target: RelayTarget = request.getfixturevalue("target_sftp" if layout.endswith("sftp") else "target_file")
    world = World(str(tmp_path), target, target.new_folder())
    if layout == "index":
        world.common.update({"index": "yes"})
    return world


def _placeholder_layout(world: World) -> bool:
    return world.common.get("index") != "yes"


def _synced(world: World) -> tuple[str, str]:
    a, b = world.add("a"), world.add("b")
    write(a, "top.txt", "top\n")
    write(a, "deep/er/file.txt", "deep\n")
    world.quiesce(["a", "b"])
    return a, b


def _pass(world: World, name: str, caplog: pytest.LogCaptureFixture) -> tuple[PassReport, bool]:
    """One in-process pass of ``name``; whether it took the quiet path."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="escale.sync.client"):
        report = world.sync(name)
    return report, any(QUIET in r.getMessage() for r in caplog.records)


@pytest.fixture
def settled(world: World, caplog: pytest.LogCaptureFixture) -> tuple[World, str, str]:
    """Two clients in sync, each having just made a full pass that did nothing."""
    a, b = _synced(world)
    for name in ("a", "b"):
        report, _quiet = _pass(world, name, caplog)
        assert not report.changed
    return world, a, b


def test_the_quiet_path_follows_a_full_pass_that_did_nothing(settled: tuple[World, str, str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    world, _, _ = settled
    for name in ("a", "b", "a"):
        report, quiet = _pass(world, name, caplog)
        assert quiet and not report.changed and not report.errors, (name, report.summary())


def test_an_edit_that_keeps_size_and_mtime_is_sent(settled: tuple[World, str, str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    world, a, b = settled
    path = os.path.join(a, "top.txt")
    before = os.stat(path)
    with open(path, "r+", encoding="utf-8") as handle:
        handle.write("TOP")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime: only ctime tells
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and report.pushed == ["top.txt"], report.summary()
    report, quiet = _pass(world, "b", caplog)
    assert not quiet and report.pulled == ["top.txt"], report.summary()
    assert tree(b)["top.txt"] == sha(b"TOP\n")


def test_local_additions_and_removals_deep_in_the_tree_are_seen(settled: tuple[World, str, str],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    world, a, b = settled
    write(a, "deep/er/new.txt", "new\n")
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and report.pushed == ["deep/er/new.txt"], report.summary()
    os.unlink(os.path.join(a, "deep/er/file.txt"))
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and report.deleted_remote == ["deep/er/file.txt"], report.summary()
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) == {"top.txt": sha(b"top\n"), "deep/er/new.txt": sha(b"new\n")}


def test_a_change_on_the_relay_is_received(settled: tuple[World, str, str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    world, _a, b = settled
    write(b, "from-b.txt", "b\n")
    report, quiet = _pass(world, "b", caplog)
    assert report.pushed == ["from-b.txt"]
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and report.pulled == ["from-b.txt"], report.summary()


def test_a_permission_change_a_setting_and_the_allow_deletions_file_each_mean_a_full_pass(
        settled: tuple[World, str, str], caplog: pytest.LogCaptureFixture) -> None:
    world, a, _ = settled
    os.chmod(os.path.join(a, "top.txt"), 0o600)
    _, quiet = _pass(world, "a", caplog)
    assert not quiet
    _, quiet = _pass(world, "a", caplog)
    assert quiet
    world.clients["a"]["exclude"] = "*.tmp"
    world._write()
    _, quiet = _pass(world, "a", caplog)
    assert not quiet
    flag = allow_deletions_flag(world.settings("a"))
    with open(flag, "w", encoding="ascii"):
        pass
    _, quiet = _pass(world, "a", caplog)
    assert not quiet and not os.path.exists(flag)  # the full pass ran, and used the flag up
    _, quiet = _pass(world, "a", caplog)
    assert not quiet  # a pass that used the flag leaves no quiet record: this one is full, and quiet
    _, quiet = _pass(world, "a", caplog)
    assert quiet


def test_a_change_after_the_scan_of_a_quiet_full_pass_is_sent_next(
        world: World, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    a, _b = _synced(world)
    real_scan = client_module.scan  # type: ignore[attr-defined]

    def scan_then_edit(*args: Any, **kwargs: Any) -> Any:
        result = real_scan(*args, **kwargs)
        write(a, "late.txt", "written after the scan\n")  # this pass cannot see it
        return result

    monkeypatch.setattr(client_module, "scan", scan_then_edit)
    os.chmod(os.path.join(a, "top.txt"), 0o600)  # a full pass, with nothing to do (as far as it sees)
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and not report.changed
    monkeypatch.setattr(client_module, "scan", real_scan)
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and report.pushed == ["late.txt"], report.summary()


def test_an_acknowledgement_of_a_payload_on_the_relay_makes_its_pusher_pass_in_full(
        settled: tuple[World, str, str], caplog: pytest.LogCaptureFixture) -> None:
    world, a, _b = settled
    if not _placeholder_layout(world):
        pytest.skip("the index layout's acknowledgements are records in clients/ (covered above)")
    write(a, "new.txt", "new\n")
    report, _quiet = _pass(world, "a", caplog)
    assert report.pushed == ["new.txt"]
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and not report.changed  # waiting for b: nothing to do, and a quiet record
    report, quiet = _pass(world, "a", caplog)
    assert quiet
    report, _quiet = _pass(world, "b", caplog)
    assert report.pulled == ["new.txt"]
    report, quiet = _pass(world, "a", caplog)
    assert not quiet and report.reclaimed == ["new.txt"], report.summary()
    assert relay_names(world, DATA) == []


def test_a_change_marker_that_does_not_open_means_full_passes(
        settled: tuple[World, str, str], caplog: pytest.LogCaptureFixture) -> None:
    world, _a, _b = settled
    if not _placeholder_layout(world):
        pytest.skip("the placeholder layout's change marker")
    relay_put(world, {MARKER: b"not a sealed marker"})
    for _ in range(3):
        _report, quiet = _pass(world, "b", caplog)
        assert not quiet


def test_a_long_filter_pattern_changed_past_its_text_form_changes_the_settings_digest(world: World) -> None:
    world.add("a")
    settings = world.settings("a")
    prefix = "x" * 300
    first = dataclasses.replace(settings, filters=FileFilter(exclude=(re.compile(prefix + "a"),)))
    second = dataclasses.replace(settings, filters=FileFilter(exclude=(re.compile(prefix + "b"),)))
    assert repr(first.filters) == repr(second.filters)  # Python cuts a pattern's text form short
    assert settings_digest(first, {}) != settings_digest(second, {})
