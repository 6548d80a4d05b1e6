"""escale's synchronisation benchmark, beside ``rclone copy`` and ``unison``.

For each backend (a real server on 127.0.0.1, see :mod:`bench.servers`) and
each dataset (``--small-count`` files of 4 KiB; one file of ``--big-mib`` MiB;
both generated from a fixed seed, see :mod:`bench.datasets`), in one run:

* escale, encryption on (aes-256-gcm) and off: client A pushes the dataset
  into a fresh repository folder (one ``--once``-like pass in its own process),
  then client B, with an empty folder, pulls it (another process). Relay
  requests are counted by a :class:`~bench.counting.CountingRelay`;
* ``rclone copy`` of the same folder to an rclone remote of the same protocol
  on the same server, into a fresh folder, then back into a fresh local folder,
  with the options an expert would set for that server (``rclone_tuning`` in
  :mod:`bench.servers`; with ``--rclone-crypt``, also rclone crypt with
  rclone's defaults, rows ``rclone crypt (default) ...``);
* ``unison`` between the dataset and a fresh local folder (compared with the
  escale round trip through the ``file`` relay) and, with ``sftp``, over ssh
  to the same OpenSSH server (compared with the escale round trip over sftp).

Every run writes into folders created for it (creating many files right after
deleting many is slow on some disks, so nothing is reused), every copy is
checked against the dataset's sha256 digests (untimed), and every time and peak
memory is that of the measured process alone (:mod:`bench.measure`).
Ratios are escale's time over the peer's: above 1 means escale is slower.

Usage::

    .venv/bin/python -m bench.sync_bench [--backends file,ftp,...] [--small-count 2000]
        [--big-mib 100] [--quick] [--peers rclone,unison] [--json FILE] [--workdir DIR] [--keep]

Never collected by pytest (``tests/test_bench_smoke.py`` runs ``--quick`` on
the file backend with tiny sizes, to keep this script working).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.counting import OPERATIONS
from bench.datasets import Dataset, make_big, make_many, make_small, tree_digest
from bench.measure import BenchError, Measurement, compiled_python_env, run_measured, write_rows
from bench.servers import (
    BACKENDS,
    DEFAULT_BACKENDS,
    DESCRIPTIONS,
    Backend,
    BenchServers,
    started,
    stop_servers_on_sigterm,
    unison_command,
)
from escale.crypto import generate_key_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALGORITHM = "aes-256-gcm"
PEERS = ("rclone", "unison")
#: Repository layouts escale runs with (``--layouts``).
LAYOUTS = ("placeholder", "index")
QUICK_SMALL, QUICK_BIG = 200, 10
#: the datasets: N x 4 KiB, 1 x M MiB, and K x L MiB (``--many-count``, ``--many-mib``)
DATASETS = ("small", "big", "many")
MIB = 1024 * 1024


@dataclass
class Row:
    """One measured run (or a push and a pull added up)."""

    backend: str
    data: str
    run: str
    seconds: float
    files: int
    size: int
    peak_kib: int
    requests: dict[str, int] | None = None
    ratio: float | None = None
    versus: str = ""
    #: escale's time over rclone crypt's with rclone's default options (where they differ from the tuned ones)
    ratio_default: float | None = None

    @property
    def request_total(self) -> int | None:
        return sum(self.requests.values()) if self.requests is not None else None


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Bench:
    """One benchmark run in ``workdir``: datasets, key, servers, and the rows measured."""

    def __init__(self, workdir: str, servers: BenchServers, datasets: Sequence[Dataset], *,
                 transfers: int | None = None) -> None:
        self.workdir = workdir
        #: ``transfers`` for escale and ``--transfers`` for rclone (None: each one's default)
        self.transfers = transfers
        self.servers = servers
        self.datasets = datasets
        self.digests = {d.name: tree_digest(d.root) for d in datasets}
        self.key_file = os.path.join(workdir, "escale.key")
        if not os.path.exists(self.key_file):
            generate_key_file(self.key_file)
        self.rows: list[Row] = []
        self.load = [os.getloadavg()[0]]  # 1-minute load average at the start, then at the end
        self._ids = itertools.count(1)

    # ----------------------------------------------------------- helpers

    def _fresh(self, label: str) -> str:
        """A new, empty run folder (never reused)."""
        path = os.path.join(self.workdir, "runs", f"{next(self._ids):03d}-{label}")
        os.makedirs(path)
        return path

    def _check(self, dataset: Dataset, folder: str, who: str) -> None:
        got = tree_digest(folder)
        if got != self.digests[dataset.name]:
            missing = len(set(self.digests[dataset.name]) - set(got))
            raise BenchError(f"{who}: {folder} differs from the {dataset.name} dataset "
                             f"({len(got)} files, {missing} missing or renamed)")

    def _add(self, row: Row) -> Row:
        self.rows.append(row)
        req = f", {row.request_total} requests" if row.requests is not None else ""
        _say(f"  {row.backend:12s} {row.data:5s} {row.run:26s} {row.seconds:8.2f} s, "
             f"peak {row.peak_kib / 1024:.0f} MiB{req}")
        return row

    # ----------------------------------------------------------- escale

    def _escale_pass(self, run: str, section: str, tag: str) -> tuple[Measurement, dict[str, object]]:
        result = os.path.join(run, f"{tag}.json")
        measured = run_measured(
            [sys.executable, "-m", "bench.escale_pass", os.path.join(run, "escale.conf"), section, result],
            result_path=os.path.join(run, f"{tag}.measure.json"), log_path=os.path.join(run, f"{tag}.log"),
            cwd=ROOT, check=False, env=compiled_python_env(self.workdir),
        )  # fmt: skip
        try:
            with open(result) as handle:
                outcome: dict[str, object] = json.load(handle)
        except (OSError, ValueError):
            outcome = {"ok": False, "errors": ["no result written"]}
        if measured.exit_code != 0 or not outcome.get("ok"):
            raise BenchError(f"escale pass [{section}] in {run} failed: {outcome.get('errors')}")
        return measured, outcome

    def escale(self, backend: Backend, dataset: Dataset, encrypted: bool, index: bool = False) -> None:
        """Client A pushes ``dataset``; client B pulls it into an empty folder
        (``index``: both with ``index = yes``, the index layout). B's first
        pass, untimed and uncounted, creates the repository and registers B
        (as rclone's ``mkdir`` is untimed): the push is that of a sender into
        a repository a receiver already uses, the steady state."""
        label = (ALGORITHM if encrypted else "plain") + (" index" if index else "")
        run = self._fresh(f"escale-{backend.name}-{dataset.name}-{label.replace(' ', '-')}")
        folder = os.path.basename(run)
        relay_lines = "".join(f"{k} = {v}\n" for k, v in backend.target.config_for(folder).items())
        crypto = f"encryption = {ALGORITHM}\nkey = {self.key_file}\n" if encrypted else "encryption = no\n"
        if index:
            crypto += "index = yes\n"
        if self.transfers is not None:
            crypto += f"transfers = {self.transfers}\n"
        text = "".join(
            f"[{section}]\nlocal path = {local}\nstate directory = {os.path.join(run, 'state-' + section)}\n"
            f"{relay_lines}{crypto}\n"
            for section, local in (("push", dataset.root), ("pull", os.path.join(run, "pulled")))
        )
        fd = os.open(os.path.join(run, "escale.conf"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        self._escale_pass(run, "pull", "setup")
        push, pushed = self._escale_pass(run, "push", "push")
        if pushed.get("pushed") != dataset.files:
            raise BenchError(f"escale push in {run} sent {pushed.get('pushed')} of {dataset.files} files")
        pull, pulled = self._escale_pass(run, "pull", "pull")
        self._check(dataset, os.path.join(run, "pulled"), f"escale pull ({backend.name})")
        # the protocol's remaining costs: A's next pass reclaims what B acknowledged; then nothing is left
        # to do, and B's next pass is what a daemon pays every `refresh` seconds
        reclaim, reclaimed = self._escale_pass(run, "push", "reclaim")
        idle, idled = self._escale_pass(run, "pull", "idle")
        up_requests, down_requests = _requests(pushed), _requests(pulled)
        both = {op: up_requests.get(op, 0) + down_requests.get(op, 0) for op in set(up_requests) | set(down_requests)}
        self._add(Row(backend.name, dataset.name, f"escale {label} push", push.seconds, dataset.files,
                      dataset.size, push.maxrss_kib, up_requests))
        self._add(Row(backend.name, dataset.name, f"escale {label} pull", pull.seconds, dataset.files,
                      dataset.size, pull.maxrss_kib, down_requests))
        self._add(Row(backend.name, dataset.name, f"escale {label} push+pull", push.seconds + pull.seconds,
                      dataset.files, dataset.size, max(push.maxrss_kib, pull.maxrss_kib), both))
        self._add(Row(backend.name, dataset.name, f"escale {label} reclaim", reclaim.seconds, dataset.files,
                      dataset.size, reclaim.maxrss_kib, _requests(reclaimed)))
        self._add(Row(backend.name, dataset.name, f"escale {label} idle", idle.seconds, dataset.files,
                      dataset.size, idle.maxrss_kib, _requests(idled)))

    # ----------------------------------------------------------- rclone

    def _rclone(self, run: str, name: str, backend: Backend, *args: str, check: bool = True) -> Measurement:
        argv = [self.servers.binary, *args, "--config", self.servers.conf_path, "--retries", "1",
                *backend.rclone_flags]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env["RCLONE_CACHE_DIR"] = os.path.join(run, "rclone-cache")
        return run_measured(argv, result_path=os.path.join(run, f"{name}.measure.json"),
                            log_path=os.path.join(run, f"{name}.log"), env=env, check=check)

    def rclone(self, backend: Backend, dataset: Dataset, *, crypt: bool = False, tuned: bool = True) -> None:
        """``rclone copy`` up to a fresh folder on the server, then down to a fresh local folder, through
        the backend's tuned remote (``tuned`` false: rclone's defaults, rows ``rclone crypt (default) ...``);
        ``crypt``: through an rclone ``crypt`` remote over it (rows ``rclone crypt ...``)."""
        kind = ("rclone crypt" if crypt else "rclone") + ("" if tuned else " (default)")
        label = kind.replace(" (default)", "-default").replace(" ", "-")
        run = self._fresh(f"{label}-{backend.name}-{dataset.name}")
        if crypt:
            remote = f"{self.servers.crypt_remote(backend, tuned=tuned)}:{os.path.basename(run)}"
        else:
            name = backend.tuned_remote if tuned else backend.remote
            remote = f"{name}:{backend.remote_path(os.path.basename(run))}"
        transfers = ("--transfers", str(self.transfers)) if self.transfers is not None else ()
        self._rclone(run, "mkdir", backend, "mkdir", remote)  # untimed: escale's open() makes its folder too
        up = self._rclone(run, "up", backend, "copy", *transfers, dataset.root, remote)
        down_folder = os.path.join(run, "down")
        down = self._rclone(run, "down", backend, "copy", *transfers, remote, down_folder)
        self._check(dataset, down_folder, f"{kind} copy down ({backend.name})")
        self._add(Row(backend.name, dataset.name, f"{kind} copy up", up.seconds, dataset.files, dataset.size,
                      up.maxrss_kib))
        self._add(Row(backend.name, dataset.name, f"{kind} copy down", down.seconds, dataset.files, dataset.size,
                      down.maxrss_kib))
        self._add(Row(backend.name, dataset.name, f"{kind} copy up+down", up.seconds + down.seconds,
                      dataset.files, dataset.size, max(up.maxrss_kib, down.maxrss_kib)))

    # ----------------------------------------------------------- unison

    def unison(self, dataset: Dataset, backend: Backend | None) -> None:
        """unison from the dataset to a fresh folder: local, or over ssh to ``backend`` (OpenSSH)."""
        where = backend.name if backend else "file"
        run = self._fresh(f"unison-{where}-{dataset.name}")
        argv, target, env = unison_command(dataset.root, run, backend)
        measured = run_measured(argv, result_path=os.path.join(run, "unison.measure.json"),
                                log_path=os.path.join(run, "unison.log"), env=env)
        self._check(dataset, target, f"unison ({where})")
        self._add(Row(where, dataset.name, "unison", measured.seconds, dataset.files, dataset.size,
                      measured.maxrss_kib))

    # ----------------------------------------------------------- ratios

    def find(self, backend: str, data: str, run: str) -> Row | None:
        for row in self.rows:
            if (row.backend, row.data, row.run) == (backend, data, run):
                return row
        return None

    def ratios(self) -> None:
        """escale time / peer time, on each escale row that has a peer to compare with."""
        for row in self.rows:
            if not row.run.startswith("escale"):
                continue
            phase = {"push": "copy up", "pull": "copy down", "push+pull": "copy up+down"}.get(
                row.run.rpartition(" ")[2])
            if phase is None:
                continue
            # an encrypted run is compared with (tuned) rclone crypt when it ran, else with plain rclone
            kinds = ("rclone crypt", "rclone") if "plain" not in row.run else ("rclone",)
            for kind in kinds:
                peer = self.find(row.backend, row.data, f"{kind} {phase}")
                if peer is not None and peer.seconds > 0:
                    row.ratio, row.versus = row.seconds / peer.seconds, kind
                    break
            default = self.find(row.backend, row.data, f"rclone crypt (default) {phase}")
            if default is not None and default.seconds > 0 and "plain" not in row.run:
                row.ratio_default = row.seconds / default.seconds


def _requests(outcome: dict[str, object]) -> dict[str, int]:
    """The request counts of an escale pass's result."""
    counts = outcome.get("requests")
    if not isinstance(counts, dict):
        raise BenchError("escale pass result without request counts")
    return {str(op): int(n) for op, n in counts.items()}


# --------------------------------------------------------------------------- output


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: Sequence[Row]) -> str:
    """The main table: one line per run."""
    head = (f"{'backend':12s} {'data':5s} {'run':36s} {'requests':>8s} {'req/file':>8s} {'seconds':>8s} "
            f"{'files/s':>8s} {'MB/s':>7s} {'peak MiB':>8s} {'x rclone':>8s} {'x default':>9s}")
    lines = [head, "-" * len(head)]
    last = ""
    for row in rows:
        if row.run == "unison":
            continue
        if last and row.backend != last:
            lines.append("")
        last = row.backend
        total = row.request_total
        per_file = total / row.files if total is not None else None
        moved = not row.run.endswith(("reclaim", "idle"))  # these passes move no file content
        files_per_s = row.files / row.seconds if moved or row.run.endswith("reclaim") else None
        mb_per_s = row.size / 1e6 / row.seconds if moved else None
        lines.append(
            f"{row.backend:12s} {row.data:5s} {row.run:36s} {_fmt(total, 'd'):>8s} {_fmt(per_file, '.1f'):>8s} "
            f"{row.seconds:8.2f} {_fmt(files_per_s, '.1f'):>8s} {_fmt(mb_per_s, '.1f'):>7s} "
            f"{row.peak_kib / 1024:8.0f} {_fmt(row.ratio, '.2f'):>8s} {_fmt(row.ratio_default, '.2f'):>9s}"
        )
    return "\n".join(lines)


def format_unison(bench: Bench) -> str:
    """escale's round trip (two clients through a relay) beside unison on the same data."""
    unison_rows = [r for r in bench.rows if r.run == "unison"]
    if not unison_rows:
        return ""
    head = (f"{'relay':6s} {'data':5s} {'unison s':>9s} {'peak MiB':>8s} {'escale aes s':>12s} {'x unison':>8s} "
            f"{'escale plain s':>14s} {'x unison':>8s}")
    lines = [head, "-" * len(head)]
    for u in unison_rows:
        aes = bench.find(u.backend, u.data, f"escale {ALGORITHM} push+pull")
        plain = bench.find(u.backend, u.data, "escale plain push+pull")
        cells = []
        for row in (aes, plain):
            cells.append((_fmt(row.seconds if row else None, ".2f"),
                          _fmt(row.seconds / u.seconds if row else None, ".2f")))
        lines.append(f"{u.backend:6s} {u.data:5s} {u.seconds:9.2f} {u.peak_kib / 1024:8.0f} {cells[0][0]:>12s} "
                     f"{cells[0][1]:>8s} {cells[1][0]:>14s} {cells[1][1]:>8s}")
    return "\n".join(lines)


def format_requests(rows: Sequence[Row]) -> str:
    """escale's relay requests by operation, for the push and the pull of each run."""
    ops = [op for op in OPERATIONS if any(r.requests and r.requests.get(op) for r in rows)]
    head = f"{'backend':12s} {'data':5s} {'run':34s} " + " ".join(f"{op:>7s}" for op in ops)
    lines = [head, "-" * len(head)]
    for row in rows:
        if row.requests is None or row.run.endswith("push+pull"):
            continue
        lines.append(f"{row.backend:12s} {row.data:5s} {row.run:34s} "
                     + " ".join(f"{row.requests.get(op, 0):7d}" for op in ops))
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.sync_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"comma-separated, from: {', '.join(BACKENDS)} (default: the first six)")
    parser.add_argument("--small-count", type=int, help="number of 4 KiB files (default 2000, --quick 200)")
    parser.add_argument("--big-mib", type=int, help="size of the big file in MiB (default 100, --quick 10)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_SMALL} files, {QUICK_BIG} MiB")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, from: rclone, unison")
    parser.add_argument("--no-plain", action="store_true",
                        help="escale with encryption only (and, with --rclone-crypt, no rclone without crypt)")
    parser.add_argument("--layouts", default=",".join(LAYOUTS),
                        help="comma-separated repository layouts to run escale with, from: placeholder, index "
                             "(default: both; the index layout runs with encryption only)")
    parser.add_argument("--datasets", default="small,big",
                        help="comma-separated, from: small, big, many (default: small,big)")
    parser.add_argument("--many-count", type=int, default=20, help="files of the 'many' dataset (default 20)")
    parser.add_argument("--many-mib", type=int, default=20, help="MiB per file of the 'many' dataset (default 20)")
    parser.add_argument("--transfers", type=int,
                        help="escale's 'transfers' and rclone's --transfers (default: each one's own, 4)")
    parser.add_argument("--rclone-crypt", action="store_true",
                        help="also run rclone copy through an rclone crypt remote (encrypted runs compare with it)")
    parser.add_argument("--tuned-only", action="store_true",
                        help="with --rclone-crypt: skip rclone crypt with rclone's default options (slow on FTP "
                             "and WebDAV; their figures do not change with escale)")
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON to FILE")
    parser.add_argument("--workdir", help="where to work (default: a new temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    args.small_count = args.small_count or (QUICK_SMALL if args.quick else 2000)
    args.big_mib = args.big_mib or (QUICK_BIG if args.quick else 100)
    args.backend_list = [b for b in args.backends.split(",") if b]
    unknown = [b for b in args.backend_list if b not in BACKENDS]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)} (known: {', '.join(BACKENDS)})")
    args.layout_list = [layout for layout in args.layouts.split(",") if layout]
    if not args.layout_list or any(layout not in LAYOUTS for layout in args.layout_list):
        parser.error(f"--layouts takes {', '.join(LAYOUTS)}")
    args.dataset_list = [d for d in args.datasets.split(",") if d]
    if not args.dataset_list or any(d not in DATASETS for d in args.dataset_list):
        parser.error(f"--datasets takes {', '.join(DATASETS)}")
    if args.transfers is not None and args.transfers < 1:
        parser.error("--transfers must be at least 1")
    args.peer_list = [p for p in args.peers.split(",") if p]
    if any(p not in PEERS for p in args.peer_list):
        parser.error(f"--peers takes {', '.join(PEERS)}")
    return args


def run(args: argparse.Namespace) -> Bench:
    """Generate the data, start the servers, measure everything; return the bench with its rows."""
    workdir = args.workdir or tempfile.mkdtemp(prefix="escale-bench-")
    os.makedirs(workdir, exist_ok=True)
    started_at = time.monotonic()
    makers = {
        "small": lambda: make_small(os.path.join(workdir, "data", "small"), args.small_count),
        "big": lambda: make_big(os.path.join(workdir, "data", "big"), args.big_mib),
        "many": lambda: make_many(os.path.join(workdir, "data", "many"), args.many_count, args.many_mib),
    }
    datasets = [makers[name]() for name in args.dataset_list]
    _say(f"escale sync bench in {workdir}: {', '.join(d.describe() for d in datasets)}; "
         f"backends {', '.join(args.backend_list)}")
    peers = list(args.peer_list)
    if "unison" in peers and shutil.which("unison") is None:
        _say("unison is not installed (apt-get install unison): unison runs skipped")
        peers.remove("unison")
    with started(os.path.join(workdir, "servers"), args.backend_list) as servers:
        bench = Bench(workdir, servers, datasets, transfers=args.transfers)
        for name in args.backend_list:
            backend = servers.backends[name]
            _say(f"[{name}] {DESCRIPTIONS[name]}")
            for dataset in datasets:
                if "placeholder" in args.layout_list:
                    bench.escale(backend, dataset, encrypted=True)
                    if not args.no_plain:
                        bench.escale(backend, dataset, encrypted=False)
                if "index" in args.layout_list:
                    bench.escale(backend, dataset, encrypted=True, index=True)
                if "rclone" in peers:
                    if not (args.no_plain and args.rclone_crypt):
                        bench.rclone(backend, dataset)
                    if args.rclone_crypt:
                        bench.rclone(backend, dataset, crypt=True)
                        if backend.rclone_tuning and not args.tuned_only:  # rclone as it comes, beside the tuned
                            bench.rclone(backend, dataset, crypt=True, tuned=False)
                if "unison" in peers and name in ("file", "sftp"):
                    bench.unison(dataset, backend if name == "sftp" else None)
    bench.ratios()
    bench.load.append(os.getloadavg()[0])
    _say(f"done in {time.monotonic() - started_at:.0f} s")
    if args.keep:
        _say(f"kept {workdir}")
    elif not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return bench


def _tuning(bench: Bench) -> str:
    """The options of the tuned rclone remotes, per backend ("defaults" when none)."""
    tuned = [f"{b.name} {' '.join(f'{k}={v}' for k, v in b.rclone_tuning.items())}"
             for b in bench.servers.backends.values() if b.rclone_tuning]
    return "; ".join(tuned) or "defaults"


def report(bench: Bench, args: argparse.Namespace) -> str:
    datasets = ", ".join(d.describe() for d in bench.datasets)
    load = ", ".join(f"{x:.1f}" for x in bench.load)
    parts = [
        f"escale sync bench: {datasets}; {os.cpu_count()} cores, load average at start/end {load}",
        "escale = one pass per process; x rclone = escale seconds / rclone seconds (same server, same data; "
        "rclone tuned: " + _tuning(bench) + "); x default = escale seconds / rclone crypt seconds with "
        "rclone's default options",
        "",
        format_table(bench.rows),
        "",
        "relay requests by operation (escale)",
        format_requests(bench.rows),
    ]
    unison = format_unison(bench)
    if unison:
        parts += ["", "escale round trip (client A pushes, client B pulls) vs unison", unison]
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    stop_servers_on_sigterm()
    try:
        bench = run(args)
    except BenchError as exc:
        _say(f"bench failed: {exc}")
        return 1
    sys.stdout.write(report(bench, args))
    if args.json:
        write_rows(args.json, bench.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
