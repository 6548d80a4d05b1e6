"""OpenSSH ``sshd`` as a real SFTP server for the tests.

The server runs as the current user in the foreground (``sshd -D -e``) with a
generated configuration, host key, user key and authorized_keys file, listening
on 127.0.0.1 on a free port, with password logins for the current user refused
(the password failure path is exercised that way). Repositories are folders
under a temporary root, addressed by absolute path. A known_hosts file with the
``[127.0.0.1]:PORT`` entry is written next to the keys.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from escale.relay import RelaySpec
from tests.servers.process import start_again
from tests.servers.target import RelayTarget, free_port, listening_pids, plant_file

__all__ = ["sshd_server", "target_sftp", "target_sftp_paramiko"]

SSHD = "/usr/sbin/sshd"
HOST = "127.0.0.1"


def keygen(path: str, comment: str = "escale-test") -> str:
    """Write a new ed25519 key pair at ``path`` (no passphrase); return the public line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    with open(path + ".pub") as handle:
        return handle.read().strip()


def known_hosts_line(port: int, public_line: str) -> str:
    """A known_hosts line for a server on 127.0.0.1:``port`` with that public key."""
    key_type, key_b64 = public_line.split()[:2]
    return f"[{HOST}]:{port} {key_type} {key_b64}\n"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children first level first), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        ppid = int(text.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def stop_process_tree(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop ``proc`` (which we started) and the processes it forked, by pid."""
    if proc.poll() is not None:
        return
    for pid in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_for_banner(port: int, proc: subprocess.Popen[bytes], log_path: str, timeout: float = 20.0) -> str:
    """Poll until an SSH server on ``port`` sends its version banner; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path, errors="replace") as handle:
                tail = handle.read()[-2000:]
            raise RuntimeError(f"ssh server on port {port} exited with {proc.returncode}: {tail}")
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                banner = sock.recv(256)
                if banner.startswith(b"SSH-"):
                    return banner.decode(errors="replace").strip()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"ssh server on port {port} did not answer within {timeout}s")


def _sshd_version() -> tuple[int, int]:
    result = subprocess.run([SSHD, "-V"], capture_output=True, text=True, check=False)
    match = re.search(r"OpenSSH_(\d+)\.(\d+)", result.stdout + result.stderr)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


@dataclass
class SftpFolderServer:
    """An SFTP server process on 127.0.0.1 serving folders under ``root`` to
    ``user`` with the key ``user_key``; its host key is in ``known_hosts``.

    Subclasses say how the process starts (``start``, which sets ``proc``) and
    where a repository folder is as the server names it (``remote_directory``).
    """

    workdir: str
    root: str
    port: int = 0
    user: str = field(default_factory=getpass.getuser)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def user_key(self) -> str:
        return os.path.join(self.workdir, "id_ed25519")

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.workdir, "known_hosts")

    def start(self) -> None:
        raise NotImplementedError

    def remote_directory(self, folder: str) -> str:
        """The path of repository ``folder`` on the server."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_tree(self.proc)
            self.proc = None

    def restart(self) -> None:
        """Stop the server and every session it runs, then start it on the same port."""
        self.stop()
        start_again(self.start)

    def spec_for(self, folder: str, **changes: object) -> RelaySpec:
        fields: dict[str, object] = {
            "protocol": "sftp",
            "host": HOST,
            "port": self.port,
            "directory": self.remote_directory(folder),
            "username": self.user,
            "ssh_key": self.user_key,
            "known_hosts": self.known_hosts,
            "timeout": 15.0,
        }
        fields.update(changes)
        return RelaySpec(**fields)  # type: ignore[arg-type]

    def config_for(self, folder: str) -> dict[str, str]:
        return {
            "protocol": "sftp",
            "host address": HOST,
            "port": str(self.port),
            "username": self.user,
            "host directory": self.remote_directory(folder),
            "ssh key": self.user_key,
            "known hosts": self.known_hosts,
            "timeout": "15",
        }

    def plant(self, folder: str, raw_name: str, data: bytes) -> bool:
        return plant_file(self.root, folder, raw_name, data)


@dataclass
class SshServer(SftpFolderServer):
    """One OpenSSH sshd serving folders under ``root``, addressed by absolute path."""

    banner: str = ""

    @property
    def host_key(self) -> str:
        return os.path.join(self.workdir, "ssh_host_ed25519_key")

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, "sshd_config")

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "sshd.log")

    def prepare(self) -> None:
        """Generate keys, authorized_keys and the sshd configuration."""
        os.makedirs(self.root, exist_ok=True)
        host_public = keygen(self.host_key, "escale-test-host")
        user_public = keygen(self.user_key, "escale-test-user")
        with open(os.path.join(self.workdir, "authorized_keys"), "w") as handle:
            handle.write(user_public + "\n")
        self.port = self.port or free_port()
        with open(self.known_hosts, "w") as handle:
            handle.write(known_hosts_line(self.port, host_public))
        lines = [
            f"Port {self.port}",
            f"ListenAddress {HOST}",
            f"HostKey {self.host_key}",
            f"PidFile {os.path.join(self.workdir, 'sshd.pid')}",
            f"AuthorizedKeysFile {os.path.join(self.workdir, 'authorized_keys')}",
            "StrictModes no",
            "UsePAM no",
            "PubkeyAuthentication yes",
            "PasswordAuthentication yes",  # no password can succeed: see PermitRootLogin / no user password
            "PermitRootLogin prohibit-password",
            "PermitEmptyPasswords no",
            "KbdInteractiveAuthentication no",
            "UseDNS no",
            "PrintMotd no",
            "MaxStartups 100",
            "MaxSessions 100",
            "LoginGraceTime 30",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
        ]
        if _sshd_version() >= (9, 8):
            lines.append("PerSourcePenalties no")  # auth-failure tests must not lock us out
        with open(self.config_path, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation folder

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", self.config_path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.banner = wait_for_banner(self.port, self.proc, self.log_path)
        if not listening_pids(self.port, [self.proc.pid]):  # another process's server answered
            self.stop()
            raise RuntimeError(f"port {self.port} is held by another process")

    def remote_directory(self, folder: str) -> str:
        return os.path.join(self.root, folder)

    def target(self, name: str = "sftp", ssh_client: str | None = None) -> RelayTarget:
        """This server as a test target; with ``ssh_client``, every spec and
        configuration of the target sets ``ssh client`` to it (else escale's
        default, ``auto``: the OpenSSH client, these relays using a key)."""
        spec_for, config_for = self.spec_for, self.config_for
        if ssh_client is not None:
            def spec_for(folder: str, **changes: object) -> RelaySpec:
                return self.spec_for(folder, **{"ssh_client": ssh_client, **changes})

            def config_for(folder: str) -> dict[str, str]:
                return {**self.config_for(folder), "ssh client": ssh_client}
        return RelayTarget(
            name,
            spec_for,
            config_for,
            restart=self.restart,
            plant=self.plant,
            notes={"server": self.banner},
        )


def start_sshd(workdir: str) -> SshServer:
    """A running sshd with its files under ``workdir`` (a fresh port each try)."""
    if not os.path.exists(SSHD) or shutil.which("ssh-keygen") is None:
        raise RuntimeError(f"OpenSSH server not installed ({SSHD}, ssh-keygen): apt-get install openssh-server")
    last: Exception | None = None
    for attempt in range(3):
        folder = os.path.join(workdir, f"try{attempt}")
        os.makedirs(folder)
        server = SshServer(workdir=folder, root=os.path.join(folder, "root"))
        server.prepare()
        try:
            server.start()
            return server
        except RuntimeError as exc:  # port taken between choice and bind: try another
            server.stop()
            last = exc
    raise RuntimeError(f"sshd did not start: {last}")


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An OpenSSH sshd on 127.0.0.1 for the whole session."""
    server = start_sshd(str(tmp_path_factory.mktemp("sshd")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def target_sftp(sshd_server: SshServer) -> RelayTarget:
    return sshd_server.target("sftp")


@pytest.fixture(scope="session")
def target_sftp_paramiko(sshd_server: SshServer) -> RelayTarget:
    """The same sshd reached through paramiko's SSH transport (``ssh client = paramiko``)."""
    return sshd_server.target("sftp_paramiko", ssh_client="paramiko")


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word.

    Yields its port; every accepted connection is held open until the end.
    """
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        done.set()
        thread.join(5)
        listener.close()
        for conn in held:
            conn.close()


@contextlib.contextmanager
def sshd_refusing(workdir: str, request: str) -> Iterator[SshServer]:
    """An OpenSSH sshd in ``workdir`` whose sftp-server refuses every
    ``request`` (``-P read``, ``-P write``: sftp-server's request names)
    while it answers the others as usual; stopped on exit."""
    server = SshServer(workdir=workdir, root=os.path.join(workdir, "root"))
    server.prepare()
    subsystem = "Subsystem sftp internal-sftp"
    with open(server.config_path, encoding="utf-8") as handle:
        config = handle.read()
    with open(server.config_path, "w", encoding="utf-8") as handle:
        handle.write(config.replace(subsystem, f"{subsystem} -P {request}"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
