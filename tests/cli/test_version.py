"""The version is defined once (``escale.__version__``) and every command shows it."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

import escale


@pytest.mark.parametrize(("module", "name"), [("escale.cli.main", "escale"), ("escale.cli.ctl", "escalectl")])
def test_version_option_prints_the_one_version(module: str, name: str) -> None:
    result = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, f"{name} {escale.__version__}"), result.stderr


def test_installed_metadata_carries_the_same_version() -> None:
    # setup.py reads escale/__init__.py: the installed package can only disagree if
    # it was installed from another tree (reinstall with `pip install -e .`)
    assert version("escale") == escale.__version__
