"""SIGTERM (what ``systemctl stop`` sends) in the middle of a daemon's pass: the
daemon ends cleanly (exit 0) once the object it is transferring is done, leaves
no partial file in the user's folder and nothing that the next start does not
complete. The daemon is a real foreground ``escale``, paused (``ESCALE_PAUSE_AT``)
at one transfer of its pass, sent SIGTERM, then let go on; its transfers are
slowed down so that it sees the signal before its pass is done."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon.helpers import PATIENCE, Daemons, escale, wait_for, write_config
from tests.paused import wait_stopped

pytestmark = pytest.mark.timeout(300)

FILES = {f"f{i}.bin": bytes([i]) * (100_000 + i) for i in range(6)}
#: the transfers of the daemon under test take about a second each: it sees
#: the signal (within half a second) long before its pass is done
SLOW = {"bandwidth limit": "100 KiB"}


def _config(folder: Path, name: str, relay: Path, **extra: str) -> str:
    folder.mkdir()
    local = folder / "local"
    local.mkdir()
    return write_config(str(folder), {name: {"local path": str(local), "protocol": "file",
                                             "relay directory": str(relay), "refresh": "0.2", **extra}},
                        globals_=f"log file = {folder / 'escale.log'}\n")


def _stop_in_pass(config: str, step: str) -> None:
    """Run the daemon of ``config`` in the foreground until it reaches ``step``,
    then SIGTERM it there; it must end on its own, with exit code 0."""
    env = {**os.environ, "ESCALE_PAUSE_AT": step}
    process = subprocess.Popen([sys.executable, "-m", "escale.cli.main", "-c", config], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_stopped(process.pid)
        process.send_signal(signal.SIGTERM)
        process.send_signal(signal.SIGCONT)
        assert process.wait(timeout=PATIENCE) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _whole(local: Path) -> dict[str, bytes]:
    """What ``local`` holds; every file in it must be one of FILES, whole."""
    found = {p.name: p.read_bytes() for p in local.iterdir() if p.is_file()}
    for name, content in found.items():
        assert FILES.get(name) == content, name
    return found


def test_sigterm_while_sending(tmp_path: Path, daemons: Daemons) -> None:
    relay = tmp_path / "relay"
    config_a = _config(tmp_path / "A", "alice", relay, **SLOW)
    config_b = _config(tmp_path / "B", "bob", relay)
    for name, content in FILES.items():
        (tmp_path / "A" / "local" / name).write_bytes(content)
    _stop_in_pass(config_a, "push f1.bin")
    # what was committed before the stop reaches bob, whole; the rest after alice starts again
    once = escale("--once", "-c", config_b)
    assert once.returncode == 0, once.stderr
    assert len(_whole(tmp_path / "B" / "local")) < len(FILES)
    daemons.start(config_a)
    daemons.start(config_b)
    wait_for(lambda: _whole(tmp_path / "B" / "local") == FILES, "every file to reach bob")


def test_sigterm_while_receiving(tmp_path: Path, daemons: Daemons) -> None:
    relay = tmp_path / "relay"
    config_a = _config(tmp_path / "A", "alice", relay)
    config_b = _config(tmp_path / "B", "bob", relay, **SLOW)
    for name, content in FILES.items():
        (tmp_path / "A" / "local" / name).write_bytes(content)
    once = escale("--once", "-c", config_a)
    assert once.returncode == 0, once.stderr
    _stop_in_pass(config_b, "download f1.bin")
    local = tmp_path / "B" / "local"
    assert [p.name for p in local.iterdir() if p.name.startswith(".escale-")] == []
    assert len(_whole(local)) < len(FILES)
    daemons.start(config_b)
    wait_for(lambda: _whole(local) == FILES, "every file to reach bob after the restart")
