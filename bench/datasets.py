"""Reproducible datasets: many small files, or one big file, from a fixed seed.

The bytes are pseudo-random (incompressible, like encrypted or compressed
data), drawn from :class:`random.Random` seeded with a constant, so that two
runs on any machine push exactly the same bytes. Modification times are fixed
too. Datasets are generated into a folder at the start of a run, never
committed.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

SMALL_SEED = 4096
BIG_SEED = 104857600
MANY_SEED = 20971520
SMALL_SIZE = 4096
FILES_PER_FOLDER = 100
FIXED_MTIME = 1_700_000_000  # 2023-11-14, any constant will do
MIB = 1024 * 1024

#: Folders that hold a tool's own bookkeeping, never part of a dataset's content.
TOOL_FOLDERS = frozenset({".escale"})


@dataclass(frozen=True)
class Dataset:
    """A generated folder: ``files`` files of ``size`` bytes in all, below ``root``."""

    name: str
    root: str
    files: int
    size: int

    def describe(self) -> str:
        if self.files == 1:
            return f"1 file of {self.size / MIB:g} MiB"
        if self.size // self.files >= MIB:
            return f"{self.files} files of {self.size / self.files / MIB:g} MiB"
        return f"{self.files} files of {self.size // self.files // 1024} KiB"


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))


def make_small(root: str, count: int, *, size: int = SMALL_SIZE, seed: int = SMALL_SEED) -> Dataset:
    """``count`` files of ``size`` random bytes, :data:`FILES_PER_FOLDER` per sub-folder."""
    rng = random.Random(seed)
    for i in range(count):
        _write(os.path.join(root, f"d{i // FILES_PER_FOLDER:03d}", f"f{i:05d}.bin"), rng.randbytes(size))
    return Dataset("small", root, count, count * size)


def make_big(root: str, mib: int, *, seed: int = BIG_SEED) -> Dataset:
    """One file of ``mib`` MiB of random bytes, written 1 MiB at a time."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, "big.bin")
    with open(path, "wb") as handle:
        for _ in range(mib):
            handle.write(rng.randbytes(MIB))
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return Dataset("big", root, 1, mib * MIB)


def make_many(root: str, count: int, mib: int, *, seed: int = MANY_SEED) -> Dataset:
    """``count`` files of ``mib`` MiB of random bytes each (several transfers at
    once matter here: ``transfers``, rclone's ``--transfers``)."""
    rng = random.Random(seed)
    for i in range(count):
        path = os.path.join(root, f"m{i:03d}.bin")
        os.makedirs(root, exist_ok=True)
        with open(path, "wb") as handle:
            for _ in range(mib):
                handle.write(rng.randbytes(MIB))
        os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return Dataset("many", root, count, count * mib * MIB)


def tree_digest(root: str) -> dict[str, str]:
    """sha256 of every file below ``root`` by relative path, tools' own folders left out."""
    digests: dict[str, str] = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in TOOL_FOLDERS]
        for name in names:
            path = os.path.join(folder, name)
            sha = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(MIB), b""):
                    sha.update(block)
            digests[os.path.relpath(path, root).replace(os.sep, "/")] = sha.hexdigest()
    return digests
