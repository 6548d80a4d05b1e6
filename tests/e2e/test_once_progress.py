"""``escale --once`` shows a progress bar on a terminal and nothing in a pipe."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from tests.e2e.cluster import Cluster, write


def _conf(cluster: Cluster) -> str:
    a = cluster.add("a")
    for i in range(30):
        write(a, f"f{i:02d}.txt", f"file {i}")
    return cluster.config


def test_progress_on_a_terminal(file_cluster: Cluster) -> None:
    conf = _conf(file_cluster)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "escale.cli.main", "--once", "-c", conf],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "[a] sync" in screen and "30/30" in screen, screen[-500:]


def test_no_progress_in_a_pipe(file_cluster: Cluster) -> None:
    _conf(file_cluster)
    result = file_cluster.run("a")
    assert "[a] sync" not in result.stderr and "30/30" not in result.stderr
