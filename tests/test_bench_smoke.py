"""The sync benchmark still runs: ``--quick`` on the file backend with tiny sizes.

Speed is not asserted (it lives in bench/); what is checked is that a bench run
completes, that escale's copies were verified against the dataset (the bench
fails otherwise), and that the table carries the figures and the rclone ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_bench_on_the_file_backend(tmp_path: object) -> None:
    rows_path = os.path.join(str(tmp_path), "rows.json")
    result = subprocess.run(
        [sys.executable, "-m", "bench.sync_bench", "--quick", "--backends", "file", "--small-count", "20",
         "--big-mib", "1", "--peers", "rclone", "--no-plain", "--json", rows_path,
         "--workdir", os.path.join(str(tmp_path), "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(rows_path) as handle:
        rows = [json.loads(line) for line in handle]
    runs = {(row["data"], row["run"]) for row in rows}
    for data in ("small", "big"):
        assert (data, "escale aes-256-gcm push") in runs
        assert (data, "escale aes-256-gcm push+pull") in runs
        assert (data, "rclone copy up+down") in runs
    push = next(r for r in rows if (r["data"], r["run"]) == ("small", "escale aes-256-gcm push"))
    assert push["files"] == 20
    assert push["requests"]["put"] >= 20  # every file reached the relay through the counted backend
    assert push["ratio"] is not None and push["ratio"] > 0
    assert push["peak_kib"] > 0
    assert "x rclone" in result.stdout and "escale aes-256-gcm push+pull" in result.stdout
