"""Every configuration fault is one ConfigError line naming file, section and key (exit 78)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from escale.config import load_config, parse_config
from escale.errors import ConfigError
from tests.config.helpers import client, expect_error, section_text, write_conf

SECRET = "Pa55-w0rd-XYZZY"


def test_unknown_key_names_the_closest_known_key(tmp_path: Path) -> None:
    error = expect_error(tmp_path, section_text({"refrsh": "3"}), section="client", key="refrsh",
                         contains="did you mean 'refresh'")
    assert "line 5" in str(error)
    expect_error(tmp_path, "log fille = x\n", section=None, key="log fille", contains="'log file'")
    expect_error(tmp_path, section_text({"Local_Path": "x"}), section="client", key="local_path",
                 contains="'local path'")


def test_bad_value_names_the_key_as_written(tmp_path: Path) -> None:
    error = expect_error(tmp_path, section_text({"Pullers": "many"}), section="client", key="pullers",
                         contains="whole number")
    assert "line 5" in str(error)


def test_missing_local_path(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({}, drop=("path",)), section="client", key="local path",
                 contains="missing")
    expect_error(tmp_path, section_text({"path": ""}), section="client", key="local path")


def test_push_only_and_pull_only_together(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"push only": "yes", "write only": "yes"}), section="client",
                 key="push only", contains="both")


def test_push_only_contradicting_mode(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"mode": "download", "read only": "yes"}), section="client",
                 key="read only", contains="mode")
    expect_error(tmp_path, section_text({"mode": "shared", "pull only": "on"}), section="client",
                 key="pull only", contains="mode")


def test_priority_only_upload(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"priority": "download"}), section="client", key="priority")


def test_duplicate_section(tmp_path: Path) -> None:
    text = section_text({}, name="docs") + section_text({"path": "other"}, name="Docs")
    expect_error(tmp_path, text, section="Docs", key=None, contains="duplicate section")


@pytest.mark.parametrize(("first", "second"), [("refresh", "refresh"), ("path", "local  path"),
                                               ("password", "secret file"), ("dir", "relay dir")])
def test_duplicate_key_in_a_section(tmp_path: Path, first: str, second: str) -> None:
    text = f"[c]\n{first} = 1\n{second} = 2\n"
    expect_error(tmp_path, text, section="c", key=second.replace("  ", " "), contains="duplicate key")


def test_duplicate_global_key(tmp_path: Path) -> None:
    expect_error(tmp_path, "log level = INFO\nlog level = DEBUG\n", section=None, key="log level",
                 contains="duplicate")


@pytest.mark.parametrize("key", ["log file", "log rotate", "log level"])
def test_global_only_key_in_a_section(tmp_path: Path, key: str) -> None:
    expect_error(tmp_path, section_text({key: "3"}), section="client", key=key, contains="global")


@pytest.mark.parametrize(("text", "section"), [
    ("just words\n", None),
    ("[c]\npath = x\nnot a key value line\n", "c"),
    ("[c\n", None),
    ("[c]\n= value\n", "c"),
])
def test_malformed_lines(tmp_path: Path, text: str, section: str | None) -> None:
    expect_error(tmp_path, text, section=section, key=None, contains="malformed")


@pytest.mark.parametrize("name", ["", "a/b", "a\\b", "..", "tab\there"])
def test_bad_section_names(tmp_path: Path, name: str) -> None:
    path = write_conf(tmp_path, f"[{name}]\npath = x\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert path in str(info.value) and info.value.exit_code == 78


def test_bad_global_values(tmp_path: Path) -> None:
    expect_error(tmp_path, "log rotate = -1\n", section=None, key="log rotate")
    expect_error(tmp_path, "log level = verbose\n", section=None, key="log level", contains="DEBUG")
    # A per-client default with a bad value is reported at its global line.
    expect_error(tmp_path, "refresh = soon\n" + section_text({}), section=None, key="refresh",
                 contains="line 1")
    expect_error(tmp_path, "refresh = soon\n", section=None, key="refresh")


def test_encryption_without_passphrase(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"encryption": "yes"}), section="client", key="encryption",
                 contains="passphrase")
    expect_error(tmp_path, section_text({"encryption": "fernet", "key": ""}), section="client",
                 key="encryption")


def test_key_file(tmp_path: Path) -> None:
    (tmp_path / "escale.key").write_text("generated\n")
    c = client(tmp_path, {"encryption": "yes", "key": "escale.key"})
    assert (c.key_file, c.passphrase) == (str(tmp_path / "escale.key"), None)
    c = client(tmp_path, {"encryption": "yes", "passphrase": str(tmp_path / "escale.key")})
    assert c.key_file == str(tmp_path / "escale.key")


@pytest.mark.parametrize("value", [f"keys/{SECRET}", f"~/{SECRET}", f"{SECRET}/"])
def test_key_file_not_found_never_echoes_the_value(tmp_path: Path, value: str) -> None:
    error = expect_error(tmp_path, section_text({"encryption": "yes", "passphrase": value}),
                         section="client", key="passphrase", contains="key file not found")
    assert SECRET not in str(error)


def test_passphrase_is_not_in_repr_or_errors(tmp_path: Path) -> None:
    c = client(tmp_path, {"encryption": "yes", "key": SECRET})
    assert c.passphrase == SECRET and SECRET not in repr(c)
    error = expect_error(tmp_path, section_text({"encryption": "yes", "key": SECRET, "refresh": "x"}),
                         section="client", key="refresh")
    assert SECRET not in str(error)


def test_password_literal_and_files(tmp_path: Path) -> None:
    net = {"protocol": "ftp", "address": "h"}
    assert client(tmp_path, {**net, "password": SECRET}, drop=("dir",)).relay.password == SECRET
    (tmp_path / "both").write_text(f"bob:{SECRET}\n\n")
    c = client(tmp_path, {**net, "credential": "both"}, drop=("dir",))
    assert (c.relay.username, c.relay.password) == ("bob", SECRET)
    c = client(tmp_path, {**net, "credential": "both", "user": "bob"}, drop=("dir",))
    assert (c.relay.username, c.relay.password) == ("bob", SECRET)
    c = client(tmp_path, {**net, "password": str(tmp_path / "both")}, drop=("dir",))
    assert c.relay.password == SECRET


def test_relay_password_is_not_in_repr(tmp_path: Path) -> None:
    c = client(tmp_path, {"protocol": "ftp", "address": "h", "password": SECRET}, drop=("dir",))
    assert SECRET not in repr(c)


def test_secret_file_user_differs_from_username(tmp_path: Path) -> None:
    (tmp_path / "both").write_text(f"bob:{SECRET}\n")
    for lines in ({"username": "alice"}, {"address": "ftp://alice@h"}):
        error = expect_error(tmp_path, section_text({"protocol": "ftp", "address": "h", **lines,
                                                     "secret file": "both"}, drop=("dir",)),
                             section="client", key="secret file", contains="differs")
        assert SECRET not in str(error) and "bob" not in str(error)


@pytest.mark.parametrize("alias", ["secret file", "credential"])
def test_missing_secret_file_never_echoes_the_value(tmp_path: Path, alias: str) -> None:
    error = expect_error(tmp_path, section_text({"protocol": "ftp", "address": "h", alias: SECRET},
                                                drop=("dir",)),
                         section="client", key=alias, contains="secret file not found")
    assert SECRET not in str(error)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00bad", b"", b"line one\nline two\n", b":nouser\n"])
def test_unreadable_or_malformed_secret_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "pw").write_bytes(content)
    error = expect_error(tmp_path, section_text({"protocol": "ftp", "address": "h", "secret file": "pw"},
                                                drop=("dir",)),
                         section="client", key="secret file", contains=str(tmp_path / "pw"))
    assert "nouser" not in str(error) and "line one" not in str(error)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_secret_file_without_read_permission(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET)
    (tmp_path / "pw").chmod(0)
    expect_error(tmp_path, section_text({"protocol": "ftp", "address": "h", "secret file": "pw"},
                                        drop=("dir",)), section="client", key="secret file", contains="read")


def test_secrets_never_reach_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "pw").write_text(f"bob:{SECRET}\n")
    (tmp_path / "pw").chmod(0o644)
    with caplog.at_level(logging.DEBUG):
        c = client(tmp_path, {"protocol": "ftp", "address": "h", "secret file": "pw", "key": SECRET},
                   drop=("dir",))
    assert c.relay.password == SECRET
    assert "other users" in caplog.text and "encryption is off" in caplog.text
    assert SECRET not in caplog.text


def test_missing_certificate_file(tmp_path: Path) -> None:
    expect_error(tmp_path, section_text({"certfile": "nope.pem"}), section="client", key="certfile",
                 contains=str(tmp_path / "nope.pem"))


def test_parse_config_uses_the_given_path(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "x.conf")
    config = parse_config(section_text({}), path)
    assert config.path == path and config.clients[0].local_path == str(tmp_path / "sub" / "local")
    with pytest.raises(ConfigError) as info:
        config.client("nope")
    assert path in str(info.value) and "client" in str(info.value)


def test_unreadable_configuration_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "absent.conf"))
    assert "escale -i" in str(info.value) and info.value.exit_code == 78
    (tmp_path / "bin.conf").write_bytes(b"\xff\xfe[c]\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(str(tmp_path / "bin.conf"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path))
