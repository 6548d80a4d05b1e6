"""Another escale process working on a client (a cron ``escale --once``, a dry
run, ``escalectl fix``) while the daemon runs it: the daemon's pass is skipped
for that turn, which is no failure (nothing is wrong, as ``--once`` says too):
no ERROR, no failure in ``escalectl status``, and the daemon syncs once the
other process is done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.daemon.helpers import PATIENCE, Daemons, ctl, wait_for, write_config
from tests.paused import wait_stopped


def test_a_client_busy_in_another_process_is_skipped_not_failed(tmp_path: Path, daemons: Daemons) -> None:
    local, relay, log = tmp_path / "alice", tmp_path / "relay", tmp_path / "escale.log"
    local.mkdir()
    (local / "by-cron.txt").write_bytes(b"sent by escale --once\n")
    config = write_config(str(tmp_path), {"alice": {"local path": str(local), "protocol": "file",
                                                    "relay directory": str(relay)}},
                          globals_=f"log file = {log}\n")
    env = {**os.environ, "ESCALE_PAUSE_AT": "push by-cron.txt"}
    once = subprocess.Popen([sys.executable, "-m", "escale.cli.main", "--once", "-c", config], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_stopped(once.pid)  # holding alice's lock
        daemons.start(config)
        wait_for(lambda: "already being synced by another escale process" in log.read_text(),
                 "the daemon's pass to find alice busy")

        result = ctl(config, "--json", "status")
        assert result.returncode == 0, result.stderr
        alice: dict[str, Any] = json.loads(result.stdout)["clients"][0]
        assert (alice["failures"], alice["last_error"]) == (0, None)
        assert [line for line in log.read_text().splitlines() if " ERROR " in line] == []

        once.send_signal(signal.SIGCONT)
        assert once.wait(timeout=PATIENCE) == 0
        (local / "by-daemon.txt").write_bytes(b"sent by the daemon\n")
        wait_for(lambda: "sent by-daemon.txt" in log.read_text(), "the daemon to sync once the other process is done")
    finally:
        if once.poll() is None:
            once.kill()
            once.wait()
