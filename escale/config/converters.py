"""Single values that depend on the file's folder: paths, secrets, key files.

:class:`Converters` holds one converter per client key (``table``); each takes a
value's text and returns its typed value, or raises
:class:`~escale.config.values.ValueProblem`. :func:`convert_entry` turns that into a
ConfigError at the entry's file, section, key and line. Secret files and key files
are read or checked here; no message repeats a password or passphrase.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from escale.config.address import CONFIG_PROTOCOLS, address_scheme
from escale.config.ini import Entry
from escale.config.values import (
    ValueProblem,
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
    resolve_path,
)
from escale.errors import ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")


def convert_entry(entry: Entry, function: Callable[[str], T], path: str) -> T:
    """``function(entry.value)``, a ValueProblem becoming a ConfigError at the entry."""
    try:
        return function(entry.value)
    except ValueProblem as exc:
        raise ConfigError(f"{exc} (line {entry.line})", path=path, section=entry.section,
                          key=entry.written) from None



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


class Converters:
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


