"""100,000 files: two clients converge (``pytest --scale``; not in the default run).

Real ``escale --once`` processes through a local-folder relay, encrypted, in
the index layout: A sends 100,000 small files (100 per folder) and B receives
them all; then both change the tree (A edits, adds and deletes a few hundred
files across the tree, B edits others and adds its own), and after passes of
both the two trees are identical, with every edit of either side present and
every deleted file gone on both. A last pass of each has nothing to do and
takes the quiet path. Minutes on a laptop; the figures of such runs are in
doc/performance.rst (``bench/nochange_bench.py``, ``bench/memory_bench.py``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from escale.crypto import generate_key_file
from tests.e2e.cluster import Cluster, tree
from tests.servers.target import RelayTarget

pytestmark = [pytest.mark.scale, pytest.mark.timeout(3600)]

FILES = 100_000
PER_FOLDER = 100


def _write(root: str, rel: str, data: bytes) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def _name(i: int) -> str:
    return f"d{i // PER_FOLDER:04d}/f{i:06d}.txt"


def test_two_clients_converge_on_100000_files(tmp_path: Path, target_file: RelayTarget) -> None:
    cluster = Cluster(str(tmp_path), target_file, target_file.new_folder())
    key = str(tmp_path / "key")
    generate_key_file(key)
    cluster.common.update({"index": "yes", "encryption": "yes", "key": key, "lock timeout": "600"})
    a, b = cluster.add("a"), cluster.add("b")
    for i in range(FILES):
        _write(a, _name(i), f"file {i}\n".encode())
    cluster.run("a", timeout=1800)
    cluster.run("b", timeout=1800)
    assert len(tree(b)) == FILES
    rng = random.Random(100_000)
    picked = rng.sample(range(FILES), 900)
    edited_by_a, deleted_by_a, edited_by_b = picked[:300], picked[300:600], picked[600:]
    for i in edited_by_a:
        _write(a, _name(i), f"edited by a {i}\n".encode())
    for i in deleted_by_a:
        os.unlink(os.path.join(a, _name(i)))
    for i in range(300):
        _write(a, f"new-a/{i // PER_FOLDER}/n{i}.txt", f"new from a {i}\n".encode())
        _write(b, f"new-b/{i // PER_FOLDER}/n{i}.txt", f"new from b {i}\n".encode())
    for i in edited_by_b:
        _write(b, _name(i), f"edited by b {i}\n".encode())
    for _ in range(3):
        for name in ("a", "b"):
            cluster.run(name, timeout=1800)
    trees = tree(a), tree(b)
    assert trees[0] == trees[1]
    expected = FILES - len(deleted_by_a) + 600
    assert len(trees[0]) == expected, len(trees[0])
    with open(os.path.join(b, _name(edited_by_a[0])), "rb") as handle:
        assert handle.read() == f"edited by a {edited_by_a[0]}\n".encode()
    with open(os.path.join(a, _name(edited_by_b[0])), "rb") as handle:
        assert handle.read() == f"edited by b {edited_by_b[0]}\n".encode()
    assert not os.path.exists(os.path.join(b, _name(deleted_by_a[0])))
    log = os.path.join(str(tmp_path), "escale.log")
    quiet_before = _count(log, QUIET)
    for _ in range(2):  # a full pass that finds nothing to do, then the quiet path
        for name in ("a", "b"):
            cluster.run(name, timeout=600)
    assert _count(log, QUIET) >= quiet_before + 2


QUIET = "nothing changed since the last pass that had nothing to do"


def _count(path: str, text: str) -> int:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return sum(text in line for line in handle)
