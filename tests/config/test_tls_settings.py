"""TLS keys: ``verify ssl = yes | no | CA-FILE`` against real FTPS and WebDAV
servers with their own test CA, and ``ssl version`` refused when the file is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from escale.cli.wizard import Asker, import_sections
from escale.config import load_config
from escale.errors import CertificateError
from escale.relay import Relay, make_relay
from tests.config.helpers import client, expect_error, section_text
from tests.servers.target import RelayTarget, unique_folder
from tests.servers.webdav import WebdavServer, webdav_target

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("version", ["SSLv2", "sslv3", " SSLv3 "])
def test_broken_ssl_versions_are_refused_when_the_file_is_read(tmp_path: Path, version: str) -> None:
    text = section_text({"protocol": "ftps", "address": "127.0.0.1", "directory": "repo",
                         "ssl version": version}, drop=("relay directory",))
    expect_error(tmp_path, text, section="client", key="ssl version", contains="insecure")


def test_verify_ssl_naming_a_missing_file_is_refused(tmp_path: Path) -> None:
    text = section_text({"protocol": "ftps", "address": "127.0.0.1", "directory": "repo",
                         "verify ssl": "certs/ca.pem"}, drop=("relay directory",))
    error = expect_error(tmp_path, text, section="client", key="verify ssl", contains="no such file")
    assert str(tmp_path / "certs" / "ca.pem") in str(error)
    assert "yes, no or the path of a CA certificate file" in str(error)


def test_verify_ssl_file_and_another_ca_file_conflict(tmp_path: Path) -> None:
    (tmp_path / "one.pem").write_text("x")
    (tmp_path / "two.pem").write_text("x")
    text = section_text({"protocol": "ftps", "address": "127.0.0.1", "directory": "repo",
                         "verify ssl": "one.pem", "ca file": "two.pem"}, drop=("relay directory",))
    expect_error(tmp_path, text, section="client", key="verify ssl", contains="keep one")


def test_verify_ssl_relative_file_is_the_ca_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    settings = client(tmp_path, {"protocol": "ftps", "address": "127.0.0.1", "directory": "repo",
                                 "verify ssl": "ca.pem"}, drop=("relay directory",))
    assert settings.relay.verify_ssl is True and settings.relay.ca_file == str(tmp_path / "ca.pem")
    off = client(tmp_path, {"protocol": "ftps", "address": "127.0.0.1", "directory": "repo",
                            "verify ssl": "off"}, drop=("relay directory",))
    assert off.relay.verify_ssl is False


def _relay_from_config(tmp_path: Path, target: RelayTarget, verify: str) -> Relay:
    """The relay a configuration file describes: the target's lines with
    ``verify ssl = verify`` and no ``ca file``."""
    lines = {k: v for k, v in target.config_for(unique_folder()).items() if k not in ("ca file", "verify ssl")}
    lines["verify ssl"] = verify
    return make_relay(client(tmp_path, lines, drop=("relay directory",)).relay)


def _round_trip(relay: Relay) -> None:
    relay.open()
    try:
        relay.put_bytes("probe", b"trusted")
        assert relay.get_bytes("probe") == b"trusted"
    finally:
        relay.close()


@pytest.fixture(scope="module")
def target_https(webdav_tls_server: WebdavServer) -> RelayTarget:
    return webdav_target("https", webdav_tls_server)


@pytest.mark.parametrize("which", ["target_ftps", "target_https"])
def test_verify_ssl_names_the_test_ca(tmp_path: Path, which: str, request: pytest.FixtureRequest) -> None:
    target: RelayTarget = request.getfixturevalue(which)
    ca_file = (target.notes.get("ca_file") or "") if which == "target_ftps" else ""
    if not ca_file:
        server: WebdavServer = request.getfixturevalue("webdav_tls_server")
        assert server.tls is not None
        ca_file = server.tls.ca_cert
    # without the CA file, the server's certificate is not trusted ...
    with pytest.raises(CertificateError) as refused:
        _round_trip(_relay_from_config(tmp_path, target, "yes"))
    assert "verify ssl" in str(refused.value)
    # ... with 'verify ssl = CA-FILE' it is, and the connection works
    _round_trip(_relay_from_config(tmp_path, target, ca_file))


def test_import_makes_a_relative_verify_ssl_file_absolute(tmp_path: Path) -> None:
    source_dir = tmp_path / "elsewhere"
    source_dir.mkdir()
    (source_dir / "ca.pem").write_text("x")
    source = source_dir / "old.conf"
    source.write_text("[lab]\nlocal path = lab\nprotocol = ftps\naddress = 127.0.0.1\nverify ssl = ca.pem\n\n"
                      "[plain]\nlocal path = plain\nprotocol = ftps\naddress = 127.0.0.1\nverify ssl = no\n")
    target = tmp_path / "home" / "escale.conf"
    said: list[str] = []
    assert import_sections(str(source), str(target), Asker(say=said.append)) == 0
    config = load_config(str(target))
    assert config.client("lab").relay.ca_file == str(source_dir / "ca.pem")
    assert config.client("plain").relay.verify_ssl is False
