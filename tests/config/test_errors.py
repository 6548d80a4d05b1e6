"""Every configuration fault is one ConfigError line naming file, section and key (exit 78)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from escale.config import load_config, parse_config
from escale.errors import ConfigError
from tests.config.helpers import client, expect_error, one_config_line, run_escale, section_text, write_conf

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


def test_secret_file_without_read_permission(tmp_path: Path) -> None:
    """Run as a process without root's file privileges (CI runs as root, which reads any file)."""
    (tmp_path / "pw").write_text(SECRET)
    (tmp_path / "pw").chmod(0)
    conf = write_conf(tmp_path, section_text({"protocol": "ftp", "address": "h", "secret file": "pw"},
                                             drop=("dir",)))
    line = one_config_line(run_escale(["--once", "-c", conf], unprivileged=True))
    assert "[client] 'secret file'" in line and "read" in line and str(tmp_path / "pw") in line
    assert SECRET not in line


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


# ------------------------------------------------------- start-up faults, through real processes


@dataclass(frozen=True)
class Fault:
    """A configuration escale must refuse at start: the file's text (after ``prepare``
    made what it needs in the work folder), the fragments its one line must hold,
    and whether it only shows without root's file privileges."""

    text: str
    says: tuple[str, ...]
    prepare: Callable[[Path], None] = lambda work: None
    unprivileged: bool = False


def _file(name: str) -> Callable[[Path], None]:
    def make(work: Path) -> None:
        (work / name).write_text("not a folder\n")
    return make


def _folder(name: str, mode: int) -> Callable[[Path], None]:
    def make(work: Path) -> None:
        (work / name).mkdir()
        (work / name).chmod(mode)
    return make


def _default_state_is_a_file(work: Path) -> None:
    (work / "local").mkdir()
    (work / "local" / ".escale").write_text("not a folder\n")


_BIG = "1" + "0" * 26
FAULTS: dict[str, Fault] = {
    "empty file": Fault("", ("no client section",)),
    "global lines only": Fault("log level = INFO\nrefresh = 5\n", ("no client section",)),
    "local path is a file": Fault(section_text({"local path": "afile"}),
                                  ("[client] 'local path'", "afile is not a folder"), _file("afile")),
    "local path cannot be created": Fault(section_text({"local path": "ro/sub/local"}),
                                          ("[client] 'local path'", "cannot be created", "ro"),
                                          _folder("ro", 0o555), unprivileged=True),
    "state directory is a file": Fault(section_text({"state directory": "afile"}),
                                       ("[client] 'state directory'", "afile is not a folder"), _file("afile")),
    "state directory cannot be read": Fault(section_text({"state directory": "st"}),
                                            ("[client] 'state directory'", "st", "permission denied"),
                                            _folder("st", 0), unprivileged=True),
    "state directory cannot be created": Fault(section_text({"state directory": "ro/state"}),
                                               ("[client] 'state directory'", "cannot be created"),
                                               _folder("ro", 0o555), unprivileged=True),
    # escale's own files in the local folder would be synced themselves, pass after pass
    "state directory in the local path": Fault(section_text({"state directory": "local/state"}),
                                               ("[client] 'state directory'", "local path", "synced")),
    "log file in a local path": Fault("log file = local/escale.log\n" + section_text({}),
                                      ("'log file'", "[client]", "local path", "synced")),
    "default state folder is a file": Fault(section_text({}), ("[client] 'local path'", "state folder",
                                                              ".escale is not a folder"), _default_state_is_a_file),
    "address with an unclosed IPv6 host": Fault(
        section_text({"protocol": "ftp", "host address": "ftp://[::1/x"}, drop=("dir",)),
        ("[client] 'host address'", "IPv6")),
    "huge timeout": Fault(section_text({"timeout": "99999999999999999999"}), ("[client] 'timeout'", "3600 s")),
    "huge timeout on a network relay": Fault(
        section_text({"protocol": "ftp", "host address": "ftp://127.0.0.1:9/x",
                      "timeout": "99999999999999999999"}, drop=("dir",)),
        ("[client] 'timeout'", "3600 s")),
    "refresh with an exponent": Fault(section_text({"refresh": "1e26"}), ("[client] 'refresh'", "exponent")),
    "refresh of 10^26 seconds": Fault(section_text({"refresh": _BIG}), ("[client] 'refresh'", "7 days")),
    "lock timeout of 0.1 microsecond": Fault(section_text({"lock timeout": "0.0000001"}),
                                             ("[client] 'lock timeout'", "between 3 s")),
}


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("foreground", [False, True], ids=["once", "foreground"])
@pytest.mark.parametrize("name", list(FAULTS))
def test_start_up_fault_is_one_line_and_exit_78(tmp_path: Path, name: str, foreground: bool) -> None:
    """``escale --once`` and ``escale`` (foreground) refuse the file with one line
    naming it, the section and the key, exit 78, and write nothing."""
    fault = FAULTS[name]
    work, run = tmp_path / "work", tmp_path / "run"
    work.mkdir()
    run.mkdir(mode=0o700)
    fault.prepare(work)
    conf = write_conf(work, fault.text)
    before = _tree(work)
    argv = ["-c", conf] if foreground else ["--once", "-c", conf]
    try:
        result = run_escale(argv, unprivileged=fault.unprivileged, env={"XDG_RUNTIME_DIR": str(run)})
        line = one_config_line(result)
        assert line.startswith(f"escale: {conf}"), line
        for fragment in fault.says:
            assert fragment in line, (fragment, line)
        assert _tree(work) == before  # nothing created, nothing half-written
        assert not any(run.iterdir())  # no pid file, no socket
    finally:
        for path in work.rglob("*"):  # let pytest remove what the test locked
            if path.is_dir():
                path.chmod(0o700)


_BAD_VALUES = ["address with an unclosed IPv6 host", "huge timeout", "huge timeout on a network relay",
               "refresh with an exponent", "refresh of 10^26 seconds", "lock timeout of 0.1 microsecond"]


@pytest.mark.parametrize("name", _BAD_VALUES)
def test_escalectl_status_reports_a_bad_value_in_one_line(tmp_path: Path, name: str) -> None:
    """A bad value is a parse error: every command that reads the file refuses it."""
    fault = FAULTS[name]
    conf = write_conf(tmp_path, fault.text)
    line = one_config_line(run_escale(["-c", conf, "status"], program="escale.cli.ctl"), prog="escalectl")
    assert all(fragment in line for fragment in fault.says), line


def test_a_missing_local_folder_that_can_be_created_is_not_a_config_error(tmp_path: Path) -> None:
    """The client decides what a missing local folder means; start-up only refuses
    a folder that can never be made (checked without root's file privileges)."""
    conf = write_conf(tmp_path, section_text({"local path": "new/sub/local"}))
    result = run_escale(["--once", "-c", conf], unprivileged=True)
    assert result.returncode != 78 and "Traceback" not in result.stderr, result.stderr
