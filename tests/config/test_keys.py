"""Every key and every alias of the key table reaches the right settings field."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from escale.config.keys import (
    ALL_KEYS,
    CLIENT_KEYS,
    FILE_OR_VALUE_KEYS,
    GLOBAL_KEYS,
    PATH_KEYS,
    PROGRAM_KEYS,
    closest_key,
    key_named,
    lookup,
    normalize,
)
from escale.config.settings import ClientSettings
from tests.config.helpers import client, load_text

NETWORK = {"protocol": "sftp", "host address": "relay.example.org"}


@dataclass
class Sample:
    """A value for a key, what it should become, and what else the section needs."""

    value: str
    get: Callable[[ClientSettings], Any]
    expected: Any  # a callable of the config folder gives a path under it
    extra: dict[str, str] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    files: dict[str, str] = field(default_factory=dict)


def _under(name: str) -> Callable[[Path], str]:
    return lambda folder: str(folder / name)


def _patterns(c: ClientSettings, attr: str) -> list[str]:
    return [p.pattern for p in getattr(c.filters, attr)]


SAMPLES: dict[str, Sample] = {
    "local path": Sample("here", lambda c: c.local_path, _under("here")),
    "protocol": Sample("sftp", lambda c: c.relay.protocol, "sftp",
                       extra={"host address": "h.example"}, drop=("relay directory",)),
    "host address": Sample("sftp://h.example/x", lambda c: (c.relay.host, c.relay.directory),
                           ("h.example", "/x"), drop=("protocol", "relay directory")),
    "host directory": Sample("elsewhere", lambda c: c.relay.directory, _under("elsewhere")),
    "port": Sample("2022", lambda c: c.relay.port, 2022, extra=NETWORK, drop=("relay directory",)),
    "username": Sample("bob", lambda c: c.relay.username, "bob", extra=NETWORK, drop=("relay directory",)),
    "password": Sample("pw.txt", lambda c: c.relay.password, "s3cret", extra=NETWORK,
                       drop=("relay directory",), files={"pw.txt": "s3cret\n"}),
    "refresh": Sample("2.5", lambda c: c.refresh, 2.5),
    "modification time": Sample("no", lambda c: c.use_mtime, False),
    "client name": Sample("laptop", lambda c: c.client_name, "laptop"),
    "push only": Sample("yes", lambda c: c.mode, "upload"),
    "pull only": Sample("yes", lambda c: c.mode, "download"),
    "encryption": Sample("Fernet", lambda c: c.encryption, "fernet", extra={"passphrase": "abc"}),
    "passphrase": Sample("abc", lambda c: (c.passphrase, c.key_file), ("abc", None),
                         extra={"encryption": "yes"}),
    "certificate": Sample("cert.pem", lambda c: c.relay.certificate, _under("cert.pem"),
                          files={"cert.pem": "x"}),
    "keyfile": Sample("key.pem", lambda c: c.relay.keyfile, _under("key.pem"), files={"key.pem": "x"}),
    "ca file": Sample("ca.pem", lambda c: c.relay.ca_file, _under("ca.pem"), files={"ca.pem": "x"}),
    "verify ssl": Sample("off", lambda c: c.relay.verify_ssl, False),
    "ssl version": Sample("tlsv1.2", lambda c: c.relay.ssl_version, "TLSv1.2"),
    "file extension": Sample(".TXT, md", lambda c: c.filters.extensions, ("txt", "md")),
    "include": Sample("*.txt", lambda c: _patterns(c, "include"), [r".*\.txt"]),
    "exclude": Sample("~*", lambda c: _patterns(c, "exclude"), [r"\~.*"]),
    "include directories": Sample("data", lambda c: _patterns(c, "include_dirs"), ["data"]),
    "exclude directories": Sample("/tmp[0-9]/", lambda c: _patterns(c, "exclude_dirs"), ["tmp[0-9]"]),
    "disk quota": Sample("2GB", lambda c: c.disk_quota, 2 * 10**9),
    "maintainer": Sample("me@example.org", lambda c: c.maintainer, "me@example.org"),
    "mode": Sample("preservative", lambda c: c.mode, "conservative"),
    "lock timeout": Sample("60", lambda c: c.lock_timeout, 60.0),
    "puller count": Sample("3", lambda c: c.puller_count, 3),
    "checksum": Sample("MD5", lambda c: c.checksum, "md5"),
    "checksum cache": Sample("off", lambda c: c.checksum_cache, False),
    "index": Sample("yes", lambda c: (c.index, c.index_topdir), (True, None)),
    "maxpagesize": Sample("10MB", lambda c: c.maxpagesize, 10**7),
    "priority": Sample("Upload", lambda c: c.priority, "upload"),
    "state directory": Sample("state", lambda c: c.state_dir, _under("state")),
    "deletion guard": Sample("25%", lambda c: c.deletion_guard, 0.25),
    "rclone binary": Sample("/opt/rclone/rclone", lambda c: c.relay.rclone_binary, "/opt/rclone/rclone"),
    "rclone config": Sample("rclone.conf", lambda c: c.relay.rclone_config, _under("rclone.conf"),
                            files={"rclone.conf": ""}),
    "known hosts": Sample("kh", lambda c: c.relay.known_hosts, _under("kh")),
    "ssh client": Sample("OpenSSH", lambda c: c.relay.ssh_client, "openssh"),
    "ssh key": Sample("id_test", lambda c: c.relay.ssh_key, _under("id_test"), files={"id_test": "x"}),
    "timeout": Sample("5", lambda c: c.relay.timeout, 5.0),
    "stale receiver": Sample("86400", lambda c: c.stale_receiver, 86400.0),
    "bandwidth limit": Sample("2 MB", lambda c: c.bandwidth_limit, 2_000_000),
    "transfers": Sample("8", lambda c: c.transfers, 8),
    "keep versions": Sample("12 h", lambda c: c.keep_versions, 12 * 3600.0),
    "keep versions size": Sample("1GB", lambda c: c.keep_versions_size, 10**9),
    "versions folder": Sample("kept", lambda c: c.versions_dir, _under("kept")),
    "after delivery": Sample("Move", lambda c: (c.after_delivery, c.holding_dir), ("move", "/held"),
                             extra={"mode": "upload", "holding folder": "/held"}),
    "holding folder": Sample("held", lambda c: c.holding_dir, _under("held")),
    "delivered when": Sample("SENT", lambda c: c.delivered_when, "sent"),
    "hook": Sample("/usr/local/bin/on-file", lambda c: c.hook, "/usr/local/bin/on-file"),
    "hook timeout": Sample("5", lambda c: c.hook_timeout, 5.0),
    "watch": Sample("off", lambda c: c.watch, False),
    "watch delay": Sample("2.5", lambda c: c.watch_delay, 2.5),
}

ALL_NAMES = [(name, key.name) for key in CLIENT_KEYS for name in key.names]


@pytest.mark.parametrize(("name", "canonical"), ALL_NAMES, ids=[n for n, _ in ALL_NAMES])
def test_every_key_and_alias_sets_its_field(tmp_path: Path, name: str, canonical: str) -> None:
    sample = SAMPLES[canonical]  # a KeyError here: a key of the table has no test sample
    for filename, content in sample.files.items():
        (tmp_path / filename).write_text(content)
    # Written in odd case and spacing: key names are case- and blank-insensitive.
    odd = "  ".join(word.upper() if i % 2 else word.title() for i, word in enumerate(name.split()))
    got = client(tmp_path, {**sample.extra, odd: sample.value}, drop=sample.drop)
    expected = sample.expected(tmp_path) if callable(sample.expected) else sample.expected
    assert sample.get(got) == expected


def test_alias_table_matches_the_issue() -> None:
    aliases = {key.name: set(key.aliases) for key in CLIENT_KEYS}
    assert aliases["local path"] == {"path"}
    assert aliases["host directory"] == {
        "relay directory", "remote directory", "directory", "host dir", "relay dir", "remote dir", "dir",
        "host path", "relay path", "remote path",
    }
    assert aliases["host address"] == {"relay address", "remote address", "address"}
    assert aliases["password"] == {"secret file", "credential"}
    assert aliases["push only"] == {"read only"}
    assert aliases["pull only"] == {"write only"}
    assert aliases["ssh key"] == set()
    assert {k.name for k in GLOBAL_KEYS} == {"log file", "log rotate", "log level"}


def test_defaults_of_a_minimal_section(tmp_path: Path) -> None:
    c = client(tmp_path)
    assert c.name == "client"
    assert c.local_path == str(tmp_path / "local")
    assert c.relay.protocol == "file" and c.relay.directory == str(tmp_path / "relay")
    assert (c.mode, c.refresh, c.use_mtime, c.encryption, c.checksum) == ("shared", 10.0, True, None, "sha256")
    assert (c.index, c.index_topdir, c.maxpagesize, c.deletion_guard) == (False, None, 10**9, 0.5)
    assert (c.lock_timeout, c.puller_count, c.priority, c.disk_quota) == (120.0, None, None, None)
    assert c.relay.timeout == 30.0 and c.relay.rclone_binary == "rclone" and c.relay.verify_ssl


def test_every_unset_key_takes_the_default_its_table_entry_states(tmp_path: Path) -> None:
    """The default the key table gives (and the wizard offers) is what a file without the key gets."""
    c = client(tmp_path)
    globals_ = load_text(tmp_path, "").globals
    owners: dict[str, Any] = {"": c, "relay": c.relay, "filters": c.filters}
    checked = []
    for key in ALL_KEYS:
        if key.field is None or key.name == "local path":  # combined keys; the one required key
            continue
        owner, _, name = key.field.rpartition(".")
        assert getattr(globals_ if key.global_only else owners[owner], name) == key.default, key.name
        checked.append(key.name)
    assert len(checked) > 30
    assert (key_named("refresh").default, key_named("mode").default, key_named("log rotate").default) == (
        10.0, "shared", 3)


def test_keys_by_kind_of_value() -> None:
    """What the wizard's import makes absolute follows from each key's converter."""
    assert PATH_KEYS == {"local path", "state directory", "certificate", "keyfile", "ca file", "rclone config",
                         "known hosts", "ssh key", "versions folder", "holding folder"}
    assert FILE_OR_VALUE_KEYS == {"password", "passphrase", "verify ssl"}
    assert PROGRAM_KEYS == {"rclone binary", "hook"}


def test_global_keys(tmp_path: Path) -> None:
    config = load_text(tmp_path, "log file = logs/escale.log\nLog  Rotate = 0\nlog level = warning\n")
    assert config.globals.log_file == str(tmp_path / "logs" / "escale.log")
    assert (config.globals.log_rotate, config.globals.log_level) == (0, "WARNING")
    assert config.clients == ()
    default = load_text(tmp_path, "")
    assert (default.globals.log_file, default.globals.log_rotate, default.globals.log_level) == (None, 3, "INFO")


def test_global_client_keys_are_defaults_that_sections_override(tmp_path: Path) -> None:
    text = (
        "refresh = 30\ninclude = *.txt\nprotocol = file\n"
        "[a]\npath = a\nrelay dir = ra\n"
        "[b]\npath = b\nrelay dir = rb\nrefresh = 2\n"
        "[c]\npath = c\nrelay dir = rc\ninclude =\n"
    )
    a, b, c = load_text(tmp_path, text).clients
    assert (a.refresh, b.refresh, c.refresh) == (30.0, 2.0, 30.0)
    # An empty value is "not set": it masks the global default.
    assert [p.pattern for p in a.filters.include] == [r".*\.txt"] and c.filters.include == ()


def test_a_section_mode_replaces_the_global_mode_group(tmp_path: Path) -> None:
    text = (
        "push only = yes\nprotocol = file\n"
        "[a]\npath = a\nrelay dir = r\n"
        "[b]\npath = b\nrelay dir = r\nmode = download\n"
    )
    a, b = load_text(tmp_path, text).clients
    assert (a.mode, b.mode) == ("upload", "download")


def test_sections_keep_file_order_and_names(tmp_path: Path) -> None:
    text = "".join(f"[{n}]\npath = {n}\nprotocol = file\ndir = r{n}\n" for n in ("zeta", "Alpha", "my docs"))
    config = load_text(tmp_path, text)
    assert [c.name for c in config.clients] == ["zeta", "Alpha", "my docs"]
    assert config.client("my docs").local_path == str(tmp_path / "my docs")


def test_comments_separators_and_values_kept_verbatim(tmp_path: Path) -> None:
    text = (
        "\ufeff# a comment\n; another\n[c]\n  path: local  \nprotocol=file\n   dir = relay\n"
        "client name = laptop # not a comment\n"
    )
    c = load_text(tmp_path, text).clients[0]
    assert c.local_path == str(tmp_path / "local")
    assert c.client_name == "laptop # not a comment"


def test_normalize_and_lookup() -> None:
    assert normalize("  Local \t Path ") == "local path"
    assert lookup("REMOTE  dir").name == "host directory"  # type: ignore[union-attr]
    assert lookup("nonsense") is None
    assert closest_key("refrsh") == "refresh"
    assert closest_key("local_path") == "local path"
    assert re.fullmatch(r"[a-z ]+", closest_key("zzzzzzzzz"))
