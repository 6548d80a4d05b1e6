"""Watch mode: two real daemons on one file relay. The writer's periodic pass is
so rare (``refresh = 300``) that only its watcher can explain a change arriving
in time; the reader polls the relay every 0.5 s, as ``refresh`` says.

What is proved: a local create, modify, rename and delete (and a new folder
tree, a renamed folder) reach the other side without waiting for the periodic pass;
a file written slowly over 5 s is committed once, whole (one version on the
relay); escale's own writes (state folder, downloads) do not start passes in a
loop; and when the kernel refuses watches (``max_user_watches``), the daemon
logs one WARNING and still syncs through its periodic pass.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from escale.crypto.envelope import PlainEnvelope
from escale.daemon.watch import FolderWatch
from escale.protocol import layout
from tests.daemon.helpers import PATIENCE, Daemons, ctl, wait_for, write_config
from tests.unprivileged import permissions_apply, unprivileged_command

pytestmark = pytest.mark.timeout(300)


@dataclass
class Pair:
    """Two daemons, each with one client, sharing a file relay."""

    root: Path
    alice: Path
    bob: Path
    relay: Path


def _config(folder: Path, name: str, local: Path, relay: Path, **extra: str) -> str:
    folder.mkdir()
    log = folder / "escale.log"
    values = {"local path": str(local), "protocol": "file", "relay directory": str(relay), "refresh": "300",
              **extra}
    return write_config(str(folder), {name: values}, globals_=f"log file = {log}\nlog level = DEBUG\n")


def _same(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False


@pytest.fixture
def pair(tmp_path: Path, daemons: Daemons) -> Pair:
    alice, bob, relay = tmp_path / "alice", tmp_path / "bob", tmp_path / "relay"
    alice.mkdir()
    bob.mkdir()
    (alice / "seed.txt").write_text("first\n")
    config_a = _config(tmp_path / "A", "alice", alice, relay, **{"watch delay": "2"})
    config_b = _config(tmp_path / "B", "bob", bob, relay, refresh="0.5")
    pair = Pair(tmp_path, alice, bob, relay)
    # alice creates the repository before bob starts (a repository is born once)
    daemons.start(config_a)
    wait_for(lambda: (relay / layout.HEADER).exists(), "alice to create the repository")
    daemons.start(config_b)
    wait_for(lambda: _same(bob / "seed.txt", b"first\n"), "bob's first pass to bring seed.txt")
    return pair


def test_changes_are_synced_as_they_happen(pair: Pair) -> None:
    alice, bob = pair.alice, pair.bob

    (alice / "notes.txt").write_bytes(b"created on alice\n")
    wait_for(lambda: _same(bob / "notes.txt", b"created on alice\n"), "a new file to reach bob")

    (alice / "notes.txt").write_bytes(b"modified on alice, longer than before\n")
    wait_for(lambda: _same(bob / "notes.txt", b"modified on alice, longer than before\n"),
             "a modification to reach bob")

    os.rename(alice / "notes.txt", alice / "renamed.txt")
    wait_for(lambda: _same(bob / "renamed.txt", b"modified on alice, longer than before\n")
             and not (bob / "notes.txt").exists(), "a rename to reach bob")

    os.remove(alice / "renamed.txt")
    wait_for(lambda: not (bob / "renamed.txt").exists(), "a deletion to reach bob")

    # a folder tree made at once: its files are seen even before their folders are watched
    (alice / "tree" / "deeper").mkdir(parents=True)
    (alice / "tree" / "deeper" / "leaf.txt").write_bytes(b"leaf\n")
    wait_for(lambda: _same(bob / "tree" / "deeper" / "leaf.txt", b"leaf\n"), "a new folder tree to reach bob")
    # ... and a file in a folder that is watched since
    (alice / "tree" / "deeper" / "second.txt").write_bytes(b"second\n")
    wait_for(lambda: _same(bob / "tree" / "deeper" / "second.txt", b"second\n"), "a file in a new folder")

    os.rename(alice / "tree", alice / "moved-tree")
    wait_for(lambda: _same(bob / "moved-tree" / "deeper" / "leaf.txt", b"leaf\n")
             and not (bob / "tree" / "deeper" / "leaf.txt").exists(), "a folder rename to reach bob")
    (alice / "moved-tree" / "deeper" / "third.txt").write_bytes(b"third\n")
    wait_for(lambda: _same(bob / "moved-tree" / "deeper" / "third.txt", b"third\n"),
             "a file in a moved folder to reach bob")


def _meta_versions(relay: Path, path: str) -> list[int]:
    """The versions of ``path`` whose placeholder is on the (unencrypted) relay."""
    key = PlainEnvelope().object_key(path)
    refs = (layout.parse_meta(name) for name in os.listdir(relay / layout.META))
    return sorted(ref.version for ref in refs if ref is not None and ref.key == key)


def test_a_file_written_slowly_is_sent_once_whole(pair: Pair) -> None:
    alice, bob = pair.alice, pair.bob
    chunk = bytes(range(256)) * 256  # 64 KiB
    # the scenario: a writer that takes 5 s, with pauses shorter than the watch delay (2 s)
    with open(alice / "slow.bin", "wb") as handle:
        for i in range(10):
            handle.write(chunk[i:] + chunk[:i])
            handle.flush()
            os.fsync(handle.fileno())
            time.sleep(0.5)
    whole = (alice / "slow.bin").read_bytes()
    assert len(whole) == 10 * len(chunk)

    wait_for(lambda: _same(bob / "slow.bin", whole), "the slowly written file to reach bob")
    assert _meta_versions(pair.relay, "slow.bin") == [1]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c", "echo 2 > /proc/sys/user/max_inotify_watches"],
                           capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs user namespaces with their own inotify limits")
def test_too_many_folders_falls_back_to_periodic_passes(tmp_path: Path, daemons: Daemons) -> None:
    # the daemon runs in a user namespace allowed 3 inotify watches; the tree has 7 folders
    alice, bob, relay = tmp_path / "alice", tmp_path / "bob", tmp_path / "relay"
    for folder in ("a/x", "a/y", "b/x", "b/y"):
        (alice / folder).mkdir(parents=True)
    bob.mkdir()
    config = _config(tmp_path / "A", "alice", alice, relay, refresh="0.5")
    config_b = _config(tmp_path / "B", "bob", bob, relay, refresh="0.5", watch="no")
    _start_with_three_watches(daemons, config)
    daemons.start(config_b)
    log = tmp_path / "A" / "escale.log"

    def warnings() -> list[str]:
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if "WARNING" in line and "max_user_watches" in line]

    wait_for(warnings, "the watch-limit warning")
    (alice / "a" / "x" / "late.txt").write_bytes(b"found by the periodic pass\n")
    wait_for(lambda: _same(bob / "a" / "x" / "late.txt", b"found by the periodic pass\n"),
             "a file to reach bob through periodic passes")
    assert len(warnings()) == 1
    assert "sysctl fs.inotify.max_user_watches=" in warnings()[0]
    stopped = ctl(config, "stop")
    assert stopped.returncode == 0, stopped.stderr


def test_escales_own_writes_do_not_count(tmp_path: Path) -> None:
    """State folder, temporary names and a landing download make no pass due;
    the one user file written among them does (and is the only change noted)."""
    root = tmp_path / "local"
    (root / ".escale" / "client").mkdir(parents=True)
    (root / "sub").mkdir()
    state_elsewhere = root / "state"
    state_elsewhere.mkdir()
    watch = FolderWatch("t", str(root), delay=0.2, ignored=(str(state_elsewhere),),
                        accepts_file=lambda rel: not rel.endswith(".skip"))
    stop = threading.Event()
    try:
        assert watch.start()
        (root / ".escale" / "client" / "state.db").write_bytes(b"state")
        (state_elsewhere / "state.db").write_bytes(b"state")
        (root / ".escale-spool").write_bytes(b"spool")
        (root / "sub" / ".escale-part-0123").write_bytes(b"download")
        os.rename(root / "sub" / ".escale-part-0123", root / "sub" / "received.txt")
        (root / "filtered.skip").write_bytes(b"left out by the filters")
        (root / "user.txt").write_bytes(b"the user's change")
        assert watch.wait(PATIENCE, stop)
        assert watch.changed == {"user.txt"}
        watch.pass_started()
        assert watch.changed == set()
    finally:
        watch.close()


class _Log:
    """The lines a daemon adds to its log file from now on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def wait_for(self, wanted: str | tuple[str, ...], what: str) -> str:
        """The first new line holding one of ``wanted``; the lines read are consumed."""
        found: list[str] = []
        marks = (wanted,) if isinstance(wanted, str) else wanted

        def seen() -> bool:
            if not self.path.exists():
                return False
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].decode(errors="replace").splitlines():
                self.offset += len(line.encode(errors="replace")) + 1
                if any(mark in line for mark in marks):
                    found.append(line)
                    return True
            return False

        wait_for(seen, what)
        return found[0]


def test_a_periodic_pass_due_during_a_slow_write_waits_for_it(tmp_path: Path, daemons: Daemons) -> None:
    """The periodic pass (``refresh = 4``) comes due while a file is being written,
    its writer pausing for less than the watch delay: the pass waits for the
    folder to settle instead of sending the part written so far."""
    alice, bob, relay = tmp_path / "alice", tmp_path / "bob", tmp_path / "relay"
    alice.mkdir()
    bob.mkdir()
    # the file is opened at least 2 s before the periodic pass is due; 8 s of watch delay leave
    # the test at least 4 s to see the pass postponed and write the rest before the folder is quiet
    config_a = _config(tmp_path / "A", "alice", alice, relay, refresh="4", **{"watch delay": "8"})
    config_b = _config(tmp_path / "B", "bob", bob, relay, refresh="0.5", watch="no")
    log = _Log(tmp_path / "A" / "escale.log")
    daemons.start(config_a)
    wait_for(lambda: (relay / layout.HEADER).exists(), "alice to create the repository")
    daemons.start(config_b)
    chunk = bytes(range(256)) * 256  # 64 KiB

    def next_pass_in() -> float:
        result = ctl(config_a, "--json", "status")
        assert result.returncode == 0, result.stderr
        alice_status = json.loads(result.stdout)["clients"][0]
        return float(alice_status["next_pass"] or 0) - time.time() if alice_status["passes"] else 0.0

    # opened while alice waits for her next periodic pass, which comes due while the file is being written
    wait_for(lambda: next_pass_in() > 2.0, "alice to wait for her next periodic pass")
    with open(alice / "slow.bin", "wb") as handle:
        handle.write(chunk)
        handle.flush()
        line = log.wait_for(("periodic pass postponed", "pass done"), "alice's periodic pass to come due")
        if "postponed" in line:
            # status shows when the postponed pass will run at the latest, not the time it came due
            assert next_pass_in() > 30, "status shows a stale next-pass time while the pass waits"
        handle.write(chunk[::-1])
    whole = (alice / "slow.bin").read_bytes()
    wait_for(lambda: _same(bob / "slow.bin", whole), "the slowly written file to reach bob")
    assert _meta_versions(relay, "slow.bin") == [1]


def test_a_local_folder_moved_away_is_watched_anew(tmp_path: Path) -> None:
    """The local folder renamed away makes a pass due (which makes it anew); the
    watch then follows the new folder, not the one moved away."""
    root, moved = tmp_path / "local", tmp_path / "moved"
    root.mkdir()
    watch = FolderWatch("t", str(root), delay=0.2)
    stop = threading.Event()
    try:
        assert watch.start()
        os.rename(root, moved)
        assert watch.wait(PATIENCE, stop)
        watch.pass_started()
        root.mkdir()  # as the pass does
        assert watch.start()
        (moved / "elsewhere.txt").write_bytes(b"no longer in the local folder")
        (root / "new.txt").write_bytes(b"in the new local folder")
        assert watch.wait(PATIENCE, stop)
        assert watch.changed == {"new.txt"}
    finally:
        watch.close()


def test_folders_moved_in_and_out_of_the_tree(tmp_path: Path) -> None:
    """A folder tree moved in from outside is watched to its bottom at once; one
    moved out is no longer watched (its later changes do not count)."""
    root, outside = tmp_path / "local", tmp_path / "outside"
    root.mkdir()
    (outside / "tree" / "deep").mkdir(parents=True)
    (outside / "tree" / "deep" / "old.txt").write_bytes(b"made outside")
    watch = FolderWatch("t", str(root), delay=0.2)
    stop = threading.Event()
    try:
        assert watch.start() and watch.watched_folders == 1
        os.rename(outside / "tree", root / "tree")
        assert watch.wait(PATIENCE, stop)
        assert watch.changed == {"tree"} and watch.watched_folders == 3
        watch.pass_started()
        (root / "tree" / "deep" / "old.txt").write_bytes(b"changed in the tree")
        assert watch.wait(PATIENCE, stop)
        assert watch.changed == {"tree/deep/old.txt"}
        watch.pass_started()
        os.rename(root / "tree", outside / "gone")
        assert watch.wait(PATIENCE, stop)
        assert watch.changed == {"tree"} and watch.watched_folders == 1
        watch.pass_started()
        (outside / "gone" / "deep" / "old.txt").write_bytes(b"changed outside")
        (root / "marker.txt").write_bytes(b"in the tree")
        assert watch.wait(PATIENCE, stop)
        assert watch.changed == {"marker.txt"}
    finally:
        watch.close()


@pytest.mark.skipif(not _unshare_works(), reason="needs user namespaces with their own inotify limits")
def test_new_folders_past_the_watch_limit_are_still_synced(tmp_path: Path, daemons: Daemons) -> None:
    """The daemon starts within its 3 inotify watches (2 folders); a folder tree made
    later takes it past them: one WARNING, and the change that did it is synced at
    once all the same (``refresh = 300``: not by the periodic pass)."""
    alice, bob, relay = tmp_path / "alice", tmp_path / "bob", tmp_path / "relay"
    (alice / "sub").mkdir(parents=True)
    (alice / "seed.txt").write_bytes(b"seed\n")
    bob.mkdir()
    config = _config(tmp_path / "A", "alice", alice, relay)
    config_b = _config(tmp_path / "B", "bob", bob, relay, refresh="0.5", watch="no")
    _start_with_three_watches(daemons, config)
    daemons.start(config_b)
    log = tmp_path / "A" / "escale.log"
    wait_for(lambda: _same(bob / "seed.txt", b"seed\n"), "alice's first pass to reach bob")
    assert "max_user_watches" not in log.read_text()

    (alice / "n1" / "n2" / "n3").mkdir(parents=True)
    (alice / "n1" / "n2" / "n3" / "deep.txt").write_bytes(b"deep\n")
    wait_for(lambda: _same(bob / "n1" / "n2" / "n3" / "deep.txt", b"deep\n"), "the new tree's file to reach bob")
    warnings = [line for line in log.read_text().splitlines() if "WARNING" in line and "max_user_watches" in line]
    assert len(warnings) == 1


_UNLOCKED_SCRIPT = """
import os, sys, threading
from escale.daemon.watch import FolderWatch
root = sys.argv[1]
watch = FolderWatch("t", root, delay=0.2)
stop = threading.Event()
assert watch.start()
os.chmod(os.path.join(root, "locked"), 0o755)
assert watch.wait(60, stop)
watch.pass_started()
for name in ("locked/inside.txt", "locked/deeper/inside.txt", "after.txt"):
    with open(os.path.join(root, name), "w") as handle:
        handle.write("a change")
assert watch.wait(60, stop)
print(" ".join(sorted(watch.changed)))
"""


def test_a_folder_made_readable_is_watched(tmp_path: Path) -> None:
    """A folder the daemon could not watch (no permission, so not listed by the
    scanner either) is watched, with what is below it, once it is made readable;
    its changes count from then on. Run without root's file privileges."""
    if not permissions_apply():
        pytest.fail("cannot drop root's file privileges here (setpriv)")
    root = tmp_path / "local"
    (root / "locked" / "deeper").mkdir(parents=True)
    os.chmod(root / "locked", 0)
    try:
        result = subprocess.run(unprivileged_command([sys.executable, "-c", _UNLOCKED_SCRIPT, str(root)]),
                                capture_output=True, text=True, timeout=PATIENCE * 2, check=False)
    finally:
        os.chmod(root / "locked", 0o755)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["after.txt", "locked/deeper/inside.txt", "locked/inside.txt"]


def test_a_watch_on_a_descriptor_past_1023_still_waits(tmp_path: Path) -> None:
    """A daemon with many files open (many clients, connections) may get its
    inotify descriptor at 1024 or above, which ``select`` refuses: its wait
    raised ValueError, which ended the client's thread."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1100
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {wanted}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    fillers: list[int] = []
    root = tmp_path / "local"
    root.mkdir()
    watch = FolderWatch("t", str(root), delay=0.2)
    try:
        while not fillers or fillers[-1] < 1030:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        assert watch.start()
        (root / "late.txt").write_bytes(b"seen")
        assert watch.wait(PATIENCE, threading.Event())
        assert watch.changed == {"late.txt"}
    finally:
        watch.close()
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_what_a_daemon_receives_does_not_start_passes_in_a_loop(pair: Pair) -> None:
    """bob watches his folder while he receives new files in new folders, a new
    version of a file and a deletion: at most one more pass follows what he
    wrote himself (it finds nothing to do), however many periodic passes run."""
    alice, bob = pair.alice, pair.bob
    config_b = str(pair.root / "B" / "escale.conf")
    log = pair.root / "B" / "escale.log"

    def passes() -> int:
        result = ctl(config_b, "--json", "status")
        assert result.returncode == 0, result.stderr
        return int(json.loads(result.stdout)["clients"][0]["passes"])

    def settled() -> int:
        return sum("local changes settled" in line for line in log.read_text().splitlines())

    (alice / "a" / "b").mkdir(parents=True)
    for name in ("a/one.txt", "a/b/two.txt"):
        (alice / name).write_bytes(name.encode())
    (alice / "seed.txt").write_bytes(b"second version\n")
    wait_for(lambda: _same(bob / "a" / "b" / "two.txt", b"a/b/two.txt")
             and _same(bob / "seed.txt", b"second version\n"), "bob to receive alice's changes")
    os.remove(alice / "a" / "one.txt")
    wait_for(lambda: not (bob / "a" / "one.txt").exists(), "bob to receive the deletion")
    before, start = settled(), passes()
    wait_for(lambda: passes() >= start + 8, "eight more passes of bob")
    assert settled() - before <= 1


def test_a_kernel_queue_overflow_rereads_the_tree(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """More events than the kernel queues (``max_queued_events``) while no one
    reads them, as during a long pass: the lost events make a pass due, the tree
    is watched afresh (one INFO line) and later changes are seen as before."""
    with open("/proc/sys/fs/inotify/max_queued_events", encoding="ascii") as handle:
        queued = int(handle.read())
    root = tmp_path / "local"
    (root / "sub").mkdir(parents=True)
    (root / "many").mkdir()
    watch = FolderWatch("t", str(root), delay=0.2)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="escale.daemon.watch")
    try:
        assert watch.start()
        for i in range(queued // 2 + 100):  # two events each (created, closed after writing)
            (root / "many" / f"{i}").write_bytes(b"")
        assert watch.wait(PATIENCE, stop)
        overflows = [r for r in caplog.records if "queue overflow" in r.getMessage()]
        assert len(overflows) == 1 and watch.active and watch.watched_folders == 3
        watch.pass_started()
        (root / "sub" / "after.txt").write_bytes(b"seen")
        assert watch.wait(PATIENCE, stop)
        assert watch.changed == {"sub/after.txt"}
    finally:
        watch.close()


def _start_with_three_watches(daemons: Daemons, config: str) -> None:
    """Start the daemon of ``config`` in a user namespace whose inotify limit
    is 3 watches (tracked by ``daemons``, which stops it)."""
    limited = ["unshare", "-U", "-r", "sh", "-c", 'echo 3 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh",
               sys.executable, "-m", "escale.cli.ctl", "-c", config, "start"]
    started = subprocess.run(limited, capture_output=True, text=True, timeout=PATIENCE, check=False)
    daemons.track(config)
    assert started.returncode == 0, started.stderr
