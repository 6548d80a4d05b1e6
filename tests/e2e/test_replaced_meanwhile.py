"""A version superseded while a receiver is pulling it is skipped, not an error.

Client B plans to receive version 1 of a file; before it downloads it,
client A pushes version 2, which removes version 1 from the relay. B's pass
must end cleanly (the file skipped, an INFO line, exit 0) and its next pass
must receive version 2: a race between clients is not a fault. A payload that
is missing while its placeholder is still there stays an error (see
tests/faults/test_store_forward.py and the tamper tests).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.e2e.cluster import Cluster, tree, write
from tests.paused import wait_stopped


def test_a_version_replaced_during_the_pull_is_skipped_then_received(file_cluster: Cluster) -> None:
    a = file_cluster.add("a")
    b = file_cluster.add("b", transfers="1")
    file_cluster.sync_all()
    write(a, "shared.txt", b"version 1\n")
    file_cluster.run("a")
    command = [sys.executable, "-m", "escale.cli.main", "--once", "-c", file_cluster.config, "-r", "b"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ESCALE_PAUSE_AT": "download shared.txt"})
    try:
        wait_stopped(proc.pid)
        write(a, "shared.txt", b"version 2, written while b was about to download version 1\n")
        file_cluster.run("a")
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "shared.txt" not in tree(b)
    with open(os.path.join(file_cluster.base, "escale.log"), encoding="utf-8") as handle:
        log = handle.read()
    assert "version 1 was replaced on the relay meanwhile" in log
    assert "ERROR" not in log, log
    file_cluster.run("b")
    assert tree(b) == tree(a)
