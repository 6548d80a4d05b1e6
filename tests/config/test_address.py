"""Relay addresses and how they combine with protocol, port, username and directory keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escale.config import Address, parse_address
from escale.config.values import ValueProblem
from tests.config.helpers import client, expect_error, load_text, section_text

NO_RELAY = ("protocol", "relay directory")


@pytest.mark.parametrize(
    ("text", "protocol", "expected"),
    [
        ("sftp://bob@relay.example.org:2222/srv/repo", None,
         Address("sftp", "relay.example.org", 2222, "bob", "/srv/repo")),
        ("FTPS://relay.example.org", None, Address("ftps", "relay.example.org")),
        ("relay.example.org", "ftp", Address(host="relay.example.org")),
        ("relay.example.org:2121/pub/x", "ftp", Address(host="relay.example.org", port=2121, directory="/pub/x")),
        ("alice@[::1]:8080/dav", "http", Address(host="::1", port=8080, username="alice", directory="/dav")),
        ("https://dav.example.org/remote.php/webdav/", None,
         Address("https", "dav.example.org", directory="/remote.php/webdav/")),
        ("file:///srv/relay", None, Address("file", directory="/srv/relay")),
        ("file://localhost/srv/relay", None, Address("file", directory="/srv/relay")),
        ("../relay", "file", Address(directory="../relay")),
        ("myremote:bucket/escale", "rclone", Address(remote="myremote", directory="bucket/escale")),
        ("myremote", "s3", Address(remote="myremote")),
        (":local:/tmp/relay", "rclone", Address(remote=":local", directory="/tmp/relay")),
        ("s3://myremote/bucket/dir", None, Address("s3", remote="myremote", directory="bucket/dir")),
        ("rclone://gdrive", None, Address("rclone", remote="gdrive")),
    ],
)
def test_parse_address(text: str, protocol: str | None, expected: Address) -> None:
    assert parse_address(text, protocol) == expected


@pytest.mark.parametrize(
    ("text", "protocol"),
    [
        ("gopher://h", None), ("relay.example.org", None), ("ftp://h:99999", None), ("ftp://h:0", None),
        ("ftp://:21/x", None), ("file://otherhost/x", None), ("file:///", None), ("remote:x", None),
        ("/x:y", "rclone"), (":local", "rclone"), ("http://h/x?y=1", None),
    ],
)
def test_bad_addresses(text: str, protocol: str | None) -> None:
    with pytest.raises(ValueProblem):
        parse_address(text, protocol)


def test_password_in_address_is_refused_and_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ValueProblem) as info:
        parse_address("ftp://bob:Hunter2Pw@h/x")
    assert "Hunter2Pw" not in str(info.value)
    error = expect_error(tmp_path, section_text({"address": "ftp://bob:Hunter2Pw@h/x"}, drop=NO_RELAY),
                         section="client", key="address", contains="password")
    assert "Hunter2Pw" not in str(error)


def test_address_fills_missing_keys(tmp_path: Path) -> None:
    c = client(tmp_path, {"remote address": "ftps://bob@relay.example.org:990/escale"}, drop=NO_RELAY)
    r = c.relay
    assert (r.protocol, r.host, r.port, r.username, r.directory) == ("ftps", "relay.example.org", 990, "bob",
                                                                     "/escale")
    assert r.describe() == "ftps://bob@relay.example.org:990/escale"


def test_explicit_keys_agreeing_with_the_address(tmp_path: Path) -> None:
    c = client(tmp_path, {"address": "ftp://bob@h:21/pub/x/", "protocol": "FTP", "port": "21",
                          "user": "bob", "relay dir": "pub/x"})
    assert (c.relay.protocol, c.relay.port, c.relay.username, c.relay.directory) == ("ftp", 21, "bob", "pub/x")


def test_short_address_with_separate_keys(tmp_path: Path) -> None:
    c = client(tmp_path, {"protocol": "sftp", "address": "h", "port": "2222", "username": "u",
                          "remote dir": "repo"})
    assert (c.relay.host, c.relay.port, c.relay.username, c.relay.directory) == ("h", 2222, "u", "repo")


@pytest.mark.parametrize(
    ("lines", "key"),
    [
        ({"protocol": "sftp", "address": "ftp://h/x"}, "protocol"),
        ({"protocol": "http", "address": "https://h/x"}, "protocol"),
        ({"port": "22", "address": "sftp://h:2222/x"}, "port"),
        ({"username": "alice", "address": "sftp://bob@h/x"}, "username"),
        ({"host dir": "/a", "address": "sftp://h/b"}, "host dir"),
    ],
)
def test_address_contradicting_a_key_of_the_same_section(tmp_path: Path, lines: dict[str, str],
                                                         key: str) -> None:
    expect_error(tmp_path, section_text(lines, drop=NO_RELAY), section="client", key=key,
                 contains="contradicts")


def test_section_address_beats_global_keys(tmp_path: Path) -> None:
    text = "protocol = ftp\nport = 21\n" + section_text({"address": "sftp://h:2222/x"}, drop=NO_RELAY)
    c = load_text(tmp_path, text).clients[0]
    assert (c.relay.protocol, c.relay.port) == ("sftp", 2222)


def test_section_keys_beat_a_global_address(tmp_path: Path) -> None:
    text = "address = ftp://h:2121/base\n" + section_text({"dir": "/mine", "protocol": "ftps"},
                                                          drop=NO_RELAY)
    c = load_text(tmp_path, text).clients[0]
    assert (c.relay.protocol, c.relay.host, c.relay.port, c.relay.directory) == ("ftps", "h", 2121, "/mine")


def test_webdav_protocol_takes_tls_from_the_address(tmp_path: Path) -> None:
    c = client(tmp_path, {"protocol": "webdav", "address": "https://dav.example.org/x"}, drop=NO_RELAY)
    assert c.relay.protocol == "https"
    c = client(tmp_path, {"protocol": "webdav", "address": "dav.example.org"}, drop=NO_RELAY)
    assert c.relay.protocol == "webdav"


def test_no_protocol_anywhere(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"address": "h"}, drop=NO_RELAY), section="client", key="protocol",
                 contains="no protocol")
    expect_error(tmp_path, section_text({}, drop=("protocol",)), section="client", key="protocol")


def test_unknown_protocol_lists_the_known_ones(tmp_path: Path) -> None:
    error = expect_error(tmp_path, section_text({"protocol": "gopher"}), section="client", key="protocol")
    assert "sftp" in str(error) and "googledrive" in str(error) and "swift" in str(error)
    expect_error(tmp_path, section_text({"address": "gopher://h"}, drop=NO_RELAY), section="client",
                 key="address", contains="gopher")


def test_network_protocol_needs_a_host(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"protocol": "ftp"}), section="client", key="host address")


def test_file_relay_from_address_or_directory(tmp_path: Path) -> None:
    relay = tmp_path / "abs-relay"
    c = client(tmp_path, {"address": f"file://{relay}"}, drop=NO_RELAY)
    assert (c.relay.protocol, c.relay.directory) == ("file", str(relay))
    c = client(tmp_path, {"protocol": "file", "address": "~/relay"}, drop=NO_RELAY)
    assert c.relay.directory == os.path.join(os.environ["HOME"], "relay")
    c = client(tmp_path, {"protocol": "file", "relay path": "../shared"}, drop=NO_RELAY)
    assert c.relay.directory == str(tmp_path.parent / "shared")
    expect_error(tmp_path, section_text({"protocol": "file"}, drop=("relay directory",)), section="client",
                 key="host directory")


def test_file_relay_must_not_overlap_the_local_folder(tmp_path: Path) -> None:
    for relay in ("local/relay", ".", "local"):
        expect_error(tmp_path, section_text({"relay dir": relay}), section="client", key="host directory",
                     contains="overlap")
    assert client(tmp_path, {"relay dir": "local-relay"}).relay.directory == str(tmp_path / "local-relay")


def test_rclone_remote_and_path(tmp_path: Path) -> None:
    c = client(tmp_path, {"protocol": "rclone", "address": "mydrive:escale/repo"}, drop=NO_RELAY)
    assert (c.relay.protocol, c.relay.rclone_remote, c.relay.directory) == ("rclone", "mydrive", "escale/repo")
    c = client(tmp_path, {"protocol": "s3", "address": "aws", "dir": "bucket/x"}, drop=NO_RELAY)
    assert (c.relay.protocol, c.relay.rclone_remote, c.relay.directory) == ("s3", "aws", "bucket/x")
    (tmp_path / "rclone.conf").write_text("[aws]\ntype = s3\n")
    c = client(tmp_path, {"protocol": "dropbox", "address": "db", "rclone config": "rclone.conf",
                          "rclone binary": "~/bin/rclone"}, drop=NO_RELAY)
    assert c.relay.rclone_config == str(tmp_path / "rclone.conf")
    assert c.relay.rclone_binary == os.path.join(os.environ["HOME"], "bin", "rclone")
    expect_error(tmp_path, section_text({"protocol": "s3"}, drop=("relay directory",)), section="client",
                 key="host address", contains="rclone remote")


def test_sftp_keys(tmp_path: Path) -> None:
    (tmp_path / "id_ed25519").write_text("k")
    (tmp_path / "other").write_text("k")
    c = client(tmp_path, {"address": "sftp://h/x", "keyfile": "id_ed25519"}, drop=NO_RELAY)
    assert c.relay.ssh_key == str(tmp_path / "id_ed25519")
    assert c.relay.known_hosts == os.path.join(os.environ["HOME"], ".ssh", "known_hosts")
    c = client(tmp_path, {"address": "sftp://h/x", "keyfile": "id_ed25519", "ssh key": "other",
                          "known hosts": "kh"}, drop=NO_RELAY)
    assert (c.relay.ssh_key, c.relay.known_hosts) == (str(tmp_path / "other"), str(tmp_path / "kh"))
    c = client(tmp_path, {"address": "ftps://h/x", "keyfile": "id_ed25519"}, drop=NO_RELAY)
    assert (c.relay.ssh_key, c.relay.keyfile) == (None, str(tmp_path / "id_ed25519"))
    expect_error(tmp_path, section_text({"address": "sftp://h/x", "ssh key": "missing"}, drop=NO_RELAY),
                 section="client", key="ssh key", contains="not found")


@pytest.mark.parametrize("text", ["ftp://[::1/x", "ftp://[::1", "sftp://bob@[::1:22/x", "https://[nothost]/dav",
                                  "ftp://[::1]x]/y"])
def test_malformed_bracketed_host_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ValueProblem, match="host"):
        parse_address(text)
    expect_error(tmp_path, section_text({"host address": text}, drop=("dir", "protocol")),
                 section="client", key="host address")


@given(st.text(alphabet=st.sampled_from(list("[]:@/%?#.a1 \\\t\x00é")), max_size=24),
       st.sampled_from(["ftp", "sftp", "https", "file", "rclone", "s3", None]),
       st.sampled_from(["", "ftp://", "file://", "s3://"]))
def test_any_address_text_is_an_address_or_a_value_problem(text: str, protocol: str | None, prefix: str) -> None:
    try:
        parse_address(prefix + text, protocol)
    except ValueProblem:
        pass
