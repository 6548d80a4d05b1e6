"""Watch mode: how soon a local write reaches the other machine, and what an idle
watching daemon costs.

Usage::

    .venv/bin/python -m bench.watch_bench                       # 50 changes, 100,000 files
    .venv/bin/python -m bench.watch_bench --changes 20 --idle-files 10000 --idle-seconds 30
    .venv/bin/python -m bench.watch_bench --skip-idle --json rows.json

**Latency.** Two real daemons (``escale -c CONF`` processes, one client each)
share a local-folder relay, both with ``refresh = 1``. Once the first file has
gone across, the script writes ``--changes`` new files on A one at a time, each
after a pause drawn between 0 and 1 s (seeded), so that the writes do not keep
step with the passes, and for each polls B's folder every 5 ms until the file
is there with its whole content: the time from A's ``close()`` to that moment is
one sample. The same
run is made with watch mode on (``watch = yes``, the default ``watch delay`` of
1 s) and off (``watch = no``: local changes found by the pass every second), so
that both figures come from one machine at one time, and a third time with
watch mode on and ``refresh = 300`` on A, where only the watch finds A's
changes (B still polls the relay every second). The table gives the
median, the 90th percentile and the extremes.

**Idle cost.** One daemon (``mode = download``, so that its first pass does not
push the tree: the watch does not depend on the mode) watches a tree of
``--idle-files`` empty files, 100 per folder, with ``refresh = 300`` so that no
periodic pass falls in the measured window. After its first pass, the CPU time
it uses (``utime + stime`` of ``/proc/PID/stat``) over ``--idle-seconds`` is
divided by that window; its resident memory is read at the end. The same is
measured with ``watch = no`` for the difference. The cost of the periodic pass
(a rescan every ``refresh`` seconds) is the scanner's, measured by
``sync_bench.py`` (*idle* rows).

Nothing here is asserted; seconds depend on the machine and its load (the load
average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class LatencyRow:
    watch: bool
    writer_refresh: float
    changes: int
    median: float
    p90: float
    fastest: float
    slowest: float


@dataclass(frozen=True)
class IdleRow:
    watch: bool
    files: int
    folders: int
    seconds: float
    cpu_seconds: float
    cpu_percent: float
    rss_mib: float


def _write_config(folder: str, name: str, values: dict[str, str]) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "escale.conf")
    lines = [f"[{name}]", *(f"{key} = {value}" for key, value in values.items()), ""]
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path


class Daemon:
    """``escale -c CONFIG`` in the foreground, as a child process."""

    def __init__(self, config: str, log: str) -> None:
        self.config = config
        output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self.process = subprocess.Popen([sys.executable, "-m", "escale.cli.main", "-c", config], cwd=ROOT,
                                            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
        finally:
            os.close(output)  # the child has its own copy

    def status(self) -> dict[str, object]:
        result = subprocess.run([sys.executable, "-m", "escale.cli.ctl", "-c", self.config, "--json", "status"],
                                cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            return {}
        doc: dict[str, object] = json.loads(result.stdout)
        return doc

    def passed(self) -> bool:
        clients = self.status().get("clients")
        return isinstance(clients, list) and all(isinstance(c, dict) and c.get("last_pass") for c in clients)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat", encoding="ascii") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> float:
        with open(f"/proc/{self.process.pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait(condition: Callable[[], object], what: str, patience: float = 600.0) -> None:
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _holds(path: str, content: bytes) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read() == content
    except OSError:
        return False


def latency(workdir: str, changes: int, *, watch: bool, writer_refresh: float = 1.0) -> LatencyRow:
    run = tempfile.mkdtemp(prefix=f"latency-{'watch' if watch else 'poll'}-", dir=workdir)
    a, b, relay = (os.path.join(run, n) for n in ("a", "b", "relay"))
    os.makedirs(a)
    os.makedirs(b)
    with open(os.path.join(a, "seed.txt"), "wb") as handle:
        handle.write(b"seed\n")
    common = {"protocol": "file", "relay directory": relay, "refresh": "1", "watch": "yes" if watch else "no"}
    daemon_a = Daemon(_write_config(os.path.join(run, "A"), "a",
                                    {"local path": a, **common, "refresh": f"{writer_refresh:g}"}),
                      os.path.join(run, "a.log"))
    daemons = [daemon_a]
    try:
        _wait(lambda: os.path.exists(os.path.join(relay, "escale.repo")), "A to create the repository")
        daemons.append(Daemon(_write_config(os.path.join(run, "B"), "b", {"local path": b, **common}),
                              os.path.join(run, "b.log")))
        _wait(lambda: _holds(os.path.join(b, "seed.txt"), b"seed\n"), "the seed file to reach B")
        samples = []
        jitter = random.Random(changes)
        for i in range(changes):
            # a pause of 0-1 s, so that writes do not keep step with the passes every second
            time.sleep(jitter.uniform(0.0, 1.0))
            content = f"change {i} at {time.time()}\n".encode() * 8
            name = f"change-{i:03d}.txt"
            with open(os.path.join(a, name), "wb") as handle:
                handle.write(content)
            written = time.monotonic()
            target = os.path.join(b, name)
            while not _holds(target, content):
                if time.monotonic() - written > 120:
                    raise RuntimeError(f"{name} did not reach B in 120 s")
                time.sleep(0.005)
            samples.append(time.monotonic() - written)
    finally:
        for daemon in daemons:
            daemon.stop()
    ordered = sorted(samples)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return LatencyRow(watch, writer_refresh, changes, statistics.median(ordered), p90, ordered[0], ordered[-1])


def make_tree(root: str, files: int, per_folder: int = 100) -> int:
    """``files`` empty files, ``per_folder`` to a folder; returns the folder count."""
    folders = 0
    for start in range(0, files, per_folder):
        folder = os.path.join(root, f"d{start // per_folder:05d}")
        os.makedirs(folder)
        folders += 1
        for i in range(start, min(start + per_folder, files)):
            os.close(os.open(os.path.join(folder, f"f{i:07d}"), os.O_WRONLY | os.O_CREAT, 0o644))
    return folders


def idle(workdir: str, tree: str, files: int, folders: int, seconds: float, *, watch: bool) -> IdleRow:
    run = tempfile.mkdtemp(prefix=f"idle-{'watch' if watch else 'poll'}-", dir=workdir)
    config = _write_config(os.path.join(run, "A"), "idle", {
        "local path": tree, "state directory": os.path.join(run, "state"), "protocol": "file",
        "relay directory": os.path.join(run, "relay"), "refresh": "300", "mode": "download",
        "watch": "yes" if watch else "no"})
    daemon = Daemon(config, os.path.join(run, "daemon.log"))
    try:
        _wait(daemon.passed, "the first pass", patience=1800)
        time.sleep(2)  # let the status query's own work end before the window opens
        before, start = daemon.cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        used, elapsed = daemon.cpu_seconds() - before, time.monotonic() - start
        rss = daemon.rss_mib()
    finally:
        daemon.stop()
    return IdleRow(watch, files, folders, elapsed, used, 100.0 * used / elapsed, rss)


def _table(latencies: list[LatencyRow], idles: list[IdleRow]) -> str:
    lines = []
    if latencies:
        lines += ["Local write on A -> file on B (file relay, B's refresh = 1), seconds",
                  f"{'mode':<22}{'A refresh':>10}{'changes':>8}{'median':>9}{'p90':>9}{'fastest':>9}{'slowest':>9}"]
        for row in latencies:
            mode = "watch (delay 1 s)" if row.watch else "periodic pass only"
            lines.append(f"{mode:<22}{row.writer_refresh:>10g}{row.changes:>8}{row.median:>9.2f}{row.p90:>9.2f}{row.fastest:>9.2f}"
                         f"{row.slowest:>9.2f}")
        lines.append("")
    if idles:
        lines += ["Idle daemon (refresh = 300, no pass in the window)",
                  f"{'mode':<22}{'files':>9}{'folders':>9}{'window s':>10}{'CPU s':>8}{'CPU %':>8}{'RSS MiB':>9}"]
        for i in idles:
            mode = "watch" if i.watch else "no watch"
            lines.append(f"{mode:<22}{i.files:>9}{i.folders:>9}{i.seconds:>10.1f}{i.cpu_seconds:>8.2f}"
                         f"{i.cpu_percent:>8.3f}{i.rss_mib:>9.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--idle-files", type=int, default=100_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--workdir")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="escale-watch-bench-")
    os.makedirs(workdir, exist_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    latencies: list[LatencyRow] = []
    idles: list[IdleRow] = []
    try:
        if not args.skip_latency:
            for watch, writer_refresh in ((True, 1.0), (False, 1.0), (True, 300.0)):
                latencies.append(latency(workdir, args.changes, watch=watch, writer_refresh=writer_refresh))
                print(_table(latencies[-1:], []), flush=True)
        if not args.skip_idle:
            tree = os.path.join(workdir, "tree")
            folders = make_tree(tree, args.idle_files)
            for watch in (True, False):
                idles.append(idle(workdir, tree, args.idle_files, folders, args.idle_seconds, watch=watch))
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(_table(latencies, idles))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            rows: list[LatencyRow | IdleRow] = [*latencies, *idles]
            for row in rows:
                handle.write(json.dumps({"kind": type(row).__name__, **asdict(row)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
