"""The one table of configuration keys: each key's names, converter and settings field.

Every key is declared once, in :data:`ALL_KEYS`, and everything else derives from
it: the INI reader accepts and canonicalises names with :func:`lookup`, the parser
converts values with each key's converter (:func:`entry_value`), the client builder
copies each value to the key's field, ``tests/config/test_docs.py`` checks that
every name is documented, and the wizard takes its checks, defaults and path keys
from here. A key's default is the default of its field in the settings dataclasses
(:mod:`escale.config.settings`, :class:`~escale.relay.spec.RelaySpec`).

A key is written in any case and with any run of blanks between its words
(``Local  Path`` is ``local path``). Every alias of a key names the same setting:
two aliases of one key in one section are a duplicate. Lookup never guesses: an
unknown name is refused, and :func:`closest_key` gives the known name it most
resembles for the error message.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from escale.config.address import address_scheme, parse_protocol
from escale.config.converters import (
    Converter,
    Origin,
    convert_entry,
    credential,
    existing_file,
    key_source,
    path,
    program,
    pure,
    verify_setting,
)
from escale.config.settings import MAX_TRANSFERS, ClientSettings, FileFilter, GlobalSettings
from escale.config.values import (
    parse_after_delivery,
    parse_bool,
    parse_checksum,
    parse_delivered_when,
    parse_encryption,
    parse_extensions,
    parse_fraction,
    parse_hook_timeout,
    parse_index,
    parse_int,
    parse_keep_versions,
    parse_lock_timeout,
    parse_log_level,
    parse_mode,
    parse_patterns,
    parse_priority,
    parse_refresh,
    parse_seconds,
    parse_size,
    parse_ssh_client,
    parse_ssl_version,
    parse_timeout,
)
from escale.relay.spec import RelaySpec

if TYPE_CHECKING:
    from escale.config.ini import Entry


@dataclass(frozen=True)
class Key:
    """One setting: its names, how its text is converted, and where its value goes.

    ``field`` names the settings field the converted value is copied to: a field of
    :class:`ClientSettings`, ``relay.NAME`` of its RelaySpec or ``filters.NAME`` of
    its FileFilter, or, for a ``global_only`` key, a field of GlobalSettings. It is
    None for a key the client builder combines with others
    (:class:`escale.config.client.ClientBuilder`): the relay's address parts, the
    mode shorthands, the passphrase and the index layout.
    """

    name: str
    convert: Converter
    field: str | None
    aliases: tuple[str, ...] = ()
    global_only: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def default(self) -> Any:
        """The value in force when the key is not set: its field's default (None without one)."""
        if self.field is None:
            return None
        found = _settings_field(self)
        if found.default is not dataclasses.MISSING:
            return found.default
        if found.default_factory is not dataclasses.MISSING:
            return found.default_factory()
        return None

    def read(self, text: str, origin: Origin | None = None) -> Any:
        """``text`` converted as this key's value, written under its canonical name in a
        file of the current folder unless ``origin`` says otherwise. Raises ValueProblem."""
        return self.convert(text, origin or Origin(os.getcwd(), self.name))


#: Keys allowed only before the first section.
GLOBAL_KEYS: tuple[Key, ...] = (
    Key("log file", path, "log_file", global_only=True),
    Key("log rotate", pure(partial(parse_int, minimum=0)), "log_rotate", global_only=True),
    Key("log level", pure(parse_log_level), "log_level", global_only=True),
)

#: Keys of a client section; given before the first section, they are defaults for every section.
#: Their order is the order in which the client builder checks a section's values.
CLIENT_KEYS: tuple[Key, ...] = (
    Key("local path", path, "local_path", ("path",)),
    # The relay and how to reach it.
    Key("protocol", pure(parse_protocol), None),
    Key("host address", pure(address_scheme), None, ("relay address", "remote address", "address")),
    Key("host directory", pure(str.strip), None, (
        "relay directory", "remote directory", "directory", "host dir", "relay dir", "remote dir", "dir",
        "host path", "relay path", "remote path",
    )),
    Key("port", pure(partial(parse_int, minimum=1, maximum=65535)), None),
    Key("username", pure(str.strip), None, ("user",)),
    Key("password", credential, None, ("secret file", "credential")),
    Key("keyfile", existing_file, "relay.keyfile"),
    Key("ssh key", existing_file, "relay.ssh_key"),
    Key("known hosts", path, "relay.known_hosts"),
    Key("ssh client", pure(parse_ssh_client), "relay.ssh_client"),
    Key("verify ssl", verify_setting, "relay.verify_ssl"),  # a CA file path also sets relay.ca_file
    Key("ssl version", pure(parse_ssl_version), "relay.ssl_version"),
    Key("certificate", existing_file, "relay.certificate", ("certfile",)),
    Key("ca file", existing_file, "relay.ca_file", ("cafile",)),
    Key("rclone binary", program, "relay.rclone_binary"),
    Key("rclone config", existing_file, "relay.rclone_config"),
    Key("timeout", pure(parse_timeout), "relay.timeout"),
    # What goes on the relay, and how.
    Key("encryption", pure(parse_encryption), "encryption"),
    Key("passphrase", key_source, None, ("key",)),
    Key("index", pure(parse_index), None, ("compact",)),
    Key("checksum", pure(parse_checksum), "checksum", ("hash algorithm",)),
    # What is synced, and when.
    Key("mode", pure(parse_mode), "mode", ("synchronization mode",)),
    Key("push only", pure(parse_bool), None, ("read only",)),
    Key("pull only", pure(parse_bool), None, ("write only",)),
    Key("client name", pure(str.strip), "client_name", ("client",)),
    Key("refresh", pure(parse_refresh), "refresh"),
    Key("modification time", pure(parse_bool), "use_mtime", ("mtime", "timestamp")),
    Key("file extension", pure(parse_extensions), "filters.extensions", ("file type",)),
    Key("include", pure(parse_patterns), "filters.include", ("include files", "pattern", "filter")),
    Key("exclude", pure(parse_patterns), "filters.exclude", ("exclude files",)),
    Key("include directories", pure(parse_patterns), "filters.include_dirs", ("include directory",)),
    Key("exclude directories", pure(parse_patterns), "filters.exclude_dirs", ("exclude directory",)),
    # Limits, roles and safety.
    Key("disk quota", pure(parse_size), "disk_quota"),
    Key("maintainer", pure(str.strip), "maintainer"),
    Key("lock timeout", pure(parse_lock_timeout), "lock_timeout"),
    Key("puller count", pure(partial(parse_int, minimum=1)), "puller_count", ("pullers",)),
    Key("checksum cache", pure(parse_bool), "checksum_cache"),
    Key("maxpagesize", pure(parse_size), "maxpagesize", ("maxarchivesize",)),
    Key("priority", pure(parse_priority), "priority"),
    Key("state directory", path, "state_dir"),
    Key("deletion guard", pure(parse_fraction), "deletion_guard"),
    Key("stale receiver", pure(parse_seconds), "stale_receiver", ("receiver timeout",)),
    Key("bandwidth limit", pure(parse_size), "bandwidth_limit", ("bandwidth",)),
    Key("transfers", pure(partial(parse_int, minimum=1, maximum=MAX_TRANSFERS)), "transfers"),
    Key("watch", pure(parse_bool), "watch", ("watch mode",)),
    Key("watch delay", pure(partial(parse_seconds, maximum=3600.0)), "watch_delay"),
    # Versions kept, handoff after delivery, hook (doc/guide.rst).
    Key("keep versions", pure(parse_keep_versions), "keep_versions"),
    Key("keep versions size", pure(parse_size), "keep_versions_size"),
    Key("versions folder", path, "versions_dir", ("versions directory",)),
    Key("after delivery", pure(parse_after_delivery), "after_delivery"),
    Key("holding folder", path, "holding_dir", ("holding directory",)),
    Key("delivered when", pure(parse_delivered_when), "delivered_when"),
    Key("hook", program, "hook"),
    Key("hook timeout", pure(parse_hook_timeout), "hook_timeout"),
)

ALL_KEYS: tuple[Key, ...] = GLOBAL_KEYS + CLIENT_KEYS

#: Client keys whose value is a path relative to the configuration file's folder.
PATH_KEYS = frozenset(k.name for k in CLIENT_KEYS if k.convert in (path, existing_file))
#: Client keys whose value is a file when it names one (relative to that folder), else a value
#: (the secret itself; for ``verify ssl``, a boolean).
FILE_OR_VALUE_KEYS = frozenset(k.name for k in CLIENT_KEYS if k.convert in (credential, key_source, verify_setting))
#: Client keys naming a program: a path (relative to that folder) when it holds ``/``.
PROGRAM_KEYS = frozenset(k.name for k in CLIENT_KEYS if k.convert is program)

_BY_NAME: dict[str, Key] = {name: key for key in ALL_KEYS for name in key.names}
_OWNERS: dict[str, Any] = {"": ClientSettings, "relay": RelaySpec, "filters": FileFilter}


def _settings_field(key: Key) -> dataclasses.Field[Any]:
    """The dataclass field ``key.field`` names (KeyError when none)."""
    assert key.field is not None
    owner, _, name = key.field.rpartition(".")
    fields = dataclasses.fields(GlobalSettings if key.global_only else _OWNERS[owner])
    return {f.name: f for f in fields}[name]


def _check_table() -> None:
    """Each name once; each field a real one, set by one key only."""
    if len(_BY_NAME) != sum(len(key.names) for key in ALL_KEYS):
        raise AssertionError("a key name appears twice in the key table")
    targets = [(key.global_only, key.field) for key in ALL_KEYS if key.field is not None]
    if len(set(targets)) != len(targets):
        raise AssertionError("two keys of the key table set one field")
    for key in ALL_KEYS:
        if key.field is not None:
            _settings_field(key)


_check_table()

_BLANKS = re.compile(r"\s+")


def normalize(name: str) -> str:
    """``name`` lower-cased, stripped, with every run of blanks made one space."""
    return _BLANKS.sub(" ", name.strip()).lower()


def lookup(name: str) -> Key | None:
    """The key called ``name`` (any case, any spacing, any alias), or None if unknown."""
    return _BY_NAME.get(normalize(name))


def key_named(name: str) -> Key:
    """The key called ``name`` (as :func:`lookup`); KeyError when there is none."""
    found = lookup(name)
    if found is None:
        raise KeyError(name)
    return found


def closest_key(name: str) -> str:
    """The known key name most similar to ``name`` (always one, however poor the match)."""
    wanted = normalize(name)
    match = difflib.get_close_matches(wanted, list(_BY_NAME), n=1, cutoff=0.0)
    return match[0] if match else "local path"


def entry_value(entry: Entry, config_path: str) -> Any:
    """The typed value of ``entry`` of the file at ``config_path``, by its key's converter.

    A bad value raises ConfigError naming the file, section, key (as written) and line.
    """
    converter = _BY_NAME[entry.key].convert
    origin = Origin(os.path.dirname(config_path), entry.written)
    return convert_entry(entry, lambda text: converter(text, origin), config_path)
