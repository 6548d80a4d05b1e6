"""Helpers for tests that run real escale and escalectl processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from escale.daemon.pidfile import instance_paths, is_escale_process, read_pid_file
from escale.processes import pid_alive

#: Seconds a condition may take before a test gives up (not a timing assertion:
#: only a guard against hanging on a machine under load).
PATIENCE = 90.0


def write_config(folder: str, sections: dict[str, dict[str, str]], globals_: str = "") -> str:
    """An escale.conf in ``folder`` with ``sections`` (refresh 0.2 s unless given)."""
    lines = [globals_] if globals_ else []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        merged = {"refresh": "0.2", **values}
        lines += [f"{key} = {value}" for key, value in merged.items()]
        lines.append("")
    path = os.path.join(folder, "escale.conf")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    return path


def two_clients(folder: str, **extra: dict[str, str]) -> str:
    """alice and bob sharing a file relay in ``folder``; ``extra`` adds sections."""
    sections = {
        "alice": {"local path": "alice", "protocol": "file", "relay directory": "relay"},
        "bob": {"local path": "bob", "protocol": "file", "relay directory": "relay"},
    }
    sections.update(extra)
    return write_config(folder, sections)


def ctl(config: str | None, *args: str, env: dict[str, str] | None = None, stdin: str | None = None,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``escalectl [-c CONFIG] ARGS`` as a real process."""
    command = [sys.executable, "-m", "escale.cli.ctl"]
    if config is not None:
        command += ["-c", config]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=PATIENCE * 2,
                          input=stdin if stdin is not None else "", env=env, cwd=cwd, check=False)


def escale(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``escale ARGS`` as a real process."""
    return subprocess.run([sys.executable, "-m", "escale.cli.main", *args], capture_output=True, text=True,
                          timeout=PATIENCE * 2, stdin=subprocess.DEVNULL, env=env, check=False)


def wait_for(condition: Callable[[], object], what: str, patience: float = PATIENCE) -> None:
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def daemon_pid(config: str) -> int | None:
    return read_pid_file(instance_paths(config).pid_file)


@dataclass
class Daemons:
    """Daemons started by a test, ended by pid at teardown if still alive."""

    configs: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    def start(self, config: str, env: dict[str, str] | None = None) -> int:
        self.configs.append(config)
        result = ctl(config, "start", env=env)
        assert result.returncode == 0, result.stderr
        pid = daemon_pid(config)
        assert pid is not None
        self.pids.add(pid)
        return pid

    def track(self, config: str) -> None:
        self.configs.append(config)
        pid = daemon_pid(config)
        if pid is not None:
            self.pids.add(pid)

    def end_all(self) -> None:
        for config in self.configs:
            pid = daemon_pid(config)
            if pid is not None:
                self.pids.add(pid)
        for pid in self.pids:
            if pid_alive(pid) and is_escale_process(pid):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids:
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    tracker = Daemons()
    try:
        yield tracker
    finally:
        tracker.end_all()


def ctl_here(capsys: pytest.CaptureFixture[str], config: str | None, *args: str) -> tuple[int, str, str]:
    """Run escalectl's ``main`` in this process (for commands that start no daemon)."""
    from escale.cli.ctl import main

    capsys.readouterr()
    code = main([*(["-c", config] if config else []), *args])
    out, err = capsys.readouterr()
    return code, out, err
