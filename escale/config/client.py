"""One client section (plus the global defaults) -> :class:`ClientSettings`.

Each key's converter and field come from the key table (:mod:`escale.config.keys`);
this module holds the rules that combine keys.

A section's own value beats a global default. ``mode``, ``push only`` and
``pull only`` go together: a section setting any of them ignores the global ones.
Values from the address and from explicit keys are reconciled field by field (the
more specific scope wins; one scope contradicting itself is an error).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from escale.config.address import CONFIG_PROTOCOLS, NETWORK_PROTOCOLS, RCLONE_FAMILY, Address, parse_address
from escale.config.converters import Credential, KeySource, convert_entry
from escale.config.ini import Entry, IniFile, Section
from escale.config.keys import CLIENT_KEYS, entry_value, lookup
from escale.config.settings import ClientSettings, FileFilter, Mode
from escale.config.values import resolve_path
from escale.errors import ConfigError
from escale.relay.spec import RelaySpec

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_MODE_GROUP = frozenset({"mode", "push only", "pull only"})
_WEBDAV_FAMILY = frozenset({"webdav", "http", "https"})


def _global_only(name: str) -> bool:
    key = lookup(name)
    return key is not None and key.global_only


def _level(entry: Entry) -> int:
    """1 for a value written in the section, 0 for a global default."""
    return 0 if entry.section is None else 1


class ClientBuilder:
    """Builds the ClientSettings of one section from its entries and the global defaults.

    Every set key with a field in the key table (:mod:`escale.config.keys`) is
    copied there; the others are combined here: the relay's address parts, the
    mode shorthands, the passphrase and the index layout.
    """

    def __init__(self, path: str, section: Section, ini: IniFile) -> None:
        self.path = path
        self.name = section.name
        own = section.entries
        inherited = {key: entry for key, entry in ini.globals.items() if not _global_only(key)}
        if _MODE_GROUP & own.keys():
            inherited = {k: v for k, v in inherited.items() if k not in _MODE_GROUP}
        self.entries: dict[str, Entry] = {**inherited, **own}
        self.values: dict[str, Any] = {}

    # -- access

    def entry(self, key: str) -> Entry | None:
        """The entry in force for ``key``, or None when unset (absent or empty)."""
        entry = self.entries.get(key)
        return entry if entry is not None and entry.value else None

    def get(self, key: str) -> Any:
        """The value of ``key`` by its converter in the key table, converted once; None when unset."""
        if key not in self.values:
            entry = self.entry(key)
            self.values[key] = None if entry is None else entry_value(entry, self.path)
        return self.values[key]

    def error(self, message: str, key: str | Entry) -> ConfigError:
        """An error about this section, naming ``key`` (as written, when an entry)."""
        if isinstance(key, Entry):
            message = f"{message} (line {key.line})"
            key = key.written
        return ConfigError(message, path=self.path, section=self.name, key=key)

    # -- the whole

    def fields(self, owner: str) -> dict[str, Any]:
        """The value of every set key whose field is in ``owner`` ("" for ClientSettings
        itself, "relay", "filters"), by field name, converted in table order."""
        out: dict[str, Any] = {}
        for key in CLIENT_KEYS:
            if key.field is not None and self.entry(key.name) is not None:
                prefix, _, name = key.field.rpartition(".")
                if prefix == owner:
                    out[name] = self.get(key.name)
        return out

    def build(self) -> ClientSettings:
        """The settings; the rules run in this order, each converting the keys it reads,
        so that the first fault met is the one reported."""
        local_path: str | None = self.get("local path")
        if local_path is None:
            raise self.error("missing 'local path': the local folder to synchronise", "local path")
        relay = self.relay()
        if relay.protocol == "file":
            self.check_apart(local_path, relay.directory)
        keys = self.key_source(self.get("encryption"))
        index = self.get("index")
        mode = self.mode(self.get("mode"))
        own = self.fields("")
        if index is not None:
            own["index"], own["index_topdir"] = index
        if mode is not None:
            own["mode"] = mode
        settings = ClientSettings(name=self.name, relay=relay, filters=FileFilter(**self.fields("filters")),
                                  key_file=keys.key_file, passphrase=keys.passphrase, **own)
        self.check_kept_folders(settings)
        return settings

    def check_kept_folders(self, settings: ClientSettings) -> None:
        """The rules of ``after delivery``, ``holding folder`` and ``versions
        folder``: handoff only in ``upload`` mode (the only mode in which a file
        leaving the folder can never become a deletion on the relay), ``move``
        needs a holding folder, and neither folder may overlap the local folder
        (it would be synced itself)."""
        entry = self.entry("after delivery")
        if settings.after_delivery != "leave" and entry is not None:
            if settings.mode != "upload":
                raise self.error(f"'after delivery = {settings.after_delivery}' needs mode upload "
                                 f"(mode is {settings.mode})", entry)
            if settings.after_delivery == "move" and settings.holding_dir is None:
                raise self.error("'after delivery = move' needs 'holding folder'", entry)
        local = settings.local_path
        for key, folder in (("holding folder", settings.holding_dir), ("versions folder", settings.versions_dir)):
            if folder is not None and os.path.commonpath([local, folder]) in (local, folder):
                said = self.entry(key)
                raise self.error(f"the {key} and the local path overlap (one is inside the other)",
                                 said if said is not None else key)

    def mode(self, mode: Mode | None) -> Mode | None:
        """``mode`` as ``push only``/``pull only`` set it; an error when they contradict it."""
        push = self.entry("push only")
        pull = self.entry("pull only")
        push_on = bool(self.get("push only"))
        pull_on = bool(self.get("pull only"))
        if push is not None and pull is not None and push_on and pull_on:
            raise self.error(f"'{push.written}' and '{pull.written}' cannot both be yes", push)
        shorthands: tuple[tuple[Entry | None, bool, Mode], ...] = ((push, push_on, "upload"),
                                                                 (pull, pull_on, "download"))
        for said, on, implied in shorthands:
            if said is not None and on:
                if mode is not None and mode != implied:
                    raise self.error(f"'{said.written} = yes' means mode {implied}, but mode is {mode}", said)
                return implied
        return mode

    def key_source(self, algorithm: str | None) -> KeySource:
        """The key of encryption ``algorithm``: required when on, warned about when off."""
        keys: KeySource = self.get("passphrase") or KeySource()
        if algorithm is not None and keys.key_file is None and keys.passphrase is None:
            entry = self.entry("encryption")
            assert entry is not None
            raise self.error("encryption is on but no 'passphrase' (or 'key') is set", entry)
        if algorithm is None and (keys.key_file or keys.passphrase):
            log.warning("%s [%s]: a passphrase is set but encryption is off; files are sent in clear",
                        self.path, self.name)
        return keys

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
        from_key: str | None = self.get("protocol")
        scheme: str | None = self.get("host address")  # the scheme of protocol://...
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
        """The RelaySpec: the address keys reconciled, then the keys with a ``relay.`` field."""
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

        directory = self.pick("directory", dir_entry, self.get("host directory"), addr_entry,
                              address.directory, same_dir)
        port = self.pick("port", port_entry, self.get("port"), addr_entry, address.port)
        username = self.pick("user", user_entry, self.get("username"), addr_entry, address.username)
        password = self.password(username)
        if password is not None and password.username is not None and username is None:
            username = password.username
        given = self.fields("relay")
        self.verify_file(given)
        host: str | None = None
        remote: str | None = None
        if protocol == "file":
            if directory is None:
                raise self.error("protocol file needs 'host directory' (or a file:/// address)",
                                 "host directory")
            directory = resolve_path(directory, os.path.dirname(self.path))
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
                given["ssh_key"] = given.get("ssh_key") or given.get("keyfile")
                given["known_hosts"] = given.get("known_hosts") or os.path.expanduser(DEFAULT_KNOWN_HOSTS)
        return RelaySpec(protocol=protocol, host=host, port=port, directory=directory or "", username=username,
                         password=None if password is None else password.password, rclone_remote=remote,
                         **given)

    def verify_file(self, given: dict[str, Any]) -> None:
        """``verify ssl = FILE``: verify, trusting the CA file FILE (as ``ca file`` does).

        Rewrites ``given`` (the relay fields) so that ``verify_ssl`` is a boolean;
        a ``ca file`` naming another file as well is refused.
        """
        verify = given.get("verify_ssl")
        if not isinstance(verify, str):
            return
        ca_file = given.get("ca_file")
        if ca_file is not None and ca_file != verify:
            entry = self.entry("verify ssl")
            raise self.error("'verify ssl' names a CA file and 'ca file' names another; keep one",
                             entry if entry is not None else "verify ssl")
        given["verify_ssl"] = True
        given["ca_file"] = verify

    def password(self, username: str | None) -> Credential | None:
        entry = self.entry("password")
        credential: Credential | None = self.get("password")
        if entry is None or credential is None:
            return None
        if credential.username is not None and username is not None and credential.username != username:
            raise self.error("the secret file holds a user name that differs from 'username'", entry)
        return credential
