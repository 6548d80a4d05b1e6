"""The table of configuration keys: canonical names, aliases, and where they may appear.

A key is written in any case and with any run of blanks between its words
(``Local  Path`` is ``local path``). Every alias of a key names the same setting:
two aliases of one key in one section are a duplicate. Lookup never guesses: an
unknown name is refused, and :func:`closest_key` gives the known name it most
resembles for the error message.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    """One setting: its canonical name, its aliases, and whether it is global-only."""

    name: str
    aliases: tuple[str, ...] = ()
    global_only: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


#: Keys allowed only before the first section.
GLOBAL_KEYS: tuple[Key, ...] = (
    Key("log file", global_only=True),
    Key("log rotate", global_only=True),
    Key("log level", global_only=True),
)

#: Keys of a client section; given before the first section, they are defaults for every section.
CLIENT_KEYS: tuple[Key, ...] = (
    Key("local path", ("path",)),
    Key("protocol"),
    Key("host address", ("relay address", "remote address", "address")),
    Key(
        "host directory",
        (
            "relay directory",
            "remote directory",
            "directory",
            "host dir",
            "relay dir",
            "remote dir",
            "dir",
            "host path",
            "relay path",
            "remote path",
        ),
    ),
    Key("port"),
    Key("username", ("user",)),
    Key("password", ("secret file", "credential")),
    Key("refresh"),
    Key("modification time", ("mtime", "timestamp")),
    Key("client name", ("client",)),
    Key("push only", ("read only",)),
    Key("pull only", ("write only",)),
    Key("encryption"),
    Key("passphrase", ("key",)),
    Key("certificate", ("certfile",)),
    Key("keyfile"),
    Key("ca file", ("cafile",)),
    Key("verify ssl"),
    Key("ssl version"),
    Key("file extension", ("file type",)),
    Key("include", ("include files", "pattern", "filter")),
    Key("exclude", ("exclude files",)),
    Key("include directories", ("include directory",)),
    Key("exclude directories", ("exclude directory",)),
    Key("disk quota"),
    Key("maintainer"),
    Key("mode", ("synchronization mode",)),
    Key("lock timeout"),
    Key("puller count", ("pullers",)),
    Key("checksum", ("hash algorithm",)),
    Key("checksum cache"),
    Key("index", ("compact",)),
    Key("maxpagesize", ("maxarchivesize",)),
    Key("priority"),
    # Added by escale (not in the historical user guide).
    Key("state directory"),
    Key("deletion guard"),
    Key("rclone binary"),
    Key("rclone config"),
    Key("known hosts"),
    Key("ssh key"),
    Key("timeout"),
)

ALL_KEYS: tuple[Key, ...] = GLOBAL_KEYS + CLIENT_KEYS

_BY_NAME: dict[str, Key] = {name: key for key in ALL_KEYS for name in key.names}
if len(_BY_NAME) != sum(len(key.names) for key in ALL_KEYS):  # pragma: no cover - table sanity
    raise AssertionError("a key name appears twice in the key table")

_BLANKS = re.compile(r"\s+")


def normalize(name: str) -> str:
    """``name`` lower-cased, stripped, with every run of blanks made one space."""
    return _BLANKS.sub(" ", name.strip()).lower()


def lookup(name: str) -> Key | None:
    """The key called ``name`` (any case, any spacing, any alias), or None if unknown."""
    return _BY_NAME.get(normalize(name))


def known_names() -> tuple[str, ...]:
    """Every accepted key name, aliases included, in table order."""
    return tuple(_BY_NAME)


def closest_key(name: str) -> str:
    """The known key name most similar to ``name`` (always one, however poor the match)."""
    wanted = normalize(name)
    match = difflib.get_close_matches(wanted, list(_BY_NAME), n=1, cutoff=0.0)
    return match[0] if match else "local path"
