"""Small helpers for configuration tests: write a file, parse it, expect an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from escale.config import Config, load_config
from escale.config.keys import lookup
from escale.config.settings import ClientSettings
from escale.errors import ConfigError
from tests.unprivileged import unprivileged_command

#: A minimal valid section on a file relay, relative to the configuration folder.
BASE: dict[str, str] = {"local path": "local", "protocol": "file", "relay directory": "relay"}


def write_conf(folder: Path, text: str, name: str = "escale.conf") -> str:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _canonical(name: str) -> str:
    key = lookup(name)
    return name if key is None else key.name


def section_text(lines: dict[str, str], *, base: dict[str, str] | None = None, name: str = "client",
                 drop: tuple[str, ...] = ()) -> str:
    """``[name]`` with the base lines (minus those naming the same keys as ``lines`` or ``drop``)."""
    replaced = {_canonical(k) for k in (*lines, *drop)}
    merged = {k: v for k, v in (BASE if base is None else base).items() if _canonical(k) not in replaced}
    merged.update(lines)
    body = "\n".join(f"{key} = {value}" for key, value in merged.items())
    return f"[{name}]\n{body}\n"


def load_text(folder: Path, text: str) -> Config:
    return load_config(write_conf(folder, text))


def client(folder: Path, lines: dict[str, str] | None = None, *, globals_: str = "",
           drop: tuple[str, ...] = ()) -> ClientSettings:
    """The one client of a file made of ``globals_`` then a base section with ``lines``."""
    config = load_text(folder, globals_ + "\n" + section_text(lines or {}, drop=drop))
    assert len(config.clients) == 1
    return config.clients[0]


def expect_error(folder: Path, text: str, *, section: str | None, key: str | None,
                 contains: str = "") -> ConfigError:
    """Loading ``text`` fails with a ConfigError naming the file, ``section`` and ``key``."""
    path = write_conf(folder, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    message = str(error)
    assert "\n" not in message
    assert error.exit_code == 78
    assert message.startswith(os.path.abspath(path)), message
    assert error.path == os.path.abspath(path)
    assert error.section == section, message
    if section is not None:
        assert f"[{section}]" in message
    assert error.key == key, message
    if key is not None:
        assert f"'{key}'" in message
    assert contains in message, message
    return error


#: Seconds a started escale may take before the test gives up on it (a guard
#: against a process that runs on instead of refusing; not a timing assertion).
PATIENCE = 90.0


def run_escale(argv: list[str], *, program: str = "escale.cli.main", unprivileged: bool = False,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``escale ARGV`` (or ``escalectl`` with ``program="escale.cli.ctl"``) as a real process.

    With ``unprivileged`` it runs without root's file privileges
    (:func:`tests.unprivileged.unprivileged_command`), so permissions apply even in CI.
    """
    command = [sys.executable, "-m", program, *argv]
    if unprivileged:
        command = unprivileged_command(command)
    return subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, check=False)


def one_config_line(result: subprocess.CompletedProcess[str], prog: str = "escale") -> str:
    """The one line a configuration fault prints; checks exit code 78 and no traceback."""
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and "warning: running as root" not in line]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 78, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: "), lines[0]
    return lines[0]
