"""``escale --systemd-unit``: print the systemd user unit shipped with escale.

The unit (``escale/data/escale.service``) is printed with its ``ExecStart``
line completed: the Python interpreter running this command, ``-m
escale.cli.main``, and ``-c FILE`` when a configuration file was named (as an
absolute path), so that the unit runs this installation whatever the user
manager's PATH.
"""

from __future__ import annotations

import os
import shlex
import sys
from importlib import resources

from escale.errors import EX_OK

UNIT = "escale.service"


def unit_text(config: str | None = None) -> str:
    """The unit file's text, its ``ExecStart`` naming this interpreter (and
    ``config``, made absolute, when given)."""
    template = resources.files("escale").joinpath("data", UNIT).read_text(encoding="utf-8")
    command = [sys.executable, "-m", "escale.cli.main"]
    if config:
        command += ["-c", os.path.abspath(os.path.expanduser(config))]
    exec_line = "ExecStart=" + shlex.join(command)
    lines = [exec_line if line.startswith("ExecStart=") else line for line in template.splitlines()]
    return "\n".join(lines) + "\n"


def print_unit(config: str | None = None) -> int:
    """Print :func:`unit_text` on standard output; exit code 0."""
    sys.stdout.write(unit_text(config))
    sys.stdout.flush()
    return EX_OK
