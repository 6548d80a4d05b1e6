"""Encrypted synchronisation through a real relay, seen from the outside.

The relay folder is scanned byte by byte: no object name and no object content
may contain a plaintext file name or a plaintext file's content. A wrong key is
refused with one clear line and the local tree is left untouched; a DEBUG log
of the whole sync never contains the key or the passphrase.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escale.crypto import generate_key_file
from tests.e2e.cluster import Cluster, tree, write

pytestmark = pytest.mark.timeout(300)

NAMES = ["quarterly-report.csv", "secret-plans/board minutes.txt", "photos/holiday-2026.jpg"]


def _contents() -> dict[str, bytes]:
    return {name: f"CONFIDENTIAL CONTENT OF {name} ".encode() * 50 for name in NAMES}


def _relay_blobs(root: str) -> list[tuple[str, bytes]]:
    out = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out.append((os.path.relpath(path, root), handle.read()))
    return out


@pytest.mark.parametrize("algorithm", ["yes", "fernet", "blowfish", "chacha20-poly1305"])
def test_relay_sees_no_plaintext(file_cluster: Cluster, tmp_path: Path, algorithm: str) -> None:
    key = str(tmp_path / "shared.key")
    generate_key_file(key)
    file_cluster.common.update({"encryption": algorithm, "key": key})
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    for name, data in _contents().items():
        write(a, name, data)
    file_cluster.run("a")
    relay_root = file_cluster.target.spec_for(file_cluster.folder).directory
    blobs = _relay_blobs(relay_root)  # payloads are on the relay now
    assert any(n.startswith("data/") for n, _ in blobs)
    needles = set()
    for name, data in _contents().items():
        needles |= {name.encode(), os.path.basename(name).encode(), name.split("/")[0].encode(), data[:24]}
    for relay_name, blob in blobs:
        for needle in needles:
            assert needle not in relay_name.encode(), (relay_name, needle)
            assert needle not in blob, (relay_name, needle)
    file_cluster.run("b")
    file_cluster.run("a")
    assert tree(a) == tree(b)
    with open(key, encoding="ascii") as handle:
        key_text = handle.read().strip()
    with open(os.path.join(file_cluster.base, "escale.log"), encoding="utf-8") as handle:
        log = handle.read()
    assert key_text not in log and key_text.partition(":")[2] not in log


def test_wrong_key_is_refused_and_nothing_written(file_cluster: Cluster, tmp_path: Path) -> None:
    good, bad = str(tmp_path / "good.key"), str(tmp_path / "bad.key")
    generate_key_file(good)
    generate_key_file(bad)
    a = file_cluster.add("a", encryption="yes", key=good)
    b = file_cluster.add("b", encryption="yes", key=bad)
    write(a, "doc.txt", "sent with the good key")
    write(b, "mine.txt", "bob's own file")
    file_cluster.run("a")
    before = tree(b)
    relay_root = file_cluster.target.spec_for(file_cluster.folder).directory
    relay_before = _relay_blobs(relay_root)
    result = file_cluster.run("b", check=False)
    assert result.returncode == 65
    lines = [line for line in result.stderr.splitlines() if "warning: running as root" not in line]
    assert len(lines) == 1 and "wrong key or passphrase for relay" in lines[0], result.stderr
    assert tree(b) == before
    assert _relay_blobs(relay_root) == relay_before


def test_passphrase_and_key_never_logged(file_cluster: Cluster, tmp_path: Path) -> None:
    passphrase = "correct horse battery staple 4242"
    secret_file = tmp_path / "pass.txt"
    secret_file.write_text(passphrase + "\n")
    secret_file.chmod(0o600)
    a = file_cluster.add("a", encryption="yes", key=str(secret_file))
    b = file_cluster.add("b", encryption="yes", key=str(secret_file))
    write(a, "x.txt", "payload")
    file_cluster.sync_all(2)
    assert tree(a) == tree(b)
    with open(os.path.join(file_cluster.base, "escale.log"), encoding="utf-8") as handle:
        log = handle.read()
    assert "DEBUG" in log  # the cluster logs at DEBUG
    assert passphrase not in log
    assert "horse battery" not in log


def test_generated_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "k" / "escale.key"
    generate_key_file(str(path))
    assert (path.stat().st_mode & 0o777) == 0o600
    with open(path, encoding="ascii") as handle:
        key_text = handle.read().strip()
    assert len(key_text) > 40
