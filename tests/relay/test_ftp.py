"""FTP/FTPS backend specifics, on real pyftpdlib and rclone servers.

What the conformance suite cannot say for every backend: certificate checks,
authentication failures, a silent server, secrets kept out of logs, the
LIST/SIZE/MDTM fallback, crash recovery of the exclusive-create guard, and the
capabilities probed per server.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator

import pytest

from escale.errors import (
    CertificateError,
    ConfigError,
    RelayExists,
    RelayNotFound,
    RelayPermissionDenied,
    RelayTimeout,
)
from escale.relay import RelaySpec, make_relay
from escale.relay.base import TEMP_PREFIX
from escale.relay.ftp import FtpRelay, parse_list_line
from tests.servers.ftp import FtpServer, ftp_server_process
from tests.servers.target import RelayTarget, unique_folder

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def plain_ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib without MLSD/MLST: the client must fall back to LIST/SIZE/MDTM."""
    server = ftp_server_process(str(tmp_path_factory.mktemp("ftp-nomlst")), mlst=False)
    yield server
    server.process.shutdown()


def _spec(target: RelayTarget, **changes: object) -> RelaySpec:
    return dataclasses.replace(target.spec_for(unique_folder()), **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- TLS


def test_ftps_untrusted_certificate_refused(target_ftps: RelayTarget) -> None:
    relay = make_relay(_spec(target_ftps, ca_file=None))
    with pytest.raises(CertificateError) as caught:
        relay.open()
    assert not caught.value.transient
    assert "certificate" in str(caught.value)


def test_ftps_verify_off_accepted_with_one_warning(
    target_ftps: RelayTarget, caplog: pytest.LogCaptureFixture
) -> None:
    relay = make_relay(_spec(target_ftps, ca_file=None, verify_ssl=False))
    with caplog.at_level(logging.WARNING, logger="escale.relay.ftp"):
        relay.open()
        relay.put_bytes("obj", b"data")
        relay.open()  # reconnect: no second warning
        assert relay.get_bytes("obj") == b"data"
    relay.close()
    warnings = [r for r in caplog.records if "NOT verified" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_ftps_data_connections_are_encrypted(target_ftps: RelayTarget) -> None:
    relay = make_relay(target_ftps.spec_for(unique_folder()))
    assert isinstance(relay, FtpRelay)
    relay.open()
    try:
        # pyftpdlib is run with tls_data_required: a clear data channel is refused.
        relay.put_bytes("x", b"secret payload")
        assert relay.get_bytes("x") == b"secret payload"
    finally:
        relay.close()


@pytest.mark.parametrize("version", ["SSLv2", "SSLv3", "TLSv9"])
def test_refused_ssl_versions(target_ftps: RelayTarget, version: str) -> None:
    with pytest.raises(ConfigError, match="ssl version"):
        make_relay(_spec(target_ftps, ssl_version=version))


@pytest.mark.parametrize("version", ["TLS", "SSLv23", "TLSv1.2"])
def test_accepted_ssl_versions(target_ftps: RelayTarget, version: str) -> None:
    relay = make_relay(_spec(target_ftps, ssl_version=version))
    relay.open()
    relay.put_bytes("v", version.encode())
    assert relay.get_bytes("v") == version.encode()
    relay.close()


# --------------------------------------------------------------------------- failures


def test_wrong_password_is_permission_denied(target_ftp: RelayTarget) -> None:
    relay = make_relay(_spec(target_ftp, password="not-the-password"))
    with pytest.raises(RelayPermissionDenied) as caught:
        relay.open()
    assert not caught.value.transient
    assert "not-the-password" not in str(caught.value)


@pytest.mark.parametrize("protocol", ["ftp", "ftps"])
def test_silent_server_times_out(silent_port: int, protocol: str) -> None:
    relay = make_relay(RelaySpec(protocol=protocol, host="127.0.0.1", port=silent_port,
                                 username="u", password="p", timeout=1.0))
    with pytest.raises(RelayTimeout) as caught:
        relay.open()
    assert caught.value.transient


def test_no_password_in_logs_or_description(
    target_ftp: RelayTarget, caplog: pytest.LogCaptureFixture
) -> None:
    spec = target_ftp.spec_for(unique_folder())
    assert spec.password
    relay = make_relay(spec)
    with caplog.at_level(logging.DEBUG):
        relay.open()
        relay.put_bytes("a", b"1")
        relay.list()
        relay.close()
        bad = make_relay(dataclasses.replace(spec, password=spec.password + "-wrong"))
        with pytest.raises(RelayPermissionDenied) as caught:
            bad.open()
    assert spec.password not in caplog.text
    assert spec.password not in relay.describe()
    assert spec.password not in str(caught.value)


# --------------------------------------------------------------------------- fallbacks


def test_list_size_mdtm_fallback(plain_ftp_server: FtpServer) -> None:
    spec = RelaySpec(protocol="ftp", host="127.0.0.1", port=plain_ftp_server.port, directory="repo",
                     username=plain_ftp_server.user, password=plain_ftp_server.password, timeout=10.0)
    relay = make_relay(spec)
    relay.open()
    try:
        relay.put_bytes("with space é.bin", b"12345")
        relay.put_bytes("sub/x", b"x")
        listed = relay.list()
        assert [(e.name, e.size, e.is_dir) for e in listed] == [("sub", 0, True), ("with space é.bin", 5, False)]
        entry = relay.stat("with space é.bin")
        assert entry.size == 5 and entry.mtime is not None
        assert relay.stat("sub").is_dir
        with pytest.raises(RelayNotFound):
            relay.stat("missing")
        with pytest.raises(RelayNotFound):
            relay.list("missing")
        relay.put_bytes("lock", b"1", exclusive=True)
        with pytest.raises(RelayExists):
            relay.put_bytes("lock", b"2", exclusive=True)
        assert relay.get_bytes("lock") == b"1"
    finally:
        relay.close()


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("-rw-r--r--   1 owner group        5 Nov 22 17:09 a b.txt", ("a b.txt", 5, False)),
        ("drwxr-xr-x   2 owner group     4096 Jan  1  2020 sub dir", ("sub dir", 4096, True)),
        ("lrwxrwxrwx   1 o g 7 Nov 22 17:09 link -> target", ("link", 7, False)),
        ("11-22-26  05:09PM       <DIR>          folder", ("folder", 0, True)),
        ("11-22-26  05:09PM                  12 file.bin", ("file.bin", 12, False)),
        ("total 12", None),
    ],
)
def test_parse_list_line(line: str, parsed: tuple[str, int, bool] | None) -> None:
    assert parse_list_line(line) == parsed


# --------------------------------------------------------------------------- exclusivity


def test_exclusive_put_without_the_primitive_refuses_an_existing_object(target_ftp_rclone: RelayTarget) -> None:
    """rclone serve ftp declares no exclusive create (the declarations per
    server: tests/relay/test_capabilities.py); without the primitive the
    contract still holds when nobody races."""
    lax = target_ftp_rclone.relay()
    lax.open()
    try:
        assert not lax.capabilities.exclusive_create
        lax.put_bytes("lock", b"1", exclusive=True)
        with pytest.raises(RelayExists):
            lax.put_bytes("lock", b"2", exclusive=True)
        assert lax.get_bytes("lock") == b"1"
    finally:
        lax.close()


def test_stale_guard_of_crashed_client_is_removed(target_ftp: RelayTarget) -> None:
    folder = unique_folder()
    assert target_ftp.plant is not None
    relay = target_ftp.relay(folder)
    relay.open()
    assert isinstance(relay, FtpRelay)
    try:
        # A client died while holding the guard of "lock": its guard folder stays.
        os.makedirs(os.path.join(target_ftp.notes["root"], folder, TEMP_PREFIX + "guard-lock"))
        relay.stale_guard_after = 0.5
        relay.put_bytes("lock", b"mine", exclusive=True)
        assert relay.get_bytes("lock") == b"mine"
        assert [e.name for e in relay.list()] == ["lock"]
        assert not os.path.exists(os.path.join(target_ftp.notes["root"], folder, TEMP_PREFIX + "guard-lock"))
    finally:
        relay.close()
