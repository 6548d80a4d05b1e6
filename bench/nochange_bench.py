"""A pass with nothing to do: escale beside ``rclone copy`` and ``unison``.

Usage::

    .venv/bin/python -m bench.nochange_bench                          # 100,000 files, file and sftp
    .venv/bin/python -m bench.nochange_bench --count 10000 --backends file --repeat 5

For each backend (``file``: a local-folder relay; ``sftp``: OpenSSH on
127.0.0.1, both started by :mod:`bench.servers`), a dataset of ``--count``
files of ``--size`` bytes (:func:`bench.datasets.make_small`) is synced once by
each tool, untimed: escale client A pushes it (index layout, encrypted with a
generated key file), client B receives it, and both pass until nothing is
left to do; ``rclone copy`` copies it to a fresh folder on the same server;
``unison`` syncs it with a replica (a local folder, or a folder of the SSH
server's account over ssh). Then each tool runs ``--repeat`` more times with
nothing to do, one process each (:mod:`bench._launch`: wall time and peak
memory of that process): ``escale --once`` for client B (what a cron job or
a daemon's periodic pass pays), ``rclone copy`` again, ``unison`` again. The
table gives the medians and escale's ratios to each (issue 11: at most 1.0x
rclone copy and 2x unison at 100,000 files). ``--layouts index,placeholder``
runs escale in both layouts (default: the index layout); a peer's row then
gives one ratio per layout, in that order. Times depend on the machine's
load: run it on a quiet machine, and compare ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass

from bench.datasets import make_small
from bench.measure import BenchError, Measurement, compiled_python_env, run_measured, write_rows
from bench.servers import Backend, BenchServers, started, stop_servers_on_sigterm, unison_command
from escale.crypto.keys import generate_key_file

BACKENDS = ("file", "sftp")
LAYOUTS = ("index", "placeholder")


@dataclass(frozen=True)
class Row:
    backend: str
    tool: str
    files: int
    seconds: float
    peak_kib: int
    #: escale's seconds over this tool's, one per layout run (in ``--layouts`` order), joined by " / "
    ratio: str | None = None


class NoChange:
    """The runs of one bench invocation, in ``workdir``."""

    def __init__(self, workdir: str, servers: BenchServers, source: str, repeat: int) -> None:
        self.workdir, self.servers, self.source, self.repeat = workdir, servers, source, repeat
        self.runs = 0

    def _run(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> Measurement:
        self.runs += 1
        stem = os.path.join(self.workdir, f"{self.runs:03d}-{name}")
        return run_measured(argv, result_path=stem + ".json", log_path=stem + ".log", env=env)

    def _median(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> tuple[float, int]:
        runs = [self._run(argv, name, env) for _ in range(self.repeat)]
        return statistics.median(r.seconds for r in runs), max(r.maxrss_kib for r in runs)

    def escale(self, backend: Backend, layout: str = "index") -> tuple[float, int]:
        run = tempfile.mkdtemp(prefix=f"escale-{backend.name}-{layout}-", dir=self.workdir)
        key = os.path.join(run, "key")
        generate_key_file(key)
        relay = "".join(f"{k} = {v}\n" for k, v in backend.target.config_for(os.path.basename(run)).items())
        text = "".join(f"[{name}]\nlocal path = {local}\nstate directory = {os.path.join(run, 'state-' + name)}\n"
                       f"{relay}encryption = yes\nkey = {key}\nindex = {'yes' if layout == 'index' else 'no'}\n\n"
                       for name, local in (("a", self.source), ("b", os.path.join(run, "received"))))
        config = os.path.join(run, "escale.conf")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(text)

        def once(section: str) -> list[str]:
            return [sys.executable, "-m", "escale.cli.main", "--config", config, "--once", "-r", section]

        for section in ("a", "b", "a", "b", "a", "b"):  # push, pull, reclaim, then passes that find nothing
            self._run(once(section), f"escale-{backend.name}-settle-{section}", compiled_python_env(self.workdir))
        received, sent = _files(os.path.join(run, "received")), _files(self.source)
        if received != sent:
            raise BenchError(f"escale client B received {received} of {sent} files (see {run})")
        return self._median(once("b"), f"escale-{backend.name}-{layout}-idle", compiled_python_env(self.workdir))

    def rclone(self, backend: Backend) -> tuple[float, int]:
        folder = os.path.basename(tempfile.mkdtemp(prefix=f"rclone-{backend.name}-", dir=self.workdir))
        remote = f"{backend.remote}:{backend.remote_path(folder)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        argv = [self.servers.binary, "copy", self.source, remote, "--config", self.servers.conf_path,
                *backend.rclone_flags]
        self._run(argv, f"rclone-{backend.name}-first", env)
        return self._median(argv, f"rclone-{backend.name}-idle", env)

    def unison(self, backend: Backend) -> tuple[float, int]:
        run = tempfile.mkdtemp(prefix=f"unison-{backend.name}-", dir=self.workdir)
        argv, _, env = unison_command(self.source, run, backend)
        self._run(argv, f"unison-{backend.name}-first", env)
        return self._median(argv, f"unison-{backend.name}-idle", env)


def _files(root: str) -> int:
    """Files below ``root``, escale's own ``.escale`` folders left out."""
    count = 0
    for _, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".escale"]
        count += len(names)
    return count


def table(rows: list[Row]) -> str:
    lines = [f"{'backend':<8} {'tool':<28} {'files':>9} {'seconds':>8} {'peak MiB':>9} {'escale x':>11}",
             "-" * 78]
    for r in rows:
        ratio = r.ratio or ""
        lines.append(f"{r.backend:<8} {r.tool:<28} {r.files:>9} {r.seconds:>8.2f} {r.peak_kib / 1024:>9.1f} "
                     f"{ratio:>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="files in the dataset (default 100000)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per file (default 1024)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: file, sftp")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per tool (median; default 3)")
    parser.add_argument("--workdir", default=None, help="where to work (default: a new temporary folder)")
    parser.add_argument("--json", default=None, help="also write one JSON object per row to this file")
    parser.add_argument("--layouts", default="index", help="comma-separated: index, placeholder (default index)")
    args = parser.parse_args(argv)
    layouts = [n for n in args.layouts.split(",") if n]
    if not layouts or any(n not in LAYOUTS for n in layouts):
        parser.error(f"--layouts: choose among {', '.join(LAYOUTS)}")
    names = [n for n in args.backends.split(",") if n]
    if not names or any(n not in BACKENDS for n in names):
        parser.error(f"--backends: choose among {', '.join(BACKENDS)}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    stop_servers_on_sigterm()
    workdir = args.workdir or tempfile.mkdtemp(prefix="escale-nochange-")
    source = os.path.join(workdir, "source")
    make_small(source, args.count, size=args.size)
    rows: list[Row] = []
    with started(os.path.join(workdir, "servers"), names) as servers:
        bench = NoChange(workdir, servers, source, args.repeat)
        for name in names:
            backend = servers.backends[name]
            escales = {layout: bench.escale(backend, layout) for layout in layouts}
            peers = {"rclone copy": bench.rclone(backend)}
            if shutil.which("unison"):
                peers["unison"] = bench.unison(backend)
            else:
                print("unison is not installed (Debian package unison): skipped", flush=True)
            for layout, escale in escales.items():
                rows.append(Row(name, f"escale --once ({layout})", args.count, *escale))
            for tool, (seconds, peak) in peers.items():
                ratios = [f"{e[0] / seconds:.2f}" for e in escales.values()] if seconds else []
                rows.append(Row(name, tool, args.count, seconds, peak, " / ".join(ratios) or None))
            print(table(rows), flush=True)
    if args.json:
        write_rows(args.json, rows)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
