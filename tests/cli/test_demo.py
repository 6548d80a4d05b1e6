"""``escale --demo`` leaves nothing behind unless asked to keep its folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def _demo(tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``escale --demo EXTRA`` with its temporary folders made under ``tmp``."""
    tmp.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "escale.cli.main", "--demo", *extra], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp)})


def test_the_demo_removes_its_folder_and_says_where_it_was(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    result = _demo(tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "identical (sha256 of every file): yes" in result.stdout
    where = re.search(r"The demo folder (\S+) was removed", result.stdout)
    assert where is not None, result.stdout
    assert os.path.dirname(where[1]) == str(tmp)
    assert list(tmp.iterdir()) == []


def test_keep_leaves_the_folder(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    result = _demo(tmp, "--keep")
    assert result.returncode == 0, result.stdout + result.stderr
    where = re.search(r"The demo folder (\S+) is kept", result.stdout)
    assert where is not None, result.stdout
    kept = Path(where[1])
    assert kept.parent == tmp and (kept / "escale.conf").is_file()
    assert (kept / "alice" / "reports" / "2026-q3.csv").exists()


def test_a_folder_given_by_the_user_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    result = _demo(tmp_path / "tmp", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (target / "escale.conf").is_file() and "removed" not in result.stdout
