"""Peak memory of each kind of pass, per tracked file.

Usage::

    .venv/bin/python -m bench.memory_bench                        # 10 and 10,000 files
    .venv/bin/python -m bench.memory_bench --counts 10,10000,100000 --json rows.json
    .venv/bin/python -m bench.memory_bench --layouts placeholder,index

For each count N, a dataset of N small files (``--size`` bytes each, 100 per
folder, :mod:`bench.datasets`) is pushed by client A through a local-folder
relay (encrypted, with a generated key file: a passphrase would add scrypt's
128 MiB to every figure), received by client B, then A reclaims and B runs a
pass with nothing to do. Each pass is ``escale --once`` in its own process,
started through :mod:`bench._launch` (``wait4``: the figure is that process's
peak resident memory). The table gives the peak of each pass and, per count
above the smallest, the bytes per tracked file above the same pass on the
smallest count of the same layout: ``(peak(N) - peak(small)) / (N - small)``.
``--layouts`` runs the placeholder layout, the index layout (``index = yes``),
or both (default: placeholder). The issue's target
is at most 300 bytes per file. Times are printed for information only (the
machine may be shared; see ``sync_bench.py`` for speed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

from bench.datasets import make_small
from bench.measure import compiled_python_env, run_measured, write_rows
from escale.crypto.keys import generate_key_file

PASSES = ("push", "pull", "reclaim", "idle")


LAYOUTS = ("placeholder", "index")


@dataclass(frozen=True)
class Row:
    layout: str
    files: int
    kind: str
    seconds: float
    peak_kib: int


def _config(run: str, key: str, source: str, layout: str) -> str:
    path = os.path.join(run, "escale.conf")
    relay = os.path.join(run, "relay")
    os.makedirs(relay)
    text = "".join(
        f"[{name}]\nlocal path = {local}\nstate directory = {os.path.join(run, 'state-' + name)}\n"
        f"protocol = file\nhost directory = {relay}\nencryption = yes\npassphrase = {key}\n"
        f"{'index = yes' if layout == 'index' else ''}\n\n"
        for name, local in (("a", source), ("b", os.path.join(run, "received")))
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def measure(count: int, size: int, workdir: str, layout: str = "placeholder") -> list[Row]:
    """Run the four passes on ``count`` files in a fresh folder of ``workdir``."""
    run = tempfile.mkdtemp(prefix=f"memory-{layout}-{count}-", dir=workdir)
    source = os.path.join(run, "source")
    make_small(source, count, size=size)
    key = os.path.join(run, "key")
    generate_key_file(key)
    config = _config(run, key, source, layout)
    rows = []
    for kind, section in zip(PASSES, ("a", "b", "a", "b"), strict=True):
        measured = run_measured(
            [sys.executable, "-m", "escale.cli.main", "--config", config, "--once", "-r", section],
            result_path=os.path.join(run, f"{kind}.json"), log_path=os.path.join(run, f"{kind}.log"),
            env=compiled_python_env(workdir))
        rows.append(Row(layout, count, kind, measured.seconds, measured.maxrss_kib))
    received = 0
    for _, dirs, names in os.walk(os.path.join(run, "received")):
        dirs[:] = [d for d in dirs if d != ".escale"]
        received += len(names)
    if received < count:
        raise RuntimeError(f"client B received {received} of {count} files (see {run})")
    shutil.rmtree(run)
    return rows


def table(rows: list[Row]) -> str:
    smallest = {layout: min(r.files for r in rows if r.layout == layout) for layout in {r.layout for r in rows}}
    floor = {(r.layout, r.kind): r.peak_kib for r in rows if r.files == smallest[r.layout]}
    lines = [f"{'layout':<12} {'files':>9}  {'pass':<8} {'seconds':>8} {'peak MiB':>9} {'B/file above smallest':>22}",
             "-" * 75]
    for r in rows:
        low = smallest[r.layout]
        per_file = "" if r.files == low else f"{(r.peak_kib - floor[r.layout, r.kind]) * 1024 / (r.files - low):.0f}"
        lines.append(f"{r.layout:<12} {r.files:>9}  {r.kind:<8} {r.seconds:>8.2f} {r.peak_kib / 1024:>9.1f} "
                     f"{per_file:>22}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="10,10000", help="comma-separated file counts (default 10,10000)")
    parser.add_argument("--size", type=int, default=64, help="bytes per file (default 64)")
    parser.add_argument("--workdir", default=None, help="where to build the datasets (default: a temporary folder)")
    parser.add_argument("--layouts", default="placeholder",
                        help="comma-separated: placeholder, index (default placeholder)")
    parser.add_argument("--json", default=None, help="also write one JSON object per row to this file")
    args = parser.parse_args(argv)
    counts = sorted({int(c) for c in args.counts.split(",") if c})
    layouts = [layout for layout in LAYOUTS if layout in args.layouts.split(",")]
    if not layouts:
        parser.error(f"--layouts: choose among {', '.join(LAYOUTS)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="escale-memory-")
    rows: list[Row] = []
    for layout in layouts:
        for count in counts:
            rows.extend(measure(count, args.size, workdir, layout))
    print(table(rows), flush=True)
    if args.json:
        write_rows(args.json, rows)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
