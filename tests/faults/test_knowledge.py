"""Knowledge only moves forward; a repository is born once; a client is one client.

Each test reproduces a way a relay or a user's setup used to lose a file
(issue: "never lose a file at the edges"), with real ``escale`` processes where
the fault crosses processes:

* the relay loses the newest version of a file, or replays an older one: the
  writer's newer copy is never replaced, the reader does not re-send its older
  one, both report a rollback, and ``escalectl fix`` repairs it;
* the relay folder vanishes (an unmounted disk) or a server is wiped: the client
  stops with one line and exit 69, and nothing is re-created or re-uploaded;
* a state folder copied to make a second client becomes a new client;
* clients configured with different checksum algorithms do not re-send
  unchanged files forever;
* an access modifier that refused a version, once lifted, leaves a reported
  divergence rather than a silent one;
* the two Blowfish implementations share one repository;
* an unreadable file or folder is never sent as a deletion (run without root's
  file privileges, since root reads a ``chmod 000`` file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from escale.protocol import layout
from escale.sync.state import StateDB
from tests.faults.world import World, open_relay, relay_delete, relay_get, relay_names, relay_put, tree, write
from tests.servers.target import RelayTarget
from tests.unprivileged import permissions_apply, unprivileged_command

pytestmark = pytest.mark.timeout(240)


def _objects_of(world: World, version: int) -> dict[str, bytes]:
    """Every placeholder and payload of version ``version`` on the relay."""
    found = {}
    for folder in (layout.META, layout.DATA):
        for name in relay_names(world, folder):
            ref = layout.parse_meta(name) or layout.parse_data(name)
            if ref is not None and ref.version == version:
                found[name] = relay_get(world, name)
    return found


# --------------------------------------------------------------------------- rollback


def test_lost_newest_version_never_replaces_the_writers_copy(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    b = world.add("b")
    write(a, "doc.txt", "version one\n")
    world.quiesce(["a", "b"])
    write(a, "doc.txt", "version two, the only copy\n")
    world.run("a")  # a commits version 2; b has not seen it
    # the relay loses version 2 (placeholder and payload); version 1 was retired
    relay_delete(world, list(_objects_of(world, 2)))
    for _ in range(2):
        world.run("b")
        world.run("a")
    with open(os.path.join(a, "doc.txt"), encoding="utf-8") as handle:
        assert handle.read() == "version two, the only copy\n"
    with open(os.path.join(b, "doc.txt"), encoding="utf-8") as handle:
        assert handle.read() == "version one\n"
    assert not relay_names(world, layout.META), "b re-sent its older copy over the loss"
    assert "rolled back" in world.log_text()
    report = world.sync("a")
    assert any("doc.txt rolled back" in line for line in report.warnings)
    # the writer repairs it explicitly; then everyone converges on version 2
    result = world.ctl("fix", "-r", "a")
    assert result.returncode == 0, result.stderr
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b)
    with open(os.path.join(b, "doc.txt"), encoding="utf-8") as handle:
        assert handle.read() == "version two, the only copy\n"


def test_replayed_older_version_is_refused(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    b = world.add("b")
    write(a, "doc.txt", "version one\n")
    world.quiesce(["a", "b"])
    saved = _objects_of(world, 1)
    write(b, "doc.txt", "version two\n")
    world.quiesce(["a", "b"])
    trees = (tree(a), tree(b))
    relay_delete(world, list(_objects_of(world, 2)))
    relay_put(world, saved)  # the relay replays version 1 (its payload included)
    world.run("a")
    world.run("b")
    assert (tree(a), tree(b)) == trees
    assert "rolled back" in world.log_text()


# --------------------------------------------------------------------------- born once


def _stops_on_gone_relay(world: World, name: str, *, advice: str = "escalectl fix") -> str:
    result = world.run(name, check=False)
    assert result.returncode == 69, result.stderr
    lines = [line for line in result.stderr.strip().splitlines()
             if line.strip() and not line.startswith("escale: warning: running as root")]
    assert len(lines) == 1 and advice in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_unmounted_relay_folder_is_not_recreated(tmp_path: Path, target_file: RelayTarget) -> None:
    world = World(str(tmp_path), target_file, target_file.new_folder())
    a = world.add("a")
    world.add("b")
    write(a, "big.bin", os.urandom(4096))
    world.quiesce(["a", "b"])
    repository = target_file.spec_for(world.folder).directory
    aside = repository + ".unmounted"
    os.rename(repository, aside)  # the disk is unmounted
    line = _stops_on_gone_relay(world, "a")
    assert repository in line or "file://" in line
    assert not os.path.exists(repository), "the relay folder was re-created"
    _stops_on_gone_relay(world, "b")
    os.rename(aside, repository)  # mounted again: sync resumes
    write(a, "after.txt", "after the mount\n")
    world.quiesce(["a", "b"])
    assert tree(a) == tree(world.path("b"))


def test_wiped_ftp_relay_is_not_refilled(tmp_path: Path, target_ftp: RelayTarget) -> None:
    world = World(str(tmp_path), target_ftp, target_ftp.new_folder())
    a = world.add("a")
    world.add("b")
    for i in range(5):
        write(a, f"f{i}.bin", os.urandom(2048))
    world.quiesce(["a", "b"])
    with open_relay(world) as relay:
        for entry in list(relay.walk("")):
            relay.delete(entry.name)
    _stops_on_gone_relay(world, "a")
    assert relay_names(world, layout.DATA) == []
    assert relay_names(world, layout.META) == []
    # explicit repair from a: the repository comes back with its identity, b carries on
    result = world.ctl("fix", "-r", "a")
    assert result.returncode == 0, result.stderr
    write(a, "new.txt", "after the repair\n")
    world.quiesce(["a", "b"])
    assert tree(a) == tree(world.path("b"))


def test_a_new_client_creates_the_repository(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    write(a, "x.txt", "x\n")
    world.run("a")
    assert relay_names(world, layout.META)


def test_another_repository_in_place_stops_the_client(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    write(a, "x.txt", "x\n")
    world.run("a")
    relay_delete(world, [layout.HEADER])
    world.add("stranger")
    world.run("stranger")  # a client that never synced creates a new repository there
    _stops_on_gone_relay(world, "a", advice="different repository")


# --------------------------------------------------------------------------- one client, one identity


def test_copied_state_folder_becomes_a_new_client(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    b = world.add("b")
    write(a, "one.txt", "one\n")
    world.quiesce(["a", "b"])
    c_local = os.path.join(world.base, "c")
    shutil.copytree(b, c_local)  # the user clones b's folder, state included
    copied_state = os.path.join(c_local, ".escale", "b")
    world.add("c", state_directory=copied_state)
    report = world.sync("c")
    assert any("was copied" in line for line in report.warnings)
    ids = set()
    for state in (os.path.join(b, ".escale", "b"), copied_state):
        db = StateDB(os.path.join(state, "state.db"))
        ids.add(db.client_id())
        db.close()
    assert len(ids) == 2
    write(a, "two.txt", "two\n")
    world.quiesce(["a", "b", "c"])
    assert tree(a) == tree(b) == tree(c_local)


def test_moved_state_folder_keeps_its_identity(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    b = world.add("b")
    write(a, "one.txt", "one\n")
    world.quiesce(["a", "b"])
    old_state = os.path.join(b, ".escale", "b")
    db = StateDB(os.path.join(old_state, "state.db"))
    before = db.client_id()
    db.close()
    new_state = os.path.join(world.base, "b-state")
    shutil.move(old_state, new_state)
    world.clients["b"]["state directory"] = new_state
    world._write()
    report = world.sync("b")
    assert not any("was copied" in line for line in report.warnings)
    db = StateDB(os.path.join(new_state, "state.db"))
    assert db.client_id() == before
    db.close()


# --------------------------------------------------------------------------- content under one algorithm


def test_clients_with_different_checksums_do_not_resend(file_world: World) -> None:
    world = file_world
    a = world.add("a", checksum="md5")
    b = world.add("b", checksum="sha256")
    for i in range(3):
        write(a, f"f{i}.txt", f"content {i}\n")
    write(b, "from-b.txt", "b's file\n")
    for _ in range(4):
        world.run("a")
        world.run("b")
    versions = {layout.parse_meta(n).version for n in relay_names(world, layout.META)}  # type: ignore[union-attr]
    assert versions == {1}, f"unchanged files were re-sent: versions {versions}"
    assert tree(a) == tree(b)


# --------------------------------------------------------------------------- access modifiers


def test_lifted_write_protection_reports_the_divergence(file_world: World) -> None:
    world = file_world
    a = world.add("a")
    b = world.add("b")
    write(a, "f.txt", "first\n")
    world.quiesce(["a", "b"])
    result = world.ctl("access", os.path.join(b, "f.txt"), "w-", "-r", "b")
    assert result.returncode == 0, result.stderr
    write(a, "f.txt", "second\n")
    world.sync("a")
    world.sync("b")  # declines (w-) and acknowledges: the payload goes
    world.sync("a")  # reclaims it
    result = world.ctl("access", os.path.join(b, "f.txt"), "w?", "-r", "b")
    assert result.returncode == 0, result.stderr
    report = world.sync("b")
    assert any("f.txt" in line and "reclaimed" in line for line in report.warnings), report.warnings
    with open(os.path.join(b, "f.txt"), encoding="utf-8") as handle:
        assert handle.read() == "first\n"
    # a newer version converges the copies
    write(a, "f.txt", "third\n")
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b)


# --------------------------------------------------------------------------- encryption aliases


def test_blowfish_implementations_share_a_repository(file_world: World) -> None:
    from escale.crypto import generate_key_file

    world = file_world
    key = os.path.join(world.base, "shared.key")
    generate_key_file(key)
    a = world.add("a", encryption="blowfish", key=key)
    b = world.add("b", encryption="blowfish.blowfish", key=key)
    write(a, "from-a.txt", "a\n")
    write(b, "from-b.txt", "b\n")
    world.run("a")
    world.run("b")
    world.run("a")
    assert tree(a) == tree(b) and len(tree(a)) == 2


# --------------------------------------------------------------------------- confirmed absence


def _run_unprivileged(world: World, name: str) -> subprocess.CompletedProcess[str]:
    command = unprivileged_command([sys.executable, "-m", "escale.cli.main", "--once", "-c", world.config,
                                    "-r", name])
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_unreadable_file_and_folder_are_not_deletions(file_world: World) -> None:
    if not permissions_apply():
        pytest.fail("cannot drop root's file privileges here (setpriv)")
    world = file_world
    a = world.add("a")
    b = world.add("b")
    write(a, "synced.txt", "kept everywhere\n")
    for i in range(8):
        write(a, f"folder/f{i}.txt", f"file {i}\n")
    world.quiesce(["a", "b"])
    before = tree(b)
    os.chmod(os.path.join(a, "synced.txt"), 0)
    os.chmod(os.path.join(a, "folder"), 0)
    try:
        for _ in range(2):
            result = _run_unprivileged(world, "a")
            assert result.returncode == 0, result.stderr
            world.run("b")
    finally:
        os.chmod(os.path.join(a, "folder"), 0o755)
        os.chmod(os.path.join(a, "synced.txt"), 0o644)
    assert tree(b) == before, "an unreadable path was sent as a deletion"
    assert not any(layout.parse_meta(n).version > 1 for n in relay_names(world, layout.META))  # type: ignore[union-attr]
    log = world.log_text()
    assert "synced.txt" in log and "folder" in log
