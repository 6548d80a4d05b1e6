"""``escalectl migrate --layout``: converting a repository between the placeholder and
the index layouts, online, through real ``escalectl`` processes; the clients keep syncing."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from escale.config import load_config
from escale.config.settings import ClientSettings
from escale.errors import ProtocolError
from escale.relay import RelaySpec
from escale.sync.client import SyncClient, state_dir_for
from tests.ops.helpers import key_file, relay_objects, sync, tree, write
from tests.paused import wait_stopped

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTION = "shared-docs"


def _run(module: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": REPO_ROOT, **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, env=full,
                          timeout=180, stdin=subprocess.DEVNULL, check=False)


def _config(base: str, name: str, relay_dir: str) -> str:
    path = os.path.join(base, f"{name}.conf")
    with open(path, "w") as handle:
        handle.write(f"# {name}'s machine\n[{SECTION}]\nlocal path = {os.path.join(base, name)}\n"
                     f"protocol = file\nrelay directory = {relay_dir}\nencryption = yes\nkey = {key_file(base)}\n"
                     "lock timeout = 4\nmaxpagesize = 1\n# end\n")
    os.chmod(path, 0o600)
    return path


def _client(conf: str) -> ClientSettings:
    return load_config(conf).client(SECTION)


def _set_index(conf: str, on: bool) -> None:
    """What the user does on another machine: set ``index`` in its section."""
    with open(conf) as handle:
        lines = [line for line in handle.read().splitlines() if not line.startswith("index =")]
    lines.insert(1, f"index = {'yes' if on else 'no'}")
    with open(conf, "w") as handle:
        handle.write("\n".join(lines) + "\n")


Machines = tuple[str, str, str, RelaySpec]


@pytest.fixture
def machines(tmp_path: Path) -> Machines:
    """alice and bob (a configuration file each) in sync through an encrypted file relay in
    the placeholder layout; a small file and a big one (over the page threshold: a big
    object in the index layout) pending on the relay for bob, one file deleted."""
    base = str(tmp_path)
    relay_dir = os.path.join(base, "relay")
    alice_conf, bob_conf = _config(base, "alice", relay_dir), _config(base, "bob", relay_dir)
    alice, bob = _client(alice_conf), _client(bob_conf)
    write(alice.local_path, {"report.txt": b"quarterly", "img/logo.png": os.urandom(50_000),
                             "gone.txt": b"to be deleted", "notes/a.txt": b"a" * 5000})
    os.makedirs(bob.local_path)
    sync(alice, bob)
    os.unlink(os.path.join(alice.local_path, "gone.txt"))
    write(alice.local_path, {"pending.txt": b"bob has not got this yet", "big.bin": os.urandom(400_000)})
    sync(alice, rounds=1)
    return base, alice_conf, bob_conf, RelaySpec(protocol="file", directory=relay_dir)


def _folders(spec: RelaySpec) -> set[str]:
    return {name.partition("/")[0] for name in relay_objects(spec) if "/" in name}


def _seen(settings: ClientSettings) -> dict[str, int]:
    with sqlite3.connect(os.path.join(state_dir_for(settings), "state.db")) as db:
        return dict(db.execute("SELECT key, version FROM seen").fetchall())


def _migrate(conf: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run("escale.cli.ctl", "-c", conf, "migrate", "-r", SECTION, *argv, env=env)


def test_round_trip_placeholder_index_placeholder_with_two_clients(machines: Machines) -> None:
    base, alice_conf, bob_conf, spec = machines
    seen_before = _seen(_client(alice_conf))

    done = _migrate(alice_conf, "--layout", "index")
    assert done.returncode == 0, done.stderr
    assert "from the placeholder layout to the index layout" in done.stdout and "verified" in done.stdout
    assert "index = yes" in Path(alice_conf).read_text()
    assert [p for p in os.listdir(base) if p.startswith("alice.conf.bak-")]
    assert {"index", "pages", "big"} <= _folders(spec) and not {"meta", "data", "acks"} & _folders(spec)

    # bob still says index = no: a real `escale --once` stops with one line naming the command
    once = _run("escale.cli.main", "-c", bob_conf, "--once")
    assert once.returncode != 0
    lines = [line for line in once.stderr.splitlines() if "escalectl migrate" in line]
    assert len(lines) == 1 and "index layout" in lines[0] and "set index = yes" in lines[0], once.stderr
    assert "pending.txt" not in tree(_client(bob_conf).local_path)

    # bob sets index = yes: he gets what was pending, versions kept (nothing seen goes back)
    _set_index(bob_conf, True)
    alice, bob = _client(alice_conf), _client(bob_conf)
    assert alice.index and bob.index
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)
    assert "gone.txt" not in tree(bob.local_path)
    after = _seen(alice)
    assert all(after.get(key, 0) >= version for key, version in seen_before.items())
    write(bob.local_path, {"from-bob.txt": b"written in the index layout"})
    write(alice.local_path, {"report.txt": b"quarterly, revised"})
    sync(bob, alice)
    assert tree(alice.local_path) == tree(bob.local_path)
    assert tree(alice.local_path)["from-bob.txt"] == b"written in the index layout"

    # and back to placeholders, with a file pending for bob again
    write(alice.local_path, {"pending-2.txt": b"bob waits for this one"})
    sync(alice, rounds=1)
    done = _migrate(alice_conf, "--layout", "placeholder")
    assert done.returncode == 0, done.stderr
    assert "index = no" in Path(alice_conf).read_text()
    assert {"meta", "data"} <= _folders(spec) and not {"index", "pages", "big"} & _folders(spec)
    assert not [n for n in relay_objects(spec) if re.search(r"\.ack\.\d+$", n)]
    with pytest.raises(ProtocolError, match=r"escalectl migrate -r shared-docs --layout index"):
        SyncClient(_client(bob_conf)).run_pass()
    _set_index(bob_conf, False)
    alice, bob = _client(alice_conf), _client(bob_conf)
    sync(alice, bob)
    assert tree(bob.local_path)["pending-2.txt"] == b"bob waits for this one"
    write(bob.local_path, {"after-the-round-trip.txt": b"still syncing"})
    sync(bob, alice)
    assert tree(alice.local_path) == tree(bob.local_path)
    # and once more to the index layout: its generations start above the first index's
    done = _migrate(alice_conf, "--layout", "index")
    assert done.returncode == 0, done.stderr
    _set_index(bob_conf, True)
    alice, bob = _client(alice_conf), _client(bob_conf)
    write(alice.local_path, {"third.txt": b"3"})
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)


def test_running_it_again_finishes_and_same_layout_only_cleans(machines: Machines) -> None:
    _base, alice_conf, _bob_conf, _spec = machines
    assert _migrate(alice_conf, "--layout", "index").returncode == 0
    again = _migrate(alice_conf, "--layout", "index")
    assert again.returncode == 0, again.stderr
    assert "already in the index layout" in again.stdout


def test_bad_arguments(machines: Machines) -> None:
    _base, alice_conf, _bob_conf, spec = machines
    before = relay_objects(spec)
    done = _migrate(alice_conf)
    assert done.returncode == 64 and "--layout" in done.stderr
    done = _migrate(alice_conf, "--layout", "compact")
    assert done.returncode == 64
    assert relay_objects(spec) == before


def _steps(alice_conf: str, base: str) -> list[str]:
    """The mutating steps of one conversion to the index layout (on a copy of the machines' state)."""
    log_path = os.path.join(base, "steps.log")
    done = _migrate(alice_conf, "--layout", "index", env={"ESCALE_CRASH_LOG": log_path})
    assert done.returncode == 0, done.stderr
    with open(log_path) as handle:
        return [line.split(" ", 1)[1].rstrip("\n") for line in handle]


@pytest.mark.parametrize("where", ["first", "checkpoint written", "verified", "header written", "last"])
def test_a_kill_midway_leaves_a_usable_repository(machines: Machines, tmp_path_factory: pytest.TempPathFactory,
                                                  where: str) -> None:
    base, alice_conf, bob_conf, spec = machines
    with open(alice_conf) as handle:
        conf_text = handle.read()
    crash_at = {"first": "1", "last": "-1"}.get(where, where)
    if crash_at == "-1":
        # the last removal of an old object: find it on a scratch run of the same repository
        scratch = str(tmp_path_factory.mktemp("scratch"))
        steps = _steps_on_copy(base, scratch)
        crash_at = steps[-1]
    done = _migrate(alice_conf, "--layout", "index", env={"ESCALE_CRASH_AT": crash_at})
    assert done.returncode == 137, (done.returncode, done.stderr)
    with open(alice_conf) as handle:
        assert handle.read() == conf_text  # the configuration is rewritten only at the very end
    header = relay_objects(spec)
    assert "escale.repo" in header
    alice, bob = _client(alice_conf), _client(bob_conf)
    if where in ("first", "checkpoint written", "verified"):
        # the switch did not happen: the placeholder layout is in force and clients sync on
        sync(alice, bob)
        assert tree(alice.local_path) == tree(bob.local_path)
        assert "pending.txt" in tree(bob.local_path)
    else:
        with pytest.raises(ProtocolError, match="escalectl migrate"):
            SyncClient(alice).run_pass()
    # running the command again finishes the job either way; then both clients converge
    done = _migrate(alice_conf, "--layout", "index")
    assert done.returncode == 0, done.stderr
    assert not {"meta", "data", "acks"} & _folders(spec)
    _set_index(bob_conf, True)
    alice, bob = _client(alice_conf), _client(bob_conf)
    write(bob.local_path, {"after-crash.txt": b"x"})
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)
    assert tree(alice.local_path)["pending.txt"] == b"bob has not got this yet"


def _steps_on_copy(base: str, scratch: str) -> list[str]:
    """Copy the machines (folders, state, relay, configuration) under ``scratch`` and list
    the steps of a conversion there."""
    import shutil

    for name in os.listdir(base):
        source = os.path.join(base, name)
        target = os.path.join(scratch, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)
    conf = os.path.join(scratch, "alice.conf")
    with open(conf) as handle:
        text = handle.read().replace(base, scratch)
    with open(conf, "w") as handle:
        handle.write(text)
    return _steps(conf, scratch)


def test_a_pass_that_attached_before_the_conversion_sends_nothing_into_the_old_layout(machines: Machines) -> None:
    """bob's pass attaches to the placeholder repository, is frozen before it takes the lease
    (while it applies what it received), the repository is converted meanwhile; when bob
    carries on, he finds the new layout under the lease and sends nothing into the old one."""
    _, alice_conf, bob_conf, spec = machines
    bob = _client(bob_conf)
    write(bob.local_path, {"new-on-bob.txt": b"must not land in meta/"})
    full = {**os.environ, "PYTHONPATH": REPO_ROOT, "ESCALE_PAUSE_AT": "download pending.txt"}
    proc = subprocess.Popen([sys.executable, "-m", "escale.cli.main", "-c", bob_conf, "--once"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full,
                            stdin=subprocess.DEVNULL)
    try:
        wait_stopped(proc.pid)
        done = _migrate(alice_conf, "--layout", "index")
        assert done.returncode == 0, done.stderr
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert "was converted to the index layout during this pass; nothing was sent" in err, err
    assert not {"meta", "data"} & _folders(spec)
    # bob's file is still his, and reaches alice once bob follows the conversion
    _set_index(bob_conf, True)
    alice, bob = _client(alice_conf), _client(bob_conf)
    sync(bob, alice)
    assert tree(alice.local_path)["new-on-bob.txt"] == b"must not land in meta/"

