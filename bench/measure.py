"""Run a command in its own process and measure it: wall time and peak memory.

Every measured run (escale, rclone, unison) goes through :mod:`bench._launch`,
a small stdlib-only interpreter that forks, execs the command and reads its
``ru_maxrss`` with ``wait4``: each figure belongs to that one command (and the
children it waited for), not to the benchmark process. The command's output
goes to a log file; a command that fails raises :class:`BenchError` with the
end of that log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launch.py")


class BenchError(RuntimeError):
    """A measured command failed, or produced a wrong result."""


@dataclass(frozen=True)
class Measurement:
    """One command's wall time (s), peak resident memory (KiB) and exit code."""

    seconds: float
    maxrss_kib: int
    exit_code: int


def write_rows(path: str, rows: Iterable[Any]) -> None:
    """Write ``rows`` (dataclass instances) to ``path``, one JSON object per line."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(asdict(row)) + "\n")


def compiled_python_env(workdir: str) -> dict[str, str]:
    """The environment for escale's passes: Python may cache compiled modules.

    An installed escale runs from compiled modules; a checkout run with
    ``PYTHONDONTWRITEBYTECODE`` set (as some shells and CI images do) compiles
    every module at every start, which a bench would charge to escale. The
    cache goes under ``workdir`` (``PYTHONPYCACHEPREFIX``), never into the
    source tree, so a run leaves nothing behind there.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    return env


def log_tail(path: str, size: int = 1500) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_measured(
    argv: Sequence[str],
    *,
    result_path: str,
    log_path: str,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 3600.0,
    check: bool = True,
) -> Measurement:
    """Run ``argv`` through the launcher; raise BenchError if it exits non-zero (``check``)."""
    with open(log_path, "ab") as log:
        subprocess.run(
            [sys.executable, "-S", LAUNCHER, result_path, *argv],
            env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            timeout=timeout, check=True,
        )  # fmt: skip
    with open(result_path) as handle:
        data = json.load(handle)
    measured = Measurement(float(data["seconds"]), int(data["maxrss_kib"]), int(data["exit_code"]))
    if check and measured.exit_code != 0:
        raise BenchError(f"{os.path.basename(argv[0])} exited with {measured.exit_code}: {log_tail(log_path)}")
    return measured
