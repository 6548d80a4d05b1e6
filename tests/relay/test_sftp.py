"""The sftp backend against OpenSSH sshd and ``rclone serve sftp``: host keys,
authentication, timeouts, secrets, and the capabilities each server gets."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from escale.config.parser import parse_config
from escale.errors import HostKeyError, RelayConnectionError, RelayError, RelayPermissionDenied
from escale.relay import make_relay
from escale.relay.sftp import SftpRelay
from tests.servers.rclone import RcloneSftpServer
from tests.servers.sshd import SshServer, descendants, keygen, known_hosts_line, silent_server
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(120)


def _write(path: str, text: str) -> str:
    with open(path, "w") as handle:
        handle.write(text)
    return path


def _server_public(server: SshServer) -> str:
    with open(server.host_key + ".pub") as handle:
        return handle.read().strip()


# ----------------------------------------------------------------- host keys


def test_unknown_host_key_refused_with_instructions(sshd_server: SshServer, tmp_path: Path) -> None:
    folder = "unknown-host"
    known = _write(str(tmp_path / "known_hosts"), "")
    relay = make_relay(sshd_server.spec_for(folder, known_hosts=known))
    with pytest.raises(HostKeyError) as caught:
        relay.open()
    message = str(caught.value)
    port = sshd_server.port
    assert "\n" not in message
    assert f"unknown host key for [127.0.0.1]:{port} (ssh-ed25519 SHA256:" in message
    assert f"ssh-keyscan -p {port} 127.0.0.1 >> {known}" in message
    assert not caught.value.transient
    assert not os.path.exists(os.path.join(sshd_server.root, folder)), "nothing may be written"


def test_missing_known_hosts_file_is_an_unknown_host(sshd_server: SshServer, tmp_path: Path) -> None:
    relay = make_relay(sshd_server.spec_for("no-file", known_hosts=str(tmp_path / "absent")))
    with pytest.raises(HostKeyError, match="unknown host key"):
        relay.open()


def test_changed_host_key_refused(sshd_server: SshServer, tmp_path: Path) -> None:
    folder = "changed-host"
    other = keygen(str(tmp_path / "other_host_key"))
    known = _write(str(tmp_path / "known_hosts"), known_hosts_line(sshd_server.port, other))
    relay = make_relay(sshd_server.spec_for(folder, known_hosts=known))
    with pytest.raises(HostKeyError) as caught:
        relay.open()
    message = str(caught.value)
    assert "\n" not in message
    assert f"host key for [127.0.0.1]:{sshd_server.port} CHANGED" in message
    assert "ssh-keygen -R" in message
    assert not os.path.exists(os.path.join(sshd_server.root, folder))


def test_entry_for_port_22_does_not_vouch_for_another_port(sshd_server: SshServer, tmp_path: Path) -> None:
    key_type, key_b64 = _server_public(sshd_server).split()[:2]
    known = _write(str(tmp_path / "known_hosts"), f"127.0.0.1 {key_type} {key_b64}\n")
    with pytest.raises(HostKeyError, match="unknown host key"):
        make_relay(sshd_server.spec_for("port22", known_hosts=known)).open()


def test_known_host_accepted_plain_and_hashed(sshd_server: SshServer, tmp_path: Path) -> None:
    known = str(tmp_path / "known_hosts")
    shutil_copy(sshd_server.known_hosts, known)
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", known], check=True, capture_output=True)
    with open(known) as handle:
        assert handle.read().startswith("|1|"), "the entry should now be hashed"
    for path in (sshd_server.known_hosts, known):
        relay = make_relay(sshd_server.spec_for("accepted", known_hosts=path))
        relay.open()
        relay.put_bytes("x", b"1")
        relay.close()
    assert os.path.exists(os.path.join(sshd_server.root, "accepted", "x"))


def test_default_known_hosts_is_in_home(sshd_server: SshServer) -> None:
    ssh_dir = os.path.join(os.environ["HOME"], ".ssh")  # HOME is per test (conftest)
    os.makedirs(ssh_dir, exist_ok=True)
    relay = make_relay(sshd_server.spec_for("home-known", known_hosts=None))
    with pytest.raises(HostKeyError, match=r"~|\.ssh/known_hosts"):
        relay.open()
    shutil_copy(sshd_server.known_hosts, os.path.join(ssh_dir, "known_hosts"))
    relay.open()
    relay.create_root()
    assert relay.list() == []
    relay.close()


def shutil_copy(src: str, dst: str) -> None:
    with open(src, "rb") as source, open(dst, "wb") as target:
        target.write(source.read())


# ----------------------------------------------------------------- authentication


def test_wrong_key_is_permission_denied(sshd_server: SshServer, tmp_path: Path) -> None:
    stranger = str(tmp_path / "stranger_key")
    keygen(stranger)
    relay = make_relay(sshd_server.spec_for("wrong-key", ssh_key=stranger))
    with pytest.raises(RelayPermissionDenied, match="authentication failed for user") as caught:
        relay.open()
    assert not caught.value.transient
    assert not os.path.exists(os.path.join(sshd_server.root, "wrong-key"))


def test_wrong_password_is_permission_denied_without_the_password(sshd_server: SshServer) -> None:
    secret = "Pa55-never-shown"
    relay = make_relay(sshd_server.spec_for("wrong-pass", ssh_key=None, password=secret))
    with pytest.raises(RelayPermissionDenied) as caught:
        relay.open()
    assert "tried password" in str(caught.value)
    assert secret not in str(caught.value)


def test_no_credentials_is_permission_denied(sshd_server: SshServer) -> None:
    relay = make_relay(sshd_server.spec_for("no-cred", ssh_key=None))
    with pytest.raises(RelayPermissionDenied, match="no ssh key or password"):
        relay.open()


def test_missing_key_file_named_in_error(sshd_server: SshServer, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(RelayPermissionDenied, match=f"ssh key {missing} does not exist"):
        make_relay(sshd_server.spec_for("no-key", ssh_key=missing)).open()


def test_keyfile_is_the_fallback_for_ssh_key(sshd_server: SshServer, tmp_path: Path) -> None:
    """Without ``ssh key``, the ``keyfile`` key logs in; with both, ``ssh key`` wins."""
    relay = make_relay(sshd_server.spec_for("keyfile", ssh_key=None, keyfile=sshd_server.user_key))
    relay.open()
    try:
        relay.put_bytes("k", b"v")
        assert relay.get_bytes("k") == b"v"
    finally:
        relay.close()
    with open(os.path.join(sshd_server.root, "keyfile", "k"), "rb") as handle:
        assert handle.read() == b"v", "the object did not reach the server's folder"
    # the fallback is really the key used: a key the server does not know is refused
    stranger = str(tmp_path / "stranger")
    keygen(stranger)
    with pytest.raises(RelayPermissionDenied, match="authentication failed for user"):
        make_relay(sshd_server.spec_for("keyfile", ssh_key=None, keyfile=stranger)).open()
    # and ``ssh key`` comes first: the stranger as keyfile does not matter then
    both = make_relay(sshd_server.spec_for("keyfile", keyfile=stranger))
    both.open()
    try:
        assert both.get_bytes("k") == b"v"
    finally:
        both.close()


def test_password_login(rclone_sftp_server: RcloneSftpServer) -> None:
    spec = rclone_sftp_server.spec_for("pw-login", ssh_key=None, password=rclone_sftp_server.password)
    relay = make_relay(spec)
    relay.open()
    relay.put_bytes("p", b"by password")
    assert relay.get_bytes("p") == b"by password"
    relay.close()
    wrong = make_relay(rclone_sftp_server.spec_for("pw-login", ssh_key=None, password="wrong"))
    with pytest.raises(RelayPermissionDenied):
        wrong.open()


def test_no_secret_in_logs_or_description(
    rclone_sftp_server: RcloneSftpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = rclone_sftp_server.password
    with open(rclone_sftp_server.user_key) as handle:
        key_lines = [line for line in handle.read().splitlines() if line and not line.startswith("-----")]
    for spec in (
        rclone_sftp_server.spec_for("secrets", ssh_key=None, password=password),
        rclone_sftp_server.spec_for("secrets"),
    ):
        relay = make_relay(spec)
        relay.open()
        relay.put_bytes("s", b"data")
        relay.get_bytes("s")
        assert password not in relay.describe()
        relay.close()
    bad = make_relay(rclone_sftp_server.spec_for("secrets", ssh_key=None, password=password + "x"))
    with pytest.raises(RelayPermissionDenied) as caught:
        bad.open()
    assert password not in str(caught.value)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records, "the backend should log at DEBUG"
    assert password not in text
    assert not any(line in text for line in key_lines)


# ----------------------------------------------------------------- timeouts


def test_silent_server_is_a_transient_error(sshd_server: SshServer) -> None:
    with silent_server() as port:
        relay = make_relay(sshd_server.spec_for("silent", port=port, timeout=1.0))
        with pytest.raises(RelayConnectionError) as caught:
            relay.open()
    assert caught.value.transient


def test_nothing_listening_is_a_transient_error(sshd_server: SshServer) -> None:
    with silent_server() as port:
        pass  # closed again: nothing listens on this port now
    with pytest.raises(RelayConnectionError) as caught:
        make_relay(sshd_server.spec_for("refused", port=port, timeout=1.0)).open()
    assert caught.value.transient


def test_server_that_stops_answering_mid_session_times_out(sshd_server: SshServer) -> None:
    assert sshd_server.proc is not None
    before = set(descendants(sshd_server.proc.pid))
    relay = make_relay(sshd_server.spec_for("stalled", timeout=1.0))
    relay.open()
    relay.put_bytes("x", b"1")
    sessions = [pid for pid in descendants(sshd_server.proc.pid) if pid not in before]
    assert sessions, "the connection should have its own sshd processes"
    for pid in sessions:  # processes of our own sshd
        os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(RelayConnectionError) as caught:
            relay.list()
        assert caught.value.transient
    finally:
        for pid in sessions:
            os.kill(pid, signal.SIGCONT)
        relay.close()


# ----------------------------------------------------------------- capabilities per server
# What each server declares is checked against doc/protocol.rst's table by
# tests/relay/test_capabilities.py; here: the probe gives the same answer
# before the repository folder exists (probed through its nearest parent).


def test_openssh_capabilities_probed_before_the_folder_exists(sshd_server: SshServer) -> None:
    relay = make_relay(sshd_server.spec_for("caps"))
    assert isinstance(relay, SftpRelay)
    relay.open()
    try:
        assert relay.server_version.startswith("SSH-2.0-OpenSSH")
        before = relay.capabilities
        assert before.mtime_precision == 1.0
        relay.create_root()
        relay.open()
        assert relay.capabilities == before
        usage = relay.usage()
        assert usage is not None and usage.total and usage.free is not None
    finally:
        relay.close()


def test_rclone_serve_capabilities_probed_before_the_folder_exists(rclone_sftp_server: RcloneSftpServer) -> None:
    relay = make_relay(rclone_sftp_server.spec_for("caps"))
    assert isinstance(relay, SftpRelay)
    relay.open()
    try:
        assert not relay.server_version.startswith("SSH-2.0-OpenSSH")
        before = relay.capabilities
        relay.create_root()
        relay.open()
        assert relay.capabilities == before
    finally:
        relay.close()


def test_create_root_makes_the_repository_folder_with_parents(sshd_server: SshServer) -> None:
    relay = make_relay(sshd_server.spec_for("deep/er/repo"))
    relay.open()
    assert not os.path.exists(os.path.join(sshd_server.root, "deep")), "open() must not create the folder"
    relay.create_root()
    relay.close()
    assert os.path.isdir(os.path.join(sshd_server.root, "deep", "er", "repo"))


def test_repository_path_that_is_a_file_is_refused(sshd_server: SshServer) -> None:
    sshd_server.plant("", "plain-file", b"x")
    with pytest.raises(RelayError, match="not a folder"):
        make_relay(sshd_server.spec_for("plain-file")).open()


@pytest.mark.parametrize("name", ["sftp", "sftp_rclone"])
def test_config_lines_describe_the_same_relay(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What a target hands to a separate escale process is the relay the tests use."""
    target: RelayTarget = request.getfixturevalue(f"target_{name}")
    lines = "\n".join(f"{key} = {value}" for key, value in target.config_for("repo").items())
    config = parse_config(f"[c]\nlocal path = {tmp_path}\n{lines}\n", str(tmp_path / "escale.conf"))
    assert config.clients[0].relay == target.spec_for("repo")
