"""Big files are hashed on threads of their own while the scan goes on.

A file of at least ``scanner.PARALLEL_HASH_MIN`` whose checksum is not cached
is read and hashed on one of the scan's hashing threads. The result is the
same as hashing it in line: the right checksum, cached for the next scan; a
file that changes while it is read, or cannot be read, is unconfirmed (never
taken for a deletion); and whatever stops the scan, every descriptor it opened
is closed and its threads are gone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from escale.config.settings import FileFilter
from escale.sync import scanner
from escale.sync.scanner import scan
from escale.sync.state import StateDB

BIG = scanner.PARALLEL_HASH_MIN + 4096


def _tree(root: Path, count: int = 7) -> dict[str, bytes]:
    content = {}
    for i in range(count):
        rel = f"d{i % 3}/big{i}.bin"
        content[rel] = os.urandom(BIG + i)
        content[f"d{i % 3}/small{i}.txt"] = os.urandom(100 + i)
    for rel, data in content.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return content


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_big_files_hashed_on_threads_match_their_content_and_are_cached(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "local"
    content = _tree(root)
    real = scanner._hash_and_stat
    where: dict[str, str] = {}

    def recorded(fd: int, algorithm: str) -> tuple[str, os.stat_result]:
        where[os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))] = threading.current_thread().name
        return real(fd, algorithm)

    monkeypatch.setattr(scanner, "_hash_and_stat", recorded)
    db = StateDB(str(tmp_path / "state.db"))
    try:
        result = scan(str(root), FileFilter(), checksum="sha256", db=db)
        assert all(where[os.path.basename(rel)].startswith("escale-hash") == ("big" in rel) for rel in content)
        assert {rel: f.checksum for rel, f in result.files.items()} == {
            rel: "sha256:" + hashlib.sha256(data).hexdigest() for rel, data in content.items()}
        assert result.hashed_bytes == sum(len(d) for d in content.values())
        assert not result.unconfirmed and not result.warnings
        again = scan(str(root), FileFilter(), checksum="sha256", db=db)
        assert again.hashed_bytes == 0  # every checksum, the threads' too, came from the cache
        assert {rel: f.checksum for rel, f in again.files.items()} == {
            rel: f.checksum for rel, f in result.files.items()}
    finally:
        db.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("escale-hash")]


def test_a_big_file_changed_while_hashed_is_unconfirmed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "local"
    content = _tree(root, count=3)
    real = scanner._hash_and_stat

    def then_appended(fd: int, algorithm: str) -> tuple[str, os.stat_result]:
        digest, _ = real(fd, algorithm)
        if os.readlink(f"/proc/self/fd/{fd}").endswith("big1.bin"):
            with open(root / "d1" / "big1.bin", "ab") as handle:
                handle.write(b"more")
        return digest, os.fstat(fd)

    monkeypatch.setattr(scanner, "_hash_and_stat", then_appended)
    result = scan(str(root), FileFilter(), checksum="sha256", db=None)
    assert result.unconfirmed == {"d1/big1.bin"}
    assert result.is_unconfirmed("d1/big1.bin")
    assert set(result.files) == set(content) - {"d1/big1.bin"}


def test_a_big_file_that_cannot_be_read_is_unconfirmed_with_a_warning(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "local"
    content = _tree(root, count=3)
    real = scanner._hash_and_stat

    def failing(fd: int, algorithm: str) -> tuple[str, os.stat_result]:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("big2.bin"):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, algorithm)

    monkeypatch.setattr(scanner, "_hash_and_stat", failing)
    before = _open_fds()
    result = scan(str(root), FileFilter(), checksum="sha256", db=None)
    assert result.unconfirmed == {"d2/big2.bin"}
    assert any("d2/big2.bin" in line and "Input/output error" in line for line in result.warnings)
    assert set(result.files) == set(content) - {"d2/big2.bin"}
    assert _open_fds() == before


def test_a_scan_stopped_by_an_error_closes_what_it_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "local"
    _tree(root, count=9)
    real = scanner._hash_and_stat

    def broken(fd: int, algorithm: str) -> tuple[str, os.stat_result]:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("big4.bin"):
            raise RuntimeError("a bug in the hashing")
        return real(fd, algorithm)

    monkeypatch.setattr(scanner, "_hash_and_stat", broken)
    before = _open_fds()
    with pytest.raises(RuntimeError, match="a bug in the hashing"):
        scan(str(root), FileFilter(), checksum="sha256", db=None)
    assert _open_fds() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("escale-hash")]
