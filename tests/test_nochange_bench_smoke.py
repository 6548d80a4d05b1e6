"""The no-change benchmark still runs: a tiny dataset on the file backend.

Speed is not asserted (it lives in bench/); what is checked is that escale's
client B received the whole dataset (the bench fails otherwise) and that the
table puts escale's pass with nothing to do beside ``rclone copy``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_no_change_bench_runs_on_the_file_backend(tmp_path: object) -> None:
    rows_path = os.path.join(str(tmp_path), "rows.json")
    result = subprocess.run(
        [sys.executable, "-m", "bench.nochange_bench", "--count", "30", "--size", "64", "--backends", "file",
         "--repeat", "1", "--json", rows_path, "--workdir", os.path.join(str(tmp_path), "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(rows_path, encoding="utf-8") as handle:
        rows = {row["tool"]: row for row in map(json.loads, handle)}
    assert rows["escale --once (index)"]["files"] == 30 and rows["escale --once (index)"]["seconds"] > 0
    assert rows["rclone copy"]["ratio"] is not None and rows["rclone copy"]["ratio"] > 0
    assert "escale --once (index)" in result.stdout and "rclone copy" in result.stdout
