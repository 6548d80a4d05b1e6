"""Configuration text -> :class:`~escale.config.settings.Config`.

Lines before the first section are global: ``log file``, ``log rotate`` and
``log level`` (global only), and any client key, which then is the default of every
section (see :mod:`escale.config.client` for how the two combine).

An empty value (``key =``) means "not set": the built-in default applies, and a
global default is masked.

Every fault raises :class:`~escale.errors.ConfigError` (exit code 78) naming the
file, the section and the key, with the line number; a password or passphrase is
never part of a message. Nothing here writes anything.
"""

from __future__ import annotations

import os
from typing import Any

from escale.config.client import ClientBuilder
from escale.config.ini import IniFile, read_ini
from escale.config.keys import GLOBAL_KEYS, entry_value, lookup
from escale.config.locate import find_config
from escale.config.settings import Config, GlobalSettings
from escale.errors import ConfigError

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
    glob = _global_settings(ini)
    for entry in ini.globals.values():
        key = lookup(entry.key)
        if key is not None and not key.global_only and entry.value:
            entry_value(entry, path)  # a bad global default is reported once, as global
    clients = tuple(ClientBuilder(path, section, ini).build() for section in ini.sections)
    return Config(path=path, globals=glob, clients=clients)


def _global_settings(ini: IniFile) -> GlobalSettings:
    """The global-only keys, each set one copied to its field."""
    values: dict[str, Any] = {}
    for key in GLOBAL_KEYS:
        entry = ini.globals.get(key.name)
        if entry is not None and entry.value and key.field is not None:
            values[key.field] = entry_value(entry, ini.path)
    return GlobalSettings(**values)
