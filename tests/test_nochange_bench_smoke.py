"""The no-change benchmark still runs: a tiny dataset on the file backend.

Speed is not asserted (it lives in bench/); what is checked is that escale's
client B received the whole dataset (the bench fails otherwise) and that the
table puts escale's pass with nothing to do, in both layouts, beside
``rclone copy``.
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
         "--repeat", "1", "--layouts", "index,placeholder", "--json", rows_path,
         "--workdir", os.path.join(str(tmp_path), "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(rows_path, encoding="utf-8") as handle:
        rows = {row["tool"]: row for row in map(json.loads, handle)}
    for layout in ("index", "placeholder"):
        assert rows[f"escale --once ({layout})"]["files"] == 30 and rows[f"escale --once ({layout})"]["seconds"] > 0
    ratios = rows["rclone copy"]["ratio"].split(" / ")  # one per layout
    assert len(ratios) == 2 and all(float(r) > 0 for r in ratios)
    assert "escale --once (index)" in result.stdout and "rclone copy" in result.stdout
