"""End to end with real processes: ``escale --once`` builds the repository,
``escalectl`` backs it up, restores it and fixes it; output stays clean in pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.ops.helpers import key_file, relay_objects, tree, wipe, write

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)


def test_real_processes_backup_wipe_restore_fix(tmp_path: Path) -> None:
    from escale.relay import RelaySpec

    base = str(tmp_path)
    relay = os.path.join(base, "relay")
    conf = os.path.join(base, "escale.conf")
    key = key_file(base)
    with open(conf, "w") as handle:
        for name in ("alice", "bob"):
            handle.write(f"[{name}]\nlocal path = {os.path.join(base, name)}\nprotocol = file\n"
                         f"relay directory = {relay}\nencryption = yes\nkey = {key}\nlock timeout = 5\n\n")
    write(os.path.join(base, "alice"), {"notes.txt": b"notes", "photos/cat.jpg": os.urandom(40_000)})
    os.makedirs(os.path.join(base, "bob"))

    def once() -> None:
        done = _run("escale.cli.main", "-c", conf, "--once")
        assert done.returncode == 0, done.stderr

    once()
    once()
    assert tree(os.path.join(base, "bob")) == tree(os.path.join(base, "alice"))

    archive = os.path.join(base, "relay.tgz")
    done = _run("escale.cli.ctl", "-c", conf, "backup", "alice", archive)
    assert done.returncode == 0 and done.stderr == "" and "\r" not in done.stdout, done.stderr
    wipe(RelaySpec(protocol="file", directory=relay))
    done = _run("escale.cli.ctl", "-c", conf, "restore", "bob", archive)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    write(os.path.join(base, "bob"), {"from-bob.txt": b"after restore"})
    once()
    once()
    assert tree(os.path.join(base, "alice")) == tree(os.path.join(base, "bob"))
    assert len(tree(os.path.join(base, "alice"))) == 3

    wipe(RelaySpec(protocol="file", directory=relay), "meta")
    done = _run("escale.cli.ctl", "-c", conf, "fix", "-r", "bob")
    assert done.returncode == 0, done.stderr
    assert "3 recreated" in done.stdout
    once()  # every client records the new versions (same content: nothing is downloaded)
    assert tree(os.path.join(base, "alice")) == tree(os.path.join(base, "bob"))
    write(os.path.join(base, "alice"), {"notes.txt": b"notes, edited after the fix"})
    once()
    once()
    assert tree(os.path.join(base, "bob"))["notes.txt"] == b"notes, edited after the fix"
    assert relay_objects(RelaySpec(protocol="file", directory=relay))
