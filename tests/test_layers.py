"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, and would catch a breach.

``cli -> daemon/ops -> sync -> protocol/config -> relay/crypto -> errors``: imports
go down only, and ``relay`` imports none of ``protocol``, ``sync``, ``config`` or
``crypto``. import-linter reads the sources (nothing is imported), so every
import counts, including those inside functions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"


def lint_imports(source_root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts on the ``escale`` package found in ``source_root``."""
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--config", str(CONFIG), "--no-cache"],
        cwd=source_root, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_the_tree_keeps_its_layers() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_and_a_relay_reaching_crypto_are_caught(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "escale", tmp_path / "escale", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "escale" / "sync" / "planner.py", "a", encoding="utf-8") as handle:
        handle.write("\n\ndef _upward() -> None:\n    from escale.daemon import runner  # noqa: F401\n")
    with open(tmp_path / "escale" / "relay" / "memory.py", "a", encoding="utf-8") as handle:
        handle.write("\n\nfrom escale.crypto import keys  # noqa: E402, F401\n")
    result = lint_imports(tmp_path)
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert "Contracts: 0 kept, 2 broken." in report
    assert "escale.sync.planner -> escale.daemon.runner" in report
    assert "escale.relay.memory -> escale.crypto.keys" in report
