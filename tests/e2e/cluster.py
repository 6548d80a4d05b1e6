"""Several escale clients of one relay, driven as real processes.

A :class:`Cluster` writes one configuration file with a section per client
(each with its own local folder), and runs ``escale --once`` for a client as a
separate process, exactly as cron would.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field

from tests.servers.target import RelayTarget


def tree(root: str) -> dict[str, str]:
    """sha256 of every user file below ``root`` (escale's own files excluded)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".escale"]
        for name in files:
            if name.startswith(".escale-"):
                continue
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


def write(root: str, rel: str, data: bytes | str) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


@dataclass
class Cluster:
    """Clients of one relay repository; ``folder`` is the repository folder."""

    base: str
    target: RelayTarget
    folder: str
    clients: dict[str, dict[str, str]] = field(default_factory=dict)
    common: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> str:
        return os.path.join(self.base, "escale.conf")

    def add(self, name: str, **keys: str) -> str:
        """Add client ``name`` (extra config keys with ``_`` for spaces); return its folder."""
        local = os.path.join(self.base, name)
        os.makedirs(local, exist_ok=True)
        section = {"local path": local, "refresh": "1", "lock timeout": "8"}
        section.update(self.target.config_for(self.folder))
        section.update(self.common)
        section.update({k.replace("_", " "): v for k, v in keys.items()})
        self.clients[name] = section
        self._write()
        return local

    def _write(self) -> None:
        lines = [f"log file = {os.path.join(self.base, 'escale.log')}", "log level = DEBUG", ""]
        for name, keys in self.clients.items():
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {v}" for k, v in keys.items())
            lines.append("")
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))

    def path(self, name: str) -> str:
        return self.clients[name]["local path"]

    def run(self, name: str, *extra: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``escale --once -c CONF -r NAME`` as a separate process."""
        command = [sys.executable, "-m", "escale.cli.main", "--once", "-c", self.config, "-r", name, *extra]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"escale --once [{name}] exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def ctl(self, *args: str, check: bool = False, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``escalectl -c CONF ARGS`` as a separate process (no terminal on stdin);
        with ``check``, a non-zero exit raises AssertionError with its stderr."""
        command = [sys.executable, "-m", "escale.cli.ctl", "-c", self.config, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"escalectl {args} exited {result.returncode}:\n{result.stderr}")
        return result

    def access(self, path: str, modifiers: str) -> None:
        """``escalectl access PATH MODIFIERS``, which must succeed."""
        self.ctl("access", path, modifiers, check=True)

    def sync_all(self, rounds: int = 2) -> None:
        for _ in range(rounds):
            for name in self.clients:
                self.run(name)
