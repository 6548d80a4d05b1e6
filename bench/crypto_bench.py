#!/usr/bin/env python3
"""Throughput and memory of escale's envelope, per algorithm, beside raw AES-GCM.

For each algorithm, a fresh subprocess (so that its peak RSS is its own):

* seals a lazily generated plaintext of ``--size`` MiB into a null sink (the
  cost of the envelope alone), timed;
* seals it again into a temporary file (untimed), then opens that file into a
  null sink, timed;
* reports MB/s (plaintext bytes, 10**6 bytes per MB) and its peak RSS (VmHWM).

The physical limit is raw ``cryptography`` AES-256-GCM (``AESGCM.encrypt`` and
``decrypt`` of 64 KiB buffers in a loop, no I/O): the table shows each
algorithm's throughput as a ratio of it. The pure-Python ``blowfish.blowfish``
runs on ``--pure-size`` MiB only (it does ~1 MB/s).

Usage: ``python bench/crypto_bench.py [--size 256] [--pure-size 4] [--algorithms a,b]``.
Never run by pytest.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MIB = 1024 * 1024
BLOCK = 1024 * 1024


class _Lazy(io.RawIOBase):
    """``total`` bytes of varied pseudo-random data, generated on the fly."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.n = 0
        self.pattern = os.urandom(BLOCK + 256)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = min(self.left, BLOCK if size < 0 else size)
        if size <= 0:
            return b""
        start = self.n % 256
        self.n += 1
        self.left -= size
        return self.pattern[start : start + size]


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


def _peak_rss_kib() -> int:
    """Peak resident memory of this process: VmHWM (Linux), else ru_maxrss.

    (On Linux ru_maxrss survives execve, so it would include the parent's RSS.)
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _child(algorithm: str, size: int, tmpdir: str) -> dict[str, float | int | str]:
    from escale.crypto import create_repository_header, generate_key_file, load_secret

    key_path = os.path.join(tmpdir, f"bench-{os.getpid()}.key")
    generate_key_file(key_path)
    _, env = create_repository_header(algorithm, load_secret(key_path, None))
    os.unlink(key_path)
    start = time.perf_counter()
    sealed = env.seal_stream("bench/object", _Lazy(size), _Null())  # type: ignore[arg-type]
    seal_s = time.perf_counter() - start
    with tempfile.TemporaryFile(dir=tmpdir) as handle:
        env.seal_stream("bench/object", _Lazy(size), handle)  # type: ignore[arg-type]
        handle.seek(0)
        start = time.perf_counter()
        opened = env.open_stream("bench/object", handle, _Null())  # type: ignore[arg-type]
        open_s = time.perf_counter() - start
    assert opened == size
    return {
        "algorithm": algorithm,
        "size": size,
        "sealed": sealed,
        "seal_mbs": size / seal_s / 1e6,
        "open_mbs": size / open_s / 1e6,
        "maxrss_mib": _peak_rss_kib() / 1024,
    }


def _raw_aesgcm(size: int) -> tuple[float, float]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(AESGCM.generate_key(256))
    chunk = os.urandom(64 * 1024)
    count = max(1, size // len(chunk))
    nonce = os.urandom(12)
    start = time.perf_counter()
    for _ in range(count):
        sealed = aead.encrypt(nonce, chunk, None)
    enc = count * len(chunk) / (time.perf_counter() - start) / 1e6
    start = time.perf_counter()
    for _ in range(count):
        aead.decrypt(nonce, sealed, None)
    dec = count * len(chunk) / (time.perf_counter() - start) / 1e6
    return enc, dec


def main(argv: list[str] | None = None) -> int:
    from escale.crypto import ALGORITHMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB per algorithm (default 256)")
    parser.add_argument("--pure-size", type=int, default=4, help="MiB for blowfish.blowfish (default 4)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated names")
    parser.add_argument("--tmpdir", default=None, help="folder for the sealed temporary file")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.add_argument("--child", nargs=2, metavar=("ALGORITHM", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tmpdir = args.tmpdir or tempfile.gettempdir()
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), tmpdir)))
        return 0

    raw_enc, raw_dec = _raw_aesgcm(args.size * MIB)
    rows = []
    for name in args.algorithms.split(","):
        size = (args.pure_size if name == "blowfish.blowfish" else args.size) * MIB
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--tmpdir", tmpdir, "--child", name, str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(done.stdout))
    if args.json:
        print(json.dumps({"raw_aesgcm_encrypt_mbs": raw_enc, "raw_aesgcm_decrypt_mbs": raw_dec}))
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"raw AES-256-GCM (64 KiB buffers): encrypt {raw_enc:.0f} MB/s, decrypt {raw_dec:.0f} MB/s")
    header = (
        f"{'algorithm':<22} {'MiB':>5} {'seal MB/s':>10} {'open MB/s':>10}"
        f" {'seal/raw':>9} {'open/raw':>9} {'peak RSS':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['algorithm']:<22} {row['size'] // MIB:>5} {row['seal_mbs']:>10.1f} {row['open_mbs']:>10.1f}"
            f" {row['seal_mbs'] / raw_enc:>9.3f} {row['open_mbs'] / raw_dec:>9.3f}"
            f" {row['maxrss_mib']:>6.0f} MiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
