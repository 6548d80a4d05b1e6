"""One client section (plus the global defaults) -> :class:`ClientSettings`.

A section's own value beats a global default. ``mode``, ``push only`` and
``pull only`` go together: a section setting any of them ignores the global ones.
Values from the address and from explicit keys are reconciled field by field (the
more specific scope wins; one scope contradicting itself is an error).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

from escale.config.address import (
    CONFIG_PROTOCOLS,
    NETWORK_PROTOCOLS,
    RCLONE_FAMILY,
    Address,
    address_scheme,
    parse_address,
)
from escale.config.converters import Converters, Credential, KeySource, convert_entry
from escale.config.ini import Entry, IniFile, Section
from escale.config.settings import (
    DEFAULT_DELETION_GUARD,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_MAXPAGESIZE,
    DEFAULT_REFRESH,
    ClientSettings,
    FileFilter,
    Mode,
)
from escale.config.values import (
    parse_bool,
    parse_checksum,
    parse_encryption,
    parse_extensions,
    parse_fraction,
    parse_index,
    parse_int,
    parse_mode,
    parse_patterns,
    parse_seconds,
    parse_size,
    parse_ssl_version,
)
from escale.errors import ConfigError
from escale.relay.spec import RelaySpec

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_TIMEOUT = 30.0
_MODE_GROUP = frozenset({"mode", "push only", "pull only"})
_WEBDAV_FAMILY = frozenset({"webdav", "http", "https"})


def _level(entry: Entry) -> int:
    """1 for a value written in the section, 0 for a global default."""
    return 0 if entry.section is None else 1


class ClientBuilder:
    """Builds the ClientSettings of one section from its entries and the global defaults."""

    def __init__(self, path: str, section: Section, ini: IniFile, conv: Converters) -> None:
        self.path = path
        self.name = section.name
        self.conv = conv
        own = section.entries
        inherited = {key: entry for key, entry in ini.globals.items() if conv.for_entry(entry) is not None}
        if _MODE_GROUP & own.keys():
            inherited = {k: v for k, v in inherited.items() if k not in _MODE_GROUP}
        self.entries: dict[str, Entry] = {**inherited, **own}

    # -- access

    def entry(self, key: str) -> Entry | None:
        """The entry in force for ``key``, or None when unset (absent or empty)."""
        entry = self.entries.get(key)
        return entry if entry is not None and entry.value else None

    def get(self, key: str, function: Callable[[str], T]) -> T | None:
        entry = self.entry(key)
        return None if entry is None else convert_entry(entry, function, self.path)

    def value(self, key: str, function: Callable[[str], T], default: T) -> T:
        entry = self.entry(key)
        return default if entry is None else convert_entry(entry, function, self.path)

    def error(self, message: str, key: str | Entry) -> ConfigError:
        """An error about this section, naming ``key`` (as written, when an entry)."""
        if isinstance(key, Entry):
            message = f"{message} (line {key.line})"
            key = key.written
        return ConfigError(message, path=self.path, section=self.name, key=key)

    # -- the whole

    def build(self) -> ClientSettings:
        local_path = self.get("local path", self.conv.path)
        if local_path is None:
            raise self.error("missing 'local path': the local folder to synchronise", "local path")
        relay = self.relay()
        if relay.protocol == "file":
            self.check_apart(local_path, relay.directory)
        encryption, keys = self.encryption()
        no_index: tuple[bool, int | None] = (False, None)
        index, topdir = self.value("index", parse_index, no_index)
        checksum: str | None = "sha256"
        checksum = self.value("checksum", parse_checksum, checksum)
        return ClientSettings(
            name=self.name,
            local_path=local_path,
            relay=relay,
            mode=self.mode(),
            client_name=self.value("client name", str.strip, ""),
            refresh=self.value("refresh", parse_seconds, DEFAULT_REFRESH),
            use_mtime=self.value("modification time", parse_bool, True),
            encryption=encryption,
            key_file=keys.key_file,
            passphrase=keys.passphrase,
            filters=FileFilter(
                extensions=self.value("file extension", parse_extensions, ()),
                include=self.value("include", parse_patterns, ()),
                exclude=self.value("exclude", parse_patterns, ()),
                include_dirs=self.value("include directories", parse_patterns, ()),
                exclude_dirs=self.value("exclude directories", parse_patterns, ()),
            ),
            disk_quota=self.get("disk quota", parse_size),
            maintainer=self.get("maintainer", str.strip),
            lock_timeout=self.value("lock timeout", parse_seconds, DEFAULT_LOCK_TIMEOUT),
            puller_count=self.get("puller count", lambda text: parse_int(text, minimum=1)),
            checksum=checksum,
            checksum_cache=self.value("checksum cache", parse_bool, True),
            index=index,
            index_topdir=topdir,
            maxpagesize=self.value("maxpagesize", parse_size, DEFAULT_MAXPAGESIZE),
            priority=self.get("priority", self.conv.priority),
            state_dir=self.get("state directory", self.conv.path),
            deletion_guard=self.value("deletion guard", parse_fraction, DEFAULT_DELETION_GUARD),
        )

    def mode(self) -> Mode:
        mode = self.get("mode", parse_mode)
        push = self.entry("push only")
        pull = self.entry("pull only")
        push_on = push is not None and convert_entry(push, parse_bool, self.path)
        pull_on = pull is not None and convert_entry(pull, parse_bool, self.path)
        if push is not None and pull is not None and push_on and pull_on:
            raise self.error(f"'{push.written}' and '{pull.written}' cannot both be yes", push)
        for said, on, implied in ((push, push_on, "upload"), (pull, pull_on, "download")):
            if said is not None and on:
                if mode is not None and mode != implied:
                    raise self.error(f"'{said.written} = yes' means mode {implied}, but mode is {mode}", said)
                return "upload" if implied == "upload" else "download"
        return mode or "shared"

    def encryption(self) -> tuple[str | None, KeySource]:
        algorithm = self.get("encryption", parse_encryption)
        keys = self.get("passphrase", self.conv.key_source) or KeySource()
        if algorithm is not None and keys.key_file is None and keys.passphrase is None:
            entry = self.entry("encryption")
            assert entry is not None
            raise self.error("encryption is on but no 'passphrase' (or 'key') is set", entry)
        if algorithm is None and (keys.key_file or keys.passphrase):
            log.warning("%s [%s]: a passphrase is set but encryption is off; files are sent in clear",
                        self.path, self.name)
        return algorithm, keys

    def check_apart(self, local_path: str, relay_dir: str) -> None:
        """Refuse a file relay inside the local folder, or the other way round."""
        if os.path.commonpath([local_path, relay_dir]) in (local_path, relay_dir):
            raise self.error("the relay folder and the local path overlap (one is inside the other)",
                             "host directory")

    # -- the relay

    def pick(self, what: str, key: Entry | None, key_value: T | None, address: Entry | None,
             address_value: T | None, same: Callable[[T, T], bool] | None = None) -> T | None:
        """The value of ``what`` from its key or from the address, the more specific winning.

        A section beats a global default; within one scope, two different values are
        an error naming the key.
        """
        if key_value is None or key is None:
            return address_value
        if address_value is None or address is None:
            return key_value
        if (same or (lambda a, b: a == b))(key_value, address_value):
            return key_value
        if _level(key) != _level(address):
            return key_value if _level(key) > _level(address) else address_value
        raise self.error(
            f"the address ('{address.written}', line {address.line}) gives {what} "
            f"{address_value!r}, which contradicts this key",
            key,
        )

    def protocol(self, key: Entry | None, address: Entry | None) -> str:
        from_key = self.get("protocol", self.conv.protocol)
        scheme = None if address is None else convert_entry(address, address_scheme, self.path)
        if from_key is None and scheme is None:
            raise self.error(
                "no protocol: set 'protocol' (one of " + ", ".join(CONFIG_PROTOCOLS)
                + ") or write the address as protocol://host",
                "protocol",
            )
        if from_key is not None and scheme is not None and {from_key, scheme} <= _WEBDAV_FAMILY:
            # "webdav" says nothing of TLS; an http:// or https:// address does.
            if from_key == "webdav":
                return scheme
            if scheme == "webdav":
                return from_key
        result = self.pick("protocol", key, from_key, address, scheme)
        assert result is not None
        return result

    def relay(self) -> RelaySpec:
        proto_entry = self.entry("protocol")
        addr_entry = self.entry("host address")
        protocol = self.protocol(proto_entry, addr_entry)
        address = Address()
        if addr_entry is not None:
            address = convert_entry(addr_entry, lambda text: parse_address(text, protocol), self.path)
        dir_entry = self.entry("host directory")
        port_entry = self.entry("port")
        user_entry = self.entry("username")

        def same_dir(a: str, b: str) -> bool:
            return a.strip("/") == b.strip("/")

        directory = self.pick("directory", dir_entry, self.get("host directory", str.strip), addr_entry,
                              address.directory, same_dir)
        port = self.pick("port", port_entry, self.get("port", self.conv.port), addr_entry, address.port)
        username = self.pick("user", user_entry, self.get("username", str.strip), addr_entry,
                             address.username)
        password = self.password(username)
        if password is not None and password.username is not None and username is None:
            username = password.username
        keyfile = self.get("keyfile", self.conv.existing_file)
        ssh_key = self.get("ssh key", self.conv.existing_file)
        known_hosts = self.get("known hosts", self.conv.path)
        host: str | None = None
        remote: str | None = None
        if protocol == "file":
            if directory is None:
                raise self.error("protocol file needs 'host directory' (or a file:/// address)",
                                 "host directory")
            directory = self.conv.path(directory)
        elif protocol in RCLONE_FAMILY:
            remote = address.remote
            if remote is None:
                raise self.error(f"protocol {protocol} needs 'host address' naming the rclone remote"
                                 " (remote or remote:path)", "host address")
        elif protocol in NETWORK_PROTOCOLS:
            host = address.host
            if host is None:
                raise self.error(f"protocol {protocol} needs 'host address' (the server)", "host address")
            if protocol == "sftp":
                ssh_key = ssh_key or keyfile
                known_hosts = known_hosts or os.path.expanduser(DEFAULT_KNOWN_HOSTS)
        return RelaySpec(
            protocol=protocol,
            host=host,
            port=port,
            directory=directory or "",
            username=username,
            password=None if password is None else password.password,
            verify_ssl=self.value("verify ssl", parse_bool, True),
            ssl_version=self.get("ssl version", parse_ssl_version),
            certificate=self.get("certificate", self.conv.existing_file),
            keyfile=keyfile,
            ca_file=self.get("ca file", self.conv.existing_file),
            known_hosts=known_hosts,
            ssh_key=ssh_key,
            rclone_binary=self.value("rclone binary", self.conv.program, "rclone"),
            rclone_remote=remote,
            rclone_config=self.get("rclone config", self.conv.existing_file),
            timeout=self.value("timeout", parse_seconds, DEFAULT_TIMEOUT),
        )

    def password(self, username: str | None) -> Credential | None:
        entry = self.entry("password")
        if entry is None:
            return None
        function = self.conv.for_entry(entry)
        assert function is not None
        credential = convert_entry(entry, function, self.path)
        assert isinstance(credential, Credential)
        if credential.username is not None and username is not None and credential.username != username:
            raise self.error("the secret file holds a user name that differs from 'username'", entry)
        return credential
