"""One escale pass in its own process, with the relay requests counted.

Usage: ``python -m bench.escale_pass CONFIG SECTION RESULT.json``. Loads the
configuration file, runs one :meth:`SyncClient.run_pass` for client
``SECTION`` with the backend wrapped in a :class:`~bench.counting.CountingRelay`
(below the usual retry wrapper), and writes RESULT.json: the request counts,
the pass's own duration, what it sent and received, its errors, and the
process's peak memory (``VmHWM``). Exit code 0 when the pass ran without
error, 1 otherwise (the result file is written either way when possible).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter

from bench.counting import CountingRelay
from escale.config import load_config
from escale.errors import EscaleError
from escale.relay import Relay, make_relay
from escale.relay.retry import RetryingRelay
from escale.sync.client import PassReport, SyncClient


def peak_rss_kib() -> int:
    """``VmHWM`` of this process (Linux), 0 when unknown."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(config_path: str, section: str) -> dict[str, object]:
    settings = load_config(config_path).client(section)
    counts: Counter[str] = Counter()

    def factory() -> Relay:
        return RetryingRelay(CountingRelay(make_relay(settings.relay), counts))

    client = SyncClient(settings, relay_factory=factory)
    start = time.perf_counter()
    error = ""
    report: PassReport | None = None
    try:
        report = client.run_pass()
    except EscaleError as exc:
        error = str(exc)
    seconds = time.perf_counter() - start
    report = report or client.last_report
    return {
        "ok": bool(report and report.ok and not report.errors and not error),
        "pass_seconds": seconds,
        "requests": dict(counts),
        "pushed": len(report.pushed) if report else 0,
        "pulled": len(report.pulled) if report else 0,
        "bytes_up": report.bytes_up if report else 0,
        "bytes_down": report.bytes_down if report else 0,
        "errors": ([error] if error else []) + (report.errors[:5] if report else []),
        "vmhwm_kib": peak_rss_kib(),
    }


def main(argv: list[str]) -> int:
    config_path, section, result_path = argv
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(config_path, section)
    with open(result_path, "w") as handle:
        json.dump(result, handle)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
