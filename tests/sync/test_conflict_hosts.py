"""Conflict copies say which machine made them: two clients with the same
section name on two hosts name their copies differently (``<label>@<host>``).

Each "machine" is its own configuration file with a ``[documents]`` section on
one relay; passes run in-process (:class:`SyncClient` with ``host=``)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from escale.config import load_config
from escale.sync.client import SyncClient
from escale.sync.labels import conflict_label, short_host_name
from tests.e2e.cluster import tree, write
from tests.faults.world import origin_path
from tests.servers.target import RelayTarget


def _machine(base: Path, host: str, target: RelayTarget, folder: str) -> SyncClient:
    """Client ``[documents]`` of the machine ``host`` (its own folder and configuration file)."""
    home = base / host
    home.mkdir()
    lines = {"local path": str(home / "documents"), **target.config_for(folder)}
    conf = home / "escale.conf"
    conf.write_text("[documents]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items()))
    return SyncClient(load_config(str(conf)).client("documents"), host=host)


def test_copies_from_two_hosts_with_one_section_name_differ(tmp_path: Path, target_file: RelayTarget) -> None:
    folder = target_file.new_folder()
    laptop = _machine(tmp_path, "laptop.example.org", target_file, folder)
    desktop = _machine(tmp_path, "desktop", target_file, folder)
    for client in (laptop, desktop, laptop):
        client.run_pass()
    write(laptop.settings.local_path, "report.txt", b"laptop's first")
    laptop.run_pass()
    desktop.run_pass()
    # both edit the same file; each then passes once: the desktop commits
    # first, so the laptop meets the conflict; then the other way round for a
    # second file
    write(laptop.settings.local_path, "report.txt", b"laptop's edit")
    write(desktop.settings.local_path, "report.txt", b"desktop's edit")
    write(desktop.settings.local_path, "notes.txt", b"desktop's notes")
    desktop.run_pass()
    write(laptop.settings.local_path, "notes.txt", b"laptop's notes")
    laptop.run_pass()
    write(desktop.settings.local_path, "notes.txt", b"desktop's second notes")
    write(laptop.settings.local_path, "notes.txt", b"laptop's second notes")
    laptop.run_pass()
    desktop.run_pass()
    for _ in range(2):
        laptop.run_pass()
        desktop.run_pass()

    left, right = tree(laptop.settings.local_path), tree(desktop.settings.local_path)
    assert left == right
    copies = sorted(p for p in left if p != origin_path(p))
    markers = {re.sub(r"-[0-9a-f]{8}\.txt$", "", p.partition(".conflict-")[2]) for p in copies}
    assert markers == {"documents@laptop", "documents@desktop"}, copies
    assert {origin_path(p) for p in copies} == {"report.txt", "notes.txt"}


def test_a_conservative_copy_of_the_relay_version_names_the_pushing_host(
        tmp_path: Path, target_file: RelayTarget) -> None:
    """A ``conservative`` client keeps another client's version of its own file
    as a copy named after that client's label *and host* (stored in what it
    pushed), not after the section name both machines share."""
    folder = target_file.new_folder()
    laptop = _machine(tmp_path, "laptop", target_file, folder)
    desktop = _machine(tmp_path, "desktop", target_file, folder)
    (tmp_path / "laptop" / "escale.conf").write_text(
        (tmp_path / "laptop" / "escale.conf").read_text() + "mode = conservative\n")
    laptop = SyncClient(load_config(str(tmp_path / "laptop" / "escale.conf")).client("documents"), host="laptop")
    for client in (laptop, desktop):
        client.run_pass()
    write(laptop.settings.local_path, "report.txt", b"the laptop's report")
    laptop.run_pass()
    desktop.run_pass()
    write(desktop.settings.local_path, "report.txt", b"the desktop's edit")
    desktop.run_pass()
    laptop.run_pass()
    files = tree(laptop.settings.local_path)
    copies = [p for p in files if p != "report.txt"]
    assert len(copies) == 1 and re.fullmatch(r"report\.conflict-documents@desktop-[0-9a-f]{8}\.txt", copies[0])
    with open(os.path.join(laptop.settings.local_path, "report.txt"), "rb") as handle:
        assert handle.read() == b"the laptop's report"


def test_the_label_is_deterministic_and_safe() -> None:
    assert conflict_label("documents", "lab-pc.example.org") == "documents@lab-pc"
    assert conflict_label("my docs", "a b") == "my_docs@a_b"
    assert conflict_label("x", "") == "x@host"
    assert conflict_label("x") == conflict_label("x") == f"x@{short_host_name()}"
    assert os.sep not in conflict_label("a/b", "c/d")
