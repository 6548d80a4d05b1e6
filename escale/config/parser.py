"""Configuration text -> :class:`~escale.config.settings.Config`.

Lines before the first section are global: ``log file``, ``log rotate`` and
``log level`` (global only), and any client key, which then is the default of every
section. A section's own value always beats a global default; two values of the
same scope that contradict each other (``protocol = sftp`` with an ``ftp://``
address in the same section) are an error. ``mode``, ``push only`` and ``pull only``
go together: a section that sets any of them ignores the global ones.

An empty value (``key =``) means "not set": the built-in default applies, and a
global default is masked.

Every fault raises :class:`~escale.errors.ConfigError` (exit code 78) naming the
file, the section and the key, with the line number; a password or passphrase is
never part of a message. Nothing here writes anything.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from escale.config.address import (
    CONFIG_PROTOCOLS,
    NETWORK_PROTOCOLS,
    RCLONE_FAMILY,
    Address,
    address_scheme,
    parse_address,
)
from escale.config.ini import Entry, IniFile, Section, read_ini
from escale.config.locate import find_config
from escale.config.settings import (
    DEFAULT_DELETION_GUARD,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_LOG_ROTATE,
    DEFAULT_MAXPAGESIZE,
    DEFAULT_REFRESH,
    ClientSettings,
    Config,
    FileFilter,
    GlobalSettings,
    Mode,
)
from escale.config.values import (
    ValueProblem,
    parse_bool,
    parse_checksum,
    parse_encryption,
    parse_extensions,
    parse_fraction,
    parse_index,
    parse_int,
    parse_log_level,
    parse_mode,
    parse_patterns,
    parse_seconds,
    parse_size,
    parse_ssl_version,
    resolve_path,
)
from escale.errors import ConfigError
from escale.relay.spec import RelaySpec

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_TIMEOUT = 30.0
_MODE_GROUP = frozenset({"mode", "push only", "pull only"})
_WEBDAV_FAMILY = frozenset({"webdav", "http", "https"})


# ----------------------------------------------------------------------------- reading


def load_config(path: str | None = None, *, search_paths: list[str] | None = None) -> Config:
    """Read and parse the configuration file ``path``.

    With ``path`` None, the first existing file of the search order is read (see
    :func:`~escale.config.locate.find_config`; ``search_paths`` replaces the default
    list). Raises ConfigError when no file is found, the file cannot be read or is
    not UTF-8, or its content is invalid.
    """
    if path is None:
        path = find_config(search_paths)
    path = os.path.abspath(os.path.expanduser(path))
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError("configuration file not found (run 'escale -i' to create one)", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("the configuration file is not UTF-8 text", path=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the configuration file: {exc.strerror or exc}", path=path) from None
    return parse_config(text, path)


def parse_config(text: str, path: str) -> Config:
    """Parse configuration ``text`` read from file ``path``.

    ``path`` names the file in error messages, and its folder is the base of
    relative paths. Secret files and key files named in the text are looked at
    (existence, content); nothing is written. A text without sections is valid and
    defines no client.
    """
    path = os.path.abspath(path)
    ini = read_ini(text, path)
    converters = _Converters(os.path.dirname(path))
    glob = _global_settings(ini, converters)
    for entry in ini.globals.values():
        function = converters.for_entry(entry)
        if function is not None and entry.value:
            _convert(entry, function, path)  # a bad global default is reported once, as global
    clients = tuple(_ClientBuilder(path, section, ini, converters).build() for section in ini.sections)
    return Config(path=path, globals=glob, clients=clients)


def _convert(entry: Entry, function: Callable[[str], T], path: str) -> T:
    """``function(entry.value)``, a ValueProblem becoming a ConfigError at the entry."""
    try:
        return function(entry.value)
    except ValueProblem as exc:
        raise ConfigError(f"{exc} (line {entry.line})", path=path, section=entry.section,
                          key=entry.written) from None


def _global_settings(ini: IniFile, conv: _Converters) -> GlobalSettings:
    def value(key: str, function: Callable[[str], T], default: T) -> T:
        entry = ini.globals.get(key)
        return _convert(entry, function, ini.path) if entry and entry.value else default

    return GlobalSettings(
        log_file=value("log file", conv.path, None),
        log_rotate=value("log rotate", lambda text: parse_int(text, minimum=0), DEFAULT_LOG_ROTATE),
        log_level=value("log level", parse_log_level, "INFO"),
    )


# ----------------------------------------------------------------------------- single values


@dataclass(frozen=True)
class Credential:
    """What ``password``/``secret file``/``credential`` gave: a password, maybe a user."""

    password: str
    username: str | None = None


@dataclass(frozen=True)
class KeySource:
    """What ``passphrase``/``key`` gave: a key file path or the passphrase itself."""

    key_file: str | None = None
    passphrase: str | None = None


def _warn_if_shared(path: str, what: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s %s can be read by other users; restrict it with chmod 600", what, path)


class _Converters:
    """The converters that depend on the configuration file's folder."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        seconds = parse_seconds
        self.table: dict[str, Callable[[str], object]] = {
            "local path": self.path,
            "protocol": self.protocol,
            "host address": address_scheme,
            "host directory": str.strip,
            "port": self.port,
            "username": str.strip,
            "refresh": seconds,
            "modification time": parse_bool,
            "client name": str.strip,
            "push only": parse_bool,
            "pull only": parse_bool,
            "encryption": parse_encryption,
            "certificate": self.existing_file,
            "keyfile": self.existing_file,
            "ca file": self.existing_file,
            "verify ssl": parse_bool,
            "ssl version": parse_ssl_version,
            "file extension": parse_extensions,
            "include": parse_patterns,
            "exclude": parse_patterns,
            "include directories": parse_patterns,
            "exclude directories": parse_patterns,
            "disk quota": parse_size,
            "maintainer": str.strip,
            "mode": parse_mode,
            "lock timeout": seconds,
            "puller count": lambda text: parse_int(text, minimum=1),
            "checksum": parse_checksum,
            "checksum cache": parse_bool,
            "index": parse_index,
            "maxpagesize": parse_size,
            "priority": self.priority,
            "state directory": self.path,
            "deletion guard": parse_fraction,
            "rclone binary": self.program,
            "rclone config": self.existing_file,
            "known hosts": self.path,
            "ssh key": self.existing_file,
            "timeout": seconds,
        }

    def for_entry(self, entry: Entry) -> Callable[[str], object] | None:
        """The converter of ``entry``'s value; None for a global-only key."""
        if entry.key == "password":
            must_be_file = entry.written != "password"
            return lambda text: self.credential(text, must_be_file=must_be_file)
        if entry.key == "passphrase":
            return self.key_source
        return self.table.get(entry.key)

    def path(self, text: str) -> str:
        return resolve_path(text, self.base_dir)

    def existing_file(self, text: str) -> str:
        path = self.path(text)
        if not os.path.isfile(path):
            raise ValueProblem(f"file not found: {path}")
        return path

    def program(self, text: str) -> str:
        """A command name looked up in PATH, or a path when it holds ``/`` or starts with ``~``."""
        text = text.strip()
        return self.path(text) if "/" in text or text.startswith("~") else text

    @staticmethod
    def protocol(text: str) -> str:
        word = text.strip().lower()
        if word not in CONFIG_PROTOCOLS:
            raise ValueProblem(f"unknown protocol {text.strip()!r}; known: {', '.join(CONFIG_PROTOCOLS)}")
        return word

    @staticmethod
    def port(text: str) -> int:
        return parse_int(text, minimum=1, maximum=65535)

    @staticmethod
    def priority(text: str) -> Literal["upload"]:
        if text.strip().lower() != "upload":
            raise ValueProblem(f"priority accepts only 'upload', got {text.strip()!r}")
        return "upload"

    def _candidate(self, text: str) -> str | None:
        """The absolute path ``text`` would name, or None if it cannot be a path."""
        try:
            path = self.path(text)
            return path if os.path.isfile(path) else None
        except (ValueError, OSError):  # embedded NUL, name too long
            return None

    def key_source(self, text: str) -> KeySource:
        """A key file when ``text`` names an existing file; else the passphrase itself.

        A value that looks like a path (holds ``/`` or starts with ``~``) but names
        no file is an error rather than a passphrase: it is most likely a mistyped
        path. The message never repeats the value.
        """
        value = text.strip()
        path = self._candidate(value)
        if path is not None:
            if not os.access(path, os.R_OK):
                raise ValueProblem("key file not readable (permission denied)")
            _warn_if_shared(path, "key file")
            return KeySource(key_file=path)
        if "/" in value or value.startswith("~"):
            raise ValueProblem(
                "key file not found (a value holding '/' or starting with '~' is read as a path;"
                " a passphrase like that must be put in a file)"
            )
        return KeySource(passphrase=value)

    def credential(self, text: str, *, must_be_file: bool) -> Credential:
        """A password, read from the file ``text`` names if there is one.

        The file holds one line: ``password`` or ``user:password``. With
        ``must_be_file`` (``secret file``, ``credential``) a missing or unreadable
        file is an error; otherwise (``password``) a value naming no file is the
        password itself. No message repeats the value or the file's content.
        """
        value = text.strip()
        path = self._candidate(value)
        if path is None:
            if must_be_file:
                raise ValueProblem(
                    "secret file not found (this key names a file; give a password itself with 'password')"
                )
            return Credential(password=value)
        try:
            with open(path, encoding="utf-8") as handle:
                content = handle.read()
        except UnicodeDecodeError:
            raise ValueProblem(f"secret file {path} is not UTF-8 text") from None
        except OSError as exc:
            raise ValueProblem(f"cannot read secret file {path}: {exc.strerror or 'error'}") from None
        _warn_if_shared(path, "secret file")
        lines = [line for line in content.splitlines() if line.strip()]
        if len(lines) != 1:
            raise ValueProblem(f"secret file {path} must hold exactly one line: password or user:password")
        line = lines[0].strip()
        user, colon, password = line.partition(":")
        if not colon:
            return Credential(password=line)
        if not user or not password:
            raise ValueProblem(f"secret file {path}: expected user:password with both parts non-empty")
        return Credential(password=password, username=user)


# ----------------------------------------------------------------------------- one client


def _level(entry: Entry) -> int:
    """1 for a value written in the section, 0 for a global default."""
    return 0 if entry.section is None else 1


class _ClientBuilder:
    """Builds the ClientSettings of one section from its entries and the global defaults."""

    def __init__(self, path: str, section: Section, ini: IniFile, conv: _Converters) -> None:
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
        return None if entry is None else _convert(entry, function, self.path)

    def value(self, key: str, function: Callable[[str], T], default: T) -> T:
        entry = self.entry(key)
        return default if entry is None else _convert(entry, function, self.path)

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
        push_on = push is not None and _convert(push, parse_bool, self.path)
        pull_on = pull is not None and _convert(pull, parse_bool, self.path)
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
        scheme = None if address is None else _convert(address, address_scheme, self.path)
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
            address = _convert(addr_entry, lambda text: parse_address(text, protocol), self.path)
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
        credential = _convert(entry, function, self.path)
        assert isinstance(credential, Credential)
        if credential.username is not None and username is not None and credential.username != username:
            raise self.error("the secret file holds a user name that differs from 'username'", entry)
        return credential
