"""What taking and giving back the lease costs, per backend.

Usage::

    .venv/bin/python -m bench.lease_bench                      # webdav, rclone, serve-sftp, s3
    .venv/bin/python -m bench.lease_bench --backends file,webdav --rounds 30

For each backend, one client takes the lease and releases it ``--rounds``
times in a row on one connection (nobody else contends), as the relay phase
of a pass does. The table gives the median and the spread of one
acquire-and-release, the requests it made (:class:`bench.counting.CountingRelay`)
and whether the backend's contenders claim first (doc/protocol.rst, *The
lease*). A pass that writes pays this once; a pass with nothing to write
does not take the lease. Times are for information: the machine may be shared.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter

from bench.counting import OPERATIONS, CountingRelay
from bench.servers import BACKENDS, started, stop_servers_on_sigterm
from escale.crypto import plain_envelope
from escale.protocol import layout
from escale.protocol.lease import LeaseManager

DEFAULT_BACKENDS = ("webdav", "rclone", "serve-sftp", "s3")


def measure(backend_name: str, relay: CountingRelay, counts: Counter[str], rounds: int) -> list[str]:
    """One table row: ``rounds`` acquire-and-release cycles on ``relay``."""
    relay.mkdir(layout.LEASES)
    manager = LeaseManager(relay, plain_envelope(), client_id="b" * 32, label="bench", timeout=60)
    manager.acquire("bench").release()  # the first takes generation 1, with nothing to read
    counts.clear()
    seconds = []
    for _ in range(rounds):
        started_at = time.perf_counter()
        manager.acquire("bench").release()
        seconds.append(time.perf_counter() - started_at)
    requests = ", ".join(f"{counts[op] / rounds:g} {op}" for op in OPERATIONS if counts[op])
    return [backend_name, "yes" if manager.claims else "no", f"{statistics.median(seconds) * 1000:.1f}",
            f"{min(seconds) * 1000:.1f}-{max(seconds) * 1000:.1f}", requests]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"comma-separated, of: {', '.join(BACKENDS)}")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    names = [n for n in args.backends.split(",") if n]
    stop_servers_on_sigterm()
    rows = [["backend", "claims", "median ms", "range ms", "requests per cycle"]]
    with tempfile.TemporaryDirectory(prefix="escale-lease-bench-") as workdir, started(workdir, names) as servers:
        for name in names:
            target = servers.backends[name].target
            counts: Counter[str] = Counter()
            relay = CountingRelay(target.relay(target.new_folder()), counts)
            relay.open()
            try:
                rows.append(measure(name, relay, counts, args.rounds))
            finally:
                relay.close()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
