"""Converters that need more than the text: the file's folder, or the key as written.

A converter takes a value's text and an :class:`Origin` and returns the typed
value, or raises :class:`~escale.config.values.ValueProblem`; :func:`pure` makes
one of a function of the text alone. :func:`convert_entry` turns a ValueProblem
into a ConfigError at the entry's file, section, key and line. Secret files and key
files are read or checked here; no message repeats a password or passphrase. Which
key uses which converter is stated once, in :mod:`escale.config.keys`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from escale.config.values import ValueProblem, parse_bool, resolve_path
from escale.errors import ConfigError

if TYPE_CHECKING:
    from escale.config.ini import Entry

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Origin:
    """Where a value was written: the configuration file's folder, and the key's name as spelled."""

    folder: str
    written: str


#: A key's converter: the value's text and its origin in, the typed value out.
Converter = Callable[[str, Origin], Any]


def pure(function: Callable[[str], object]) -> Converter:
    """``function`` (of the text alone) as a converter."""

    def convert(text: str, _origin: Origin) -> object:
        return function(text)

    return convert


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


def path(text: str, origin: Origin) -> str:
    """A path, relative to the configuration file's folder."""
    return resolve_path(text, origin.folder)


def existing_file(text: str, origin: Origin) -> str:
    """A path (see :func:`path`) that names an existing file."""
    found = path(text, origin)
    if not os.path.isfile(found):
        raise ValueProblem(f"file not found: {found}")
    return found


def verify_setting(text: str, origin: Origin) -> bool | str:
    """``verify ssl``: a boolean, or the path of a CA file (PEM) to verify against.

    A path (relative to the configuration file's folder) means "verify, trusting
    this file": it must name an existing file. A value that is neither a boolean
    nor an existing file is refused, with both readings in the message.
    """
    try:
        return parse_bool(text)
    except ValueProblem:
        pass
    found = path(text, origin)
    if not os.path.isfile(found):
        raise ValueProblem(
            f"expected yes, no or the path of a CA certificate file (PEM); no such file: {found}"
        )
    if not os.access(found, os.R_OK):
        raise ValueProblem(f"CA certificate file not readable (permission denied): {found}")
    return found


def program(text: str, origin: Origin) -> str:
    """A command name looked up in PATH, or a path when it holds ``/`` or starts with ``~``."""
    text = text.strip()
    return path(text, origin) if "/" in text or text.startswith("~") else text


def _candidate(text: str, origin: Origin) -> str | None:
    """The absolute path ``text`` would name, or None if it names no file."""
    try:
        found = path(text, origin)
        return found if os.path.isfile(found) else None
    except (ValueError, OSError):  # embedded NUL, name too long
        return None


def key_source(text: str, origin: Origin) -> KeySource:
    """A key file when ``text`` names an existing file; else the passphrase itself.

    A value that looks like a path (holds ``/`` or starts with ``~``) but names
    no file is an error rather than a passphrase: it is most likely a mistyped
    path. The message never repeats the value.
    """
    value = text.strip()
    found = _candidate(value, origin)
    if found is not None:
        if not os.access(found, os.R_OK):
            raise ValueProblem("key file not readable (permission denied)")
        _warn_if_shared(found, "key file")
        return KeySource(key_file=found)
    if "/" in value or value.startswith("~"):
        raise ValueProblem(
            "key file not found (a value holding '/' or starting with '~' is read as a path;"
            " a passphrase like that must be put in a file)"
        )
    return KeySource(passphrase=value)


def credential(text: str, origin: Origin) -> Credential:
    """A password, read from the file ``text`` names if there is one.

    The file holds one line: ``password`` or ``user:password``. Written as
    ``secret file`` or ``credential``, the value must name a readable file;
    written as ``password``, a value naming no file is the password itself. No
    message repeats the value or the file's content.
    """
    value = text.strip()
    found = _candidate(value, origin)
    if found is None:
        if origin.written != "password":
            raise ValueProblem(
                "secret file not found (this key names a file; give a password itself with 'password')"
            )
        return Credential(password=value)
    try:
        with open(found, encoding="utf-8") as handle:
            content = handle.read()
    except UnicodeDecodeError:
        raise ValueProblem(f"secret file {found} is not UTF-8 text") from None
    except OSError as exc:
        raise ValueProblem(f"cannot read secret file {found}: {exc.strerror or 'error'}") from None
    _warn_if_shared(found, "secret file")
    lines = [line for line in content.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ValueProblem(f"secret file {found} must hold exactly one line: password or user:password")
    line = lines[0].strip()
    user, colon, password = line.partition(":")
    if not colon:
        return Credential(password=line)
    if not user or not password:
        raise ValueProblem(f"secret file {found}: expected user:password with both parts non-empty")
    return Credential(password=password, username=user)
