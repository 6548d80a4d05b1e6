"""The sftp backend through the OpenSSH client (``ssh client``): the same
refusals as paramiko's path, word for word, and an ``ssh`` child that never
outlives its relay. (The conformance suite runs both transports on sshd:
targets ``sftp``, through ``ssh``, and ``sftp_paramiko``.)"""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest

from escale.config.keys import key_named
from escale.config.values import ValueProblem
from escale.errors import HostKeyError, RelayConnectionError, RelayError, RelayPermissionDenied
from escale.relay import make_relay
from escale.relay.sftp import SftpRelay
from tests.servers.sshd import SshServer, descendants, keygen, known_hosts_line

pytestmark = pytest.mark.timeout(120)


def ssh_children() -> list[int]:
    """Our processes running ``ssh`` (zombies included: a child not reaped is listed)."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as handle:
                if handle.read().strip() == "ssh":
                    found.append(pid)
        except OSError:
            continue
    return found


def opened(server: SshServer, folder: str, **changes: object) -> SftpRelay:
    relay = make_relay(server.spec_for(folder, **changes))
    assert isinstance(relay, SftpRelay)
    relay.open()
    return relay


def refusal(server: SshServer, client: str, known_hosts: str) -> str:
    """The one-line error opening a relay through ``client`` with ``known_hosts``."""
    relay = make_relay(server.spec_for("refused", known_hosts=known_hosts, ssh_client=client))
    with pytest.raises(HostKeyError) as caught:
        relay.open()
    assert not caught.value.transient
    return str(caught.value)


def test_default_is_openssh_with_a_key_and_paramiko_with_a_password(sshd_server: SshServer) -> None:
    relay = opened(sshd_server, "which")
    try:
        assert relay.transport_kind == "openssh"
        assert relay.server_version.startswith("SSH-2.0-OpenSSH")
        assert relay.capabilities.exclusive_create  # what OpenSSH's server gives, as through paramiko
    finally:
        relay.close()
    with_password = opened(sshd_server, "which", password="unused: the key is accepted first")
    try:
        assert with_password.transport_kind == "paramiko"  # key, then password: only paramiko tries both
        assert not ssh_children()
    finally:
        with_password.close()


def test_unknown_and_changed_host_keys_refused_as_paramiko_does(sshd_server: SshServer, tmp_path: Path) -> None:
    empty = str(tmp_path / "empty_known_hosts")
    Path(empty).write_text("")
    changed = str(tmp_path / "changed_known_hosts")
    Path(changed).write_text(known_hosts_line(sshd_server.port, keygen(str(tmp_path / "other_host_key"))))
    for known, expected in ((empty, "unknown host key for"), (changed, "CHANGED")):
        through_ssh = refusal(sshd_server, "openssh", known)
        assert expected in through_ssh and "\n" not in through_ssh
        assert through_ssh == refusal(sshd_server, "paramiko", known)
    assert not os.path.exists(os.path.join(sshd_server.root, "refused")), "nothing may be written"
    with open(changed) as handle:
        assert handle.read().count("\n") == 1, "ssh must not write to escale's known_hosts file"
    assert not ssh_children()


def test_wrong_key_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    key = str(tmp_path / "stranger")
    keygen(key)
    relay = make_relay(sshd_server.spec_for("stranger", ssh_key=key, ssh_client="openssh"))
    with pytest.raises(RelayPermissionDenied, match=f"authentication failed for user .*tried key {key}"):
        relay.open()
    assert not ssh_children()


def test_auto_falls_back_to_paramiko_when_this_ssh_cannot_log_in(sshd_server: SshServer, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    # an ssh that refuses one of escale's options, as an older one would
    fake = tmp_path / "bin" / "ssh"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'command-line line 0: Bad configuration option: identityagent' >&2\nexit 255\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    relay = opened(sshd_server, "fallback")
    try:
        assert relay.transport_kind == "paramiko"
        relay.put_bytes("one", b"1")
        assert relay.get_bytes("one") == b"1"
    finally:
        relay.close()
    assert "using paramiko instead" in caplog.text and "Bad configuration option" in caplog.text
    # asked for by name, it is not replaced: the user hears why it failed
    explicit = make_relay(sshd_server.spec_for("fallback", ssh_client="openssh"))
    with pytest.raises(RelayConnectionError, match="Bad configuration option"):
        explicit.open()


def test_openssh_without_a_key_is_refused(sshd_server: SshServer) -> None:
    relay = make_relay(sshd_server.spec_for("nokey", ssh_key=None, password="x", ssh_client="openssh"))
    with pytest.raises(RelayError, match="needs 'ssh key'"):
        relay.open()


def test_no_ssh_left_after_close(sshd_server: SshServer) -> None:
    relays = [opened(sshd_server, "closing") for _ in range(3)]
    relays[0].create_root()
    assert len(ssh_children()) == 3
    for relay in relays:
        relay.put_bytes(f"o{id(relay)}", b"x")
        relay.close()
    assert not ssh_children(), "every ssh child is ended and reaped by close()"


class KillingSource(io.RawIOBase):
    """``size`` bytes to upload; ``kill`` runs once the first MiB has been read."""

    def __init__(self, size: int, kill: object) -> None:
        self.left, self.kill, self.served = size, kill, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self.served >= 1 << 20 and self.kill is not None:
            kill, self.kill = self.kill, None
            kill()  # type: ignore[operator]
        count = min(len(buffer), self.left)
        buffer[:count] = b"\0" * count
        self.left -= count
        self.served += count
        return count


def test_ssh_killed_mid_transfer_is_transient_and_reconnects(sshd_server: SshServer) -> None:
    relay = opened(sshd_server, "killed")
    relay.create_root()
    try:
        [pid] = ssh_children()
        source = KillingSource(32 << 20, lambda: os.kill(pid, signal.SIGKILL))
        with pytest.raises(RelayConnectionError) as caught:
            relay.put("big", io.BufferedReader(source))
        assert caught.value.transient
        assert not ssh_children(), "the dead ssh is reaped"
        relay.open()  # reconnects
        relay.put_bytes("after", b"again")
        assert relay.get_bytes("after") == b"again"
        assert [e.name for e in relay.list()] == ["after"], "no partial object was left in place"
    finally:
        relay.close()
    assert not ssh_children()


def test_ssh_client_key(tmp_path: Path) -> None:
    key = key_named("SSH  Client")
    assert key.default == "auto"
    assert key.read("OpenSSH") == "openssh"
    assert key.read(" paramiko ") == "paramiko"
    with pytest.raises(ValueProblem, match="auto, openssh, paramiko"):
        key.read("putty")
