"""The scanner reports what it could not see instead of leaving it out.

A path missing from ``files`` may become a deletion only when the scan
confirms it is absent. Unreadable files and folders, symbolic links, and names
escale cannot carry are reported (``unconfirmed``, ``unlisted``,
``warnings``), warned about once, and never mistaken for deletions.
Permission tests run the scan in a process without root's file privileges.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from escale.config.settings import FileFilter
from escale.sync.scanner import ScanResult, scan
from escale.sync.state import StateDB
from tests.unprivileged import permissions_apply, unprivileged_command

ALL = FileFilter()


def _scan(root: Path, checksum: str | None = "sha256", db: StateDB | None = None) -> ScanResult:
    return scan(str(root), ALL, checksum=checksum, db=db)


def _write(root: Path, rel: str, data: bytes = b"x") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_files_and_escale_names(tmp_path: Path) -> None:
    _write(tmp_path, "a.txt", b"abc")
    _write(tmp_path, "d/e/b.bin", b"12345")
    _write(tmp_path, ".escale/client/state.db")
    _write(tmp_path, "d/.escale-part-0123", b"half a download")
    _write(tmp_path, ".escale-part-4567")
    (tmp_path / "empty").mkdir()
    result = _scan(tmp_path)
    assert sorted(result.files) == ["a.txt", "d/e/b.bin"]
    assert result.files["a.txt"].size == 3 and result.files["a.txt"].checksum is not None
    assert sorted(result.leftovers) == [".escale-part-4567", "d/.escale-part-0123"]
    assert not result.unconfirmed and not result.unlisted and not result.warnings
    assert result.folders == {"d", "d/e", "empty"}


def test_folders_include_those_the_filters_leave_out(tmp_path: Path) -> None:
    """A folder whose files are not synchronised still takes its name here."""
    _write(tmp_path, "build/out.o")
    _write(tmp_path, "src/main.c")
    skip_build = FileFilter(exclude_dirs=(re.compile("build"),))
    result = scan(str(tmp_path), skip_build, checksum=None, db=None)
    assert sorted(result.files) == ["src/main.c"] and result.folders == {"build", "src"}


def test_missing_root(tmp_path: Path) -> None:
    assert _scan(tmp_path / "nope").root_missing


def test_root_may_be_a_symlink(tmp_path: Path) -> None:
    _write(tmp_path, "real/f")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert list(_scan(tmp_path / "link").files) == ["f"]


def test_symlinks_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "root"
    _write(tmp_path, "outside/secret")
    _write(root, "d/kept")
    (root / "d/to-folder").symlink_to(tmp_path / "outside")
    (root / "to-file").symlink_to(tmp_path / "outside/secret")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    with caplog.at_level(logging.DEBUG, logger="escale.sync.scanner"):
        result = _scan(root)
    assert list(result.files) == ["d/kept"]
    assert result.unlisted == {"d/to-folder", "to-file", "dangling"}
    assert result.is_unconfirmed("d/to-folder/secret") and result.is_unconfirmed("to-file")
    assert not result.is_unconfirmed("d/kept") and not result.is_unconfirmed("d/to-folder-not")
    assert len(result.warnings) == 3 and all("symbolic link" in w for w in result.warnings)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 3


def test_is_unconfirmed() -> None:
    result = ScanResult(unconfirmed={"a/f"}, unlisted={"b", "c/d"})
    assert result.is_unconfirmed("a/f") and not result.is_unconfirmed("a/g")
    assert result.is_unconfirmed("b") and result.is_unconfirmed("b/x/y")
    assert result.is_unconfirmed("c/d/e") and not result.is_unconfirmed("c/e") and not result.is_unconfirmed("bb")


def test_names_escale_cannot_carry(tmp_path: Path) -> None:
    """A non-UTF-8 name (the original crash was in the checksum cache), a
    control character or a backslash: skipped with a warning, the rest scanned."""
    root = str(tmp_path).encode()
    for raw in (b"bad\xff.txt", b"bad\xfedir/inner.txt", b"tab\there", b"back\\slash", b"ok.txt"):
        path = os.path.join(root, raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(b"data")
    db = StateDB(str(tmp_path / ".escale" / "state.db"))
    try:
        result = _scan(tmp_path, db=db)
        assert sorted(result.files) == ["ok.txt"]
        assert len(result.warnings) == 4
        assert any("bad\\xff.txt" in w and "UTF-8" in w for w in result.warnings)
        assert any("control character" in w for w in result.warnings)
        assert any("backslash" in w for w in result.warnings)
        assert not result.unconfirmed and not result.unlisted
    finally:
        db.close()


def test_warned_once_per_episode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "link").symlink_to(tmp_path)

    def levels() -> list[int]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="escale.sync.scanner"):
            result = _scan(tmp_path)
        return [r.levelno for r in caplog.records if "link" in r.getMessage()] if result.warnings else []

    assert levels() == [logging.WARNING]
    assert levels() == [logging.DEBUG]  # the next pass of a daemon: not repeated
    (tmp_path / "link").unlink()
    assert levels() == []
    (tmp_path / "link").symlink_to(tmp_path)
    assert levels() == [logging.WARNING]  # a new episode


def test_special_files_are_unconfirmed_silently(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    result = _scan(tmp_path)
    assert result.is_unconfirmed("pipe") and not result.files and not result.warnings


def test_checksum_cache_and_no_checksum(tmp_path: Path) -> None:
    _write(tmp_path, "root/f", b"abc")
    db = StateDB(str(tmp_path / "state.db"))
    try:
        first = _scan(tmp_path / "root", db=db)
        second = _scan(tmp_path / "root", db=db)
        assert first.files == second.files and first.hashed_bytes == 3 and second.hashed_bytes == 0
    finally:
        db.close()
    plain = _scan(tmp_path / "root", checksum=None)
    assert plain.files["f"].checksum is None and plain.hashed_bytes == 0


def test_big_files_carry_their_identity_once_settled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A big file's scan records the inode and ctime its checksum was taken
    with (its push then reads it once); a small file, or one whose ctime is
    too recent for a later write to be sure to change it, records none."""
    from escale.sync import scanner

    big = b"b" * scanner.IDENTITY_MIN_SIZE
    _write(tmp_path, "root/big", big)
    _write(tmp_path, "root/small", b"s")
    fresh = _scan(tmp_path / "root").files["big"]
    assert (fresh.inode, fresh.ctime_ns) == (0, 0)  # written just now
    monkeypatch.setattr(scanner, "IDENTITY_MIN_AGE_NS", 0)  # as if written long ago
    files = _scan(tmp_path / "root").files
    st = os.stat(tmp_path / "root" / "big")
    assert (files["big"].inode, files["big"].ctime_ns) == (st.st_ino, st.st_ctime_ns)
    assert files["big"].checksum == fresh.checksum
    assert (files["small"].inode, files["small"].ctime_ns) == (0, 0)
    assert _scan(tmp_path / "root", checksum=None).files["big"].inode == 0  # no checksum to trust


# --------------------------------------------------------------------------- without root's privileges

_PROBE = """
import json, sys
from escale.config.settings import FileFilter
from escale.errors import LocalError
from escale.sync.scanner import scan
from escale.sync.state import StateDB
db = StateDB(sys.argv[2]) if len(sys.argv) > 2 else None
try:
    r = scan(sys.argv[1], FileFilter(), checksum="sha256", db=db)
except LocalError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"files": sorted(r.files), "unconfirmed": sorted(r.unconfirmed),
                      "unlisted": sorted(r.unlisted), "warnings": r.warnings}))
"""


def _unprivileged_scan(root: Path, db: Path | None = None) -> dict[str, Any]:
    if not permissions_apply():
        pytest.fail("setpriv cannot drop the capabilities that bypass file permissions here")
    argv = [sys.executable, "-c", _PROBE, str(root), *([str(db)] if db else [])]
    out = subprocess.run(unprivileged_command(argv), capture_output=True, text=True, check=True, cwd=os.getcwd())
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_unreadable_file_and_folder_are_unconfirmed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _write(root, "readable.txt")
    _write(root, "secret.txt")
    for i in range(3):
        _write(root, f"locked/f{i}")
    _write(root, "nolist/f")
    _write(root, "noenter/f")
    _write(root, "nostat/sub/f")
    db = tmp_path / "state.db"
    _unprivileged_scan(root, db)  # fills the checksum cache
    os.chmod(root / "secret.txt", 0)
    os.chmod(root / "locked", 0)
    os.chmod(root / "nolist", 0o300)  # can enter, cannot list
    os.chmod(root / "noenter", 0o600)  # can list, cannot enter
    os.chmod(root / "nostat", 0o400)  # can list, cannot stat what is inside
    try:
        result = _unprivileged_scan(root, db)
    finally:
        for name in ("locked", "nolist", "noenter", "nostat"):
            os.chmod(root / name, 0o755)
    assert result["files"] == ["readable.txt"]
    # "nostat/sub" could not even be stat'ed: a folder, so nothing below it is known
    assert result["unlisted"] == ["locked", "nolist", "nostat/sub"]
    # chmod changed the ctime: the cached checksum is not trusted, the file is re-read and fails
    assert result["unconfirmed"] == ["noenter/f", "secret.txt"]
    assert len(result["warnings"]) == 5


def test_unreadable_root_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path, "root/f")
    os.chmod(tmp_path / "root", 0)
    try:
        result = _unprivileged_scan(tmp_path / "root")
    finally:
        os.chmod(tmp_path / "root", 0o755)
    assert "cannot read local folder" in result["error"]
