"""The sync benchmark still runs: ``--quick`` on the file backend with tiny sizes.

Speed is not asserted (it lives in bench/); what is checked is that a bench run
completes, that escale's copies were verified against the dataset (the bench
fails otherwise), and that the table carries the figures and the rclone ratio.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections import Counter

from bench.counting import CountingRelay
from escale.relay import RelaySpec, make_relay

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


def test_counting_relay_counts_calls_and_reads_capabilities_live(tmp_path: object) -> None:
    inner = make_relay(RelaySpec(protocol="file", directory=os.path.join(str(tmp_path), "relay")))
    counts: Counter[str] = Counter()
    relay = CountingRelay(inner, counts)
    # backends may learn their capabilities on open(): the wrapper must not keep a stale copy
    inner.capabilities = dataclasses.replace(inner.capabilities, exclusive_create=False)
    assert relay.capabilities == inner.capabilities
    with relay:
        relay.put_bytes("a/b", b"data")
        assert relay.get_bytes("a/b") == b"data"
        relay.list("a")
        relay.delete("a/b")
    assert counts == Counter(open=1, put=1, get=1, list=1, delete=1)


def test_lease_bench_runs_and_counts_the_claims(tmp_path: object) -> None:
    """``bench.lease_bench`` on the local folder (the put decides: no claim)
    and on the rclone backend (claims): a row each, with the requests made."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.lease_bench", "--backends", "file,rclone", "--rounds", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["file"][1] == "no" and rows["rclone"][1] == "yes"
    assert "3 put" in " ".join(rows["rclone"])  # the claim, the record, the release
    assert "2 put" in " ".join(rows["file"])  # the record and the release
