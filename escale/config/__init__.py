"""The configuration layer: INI file -> typed, frozen settings.

Public API:

* :func:`load_config` reads a file (or the first of :func:`default_search_paths`)
  and returns a :class:`Config`;
* :func:`parse_config` does the same from text already read;
* :func:`find_config` tells which file the search order picks;
* :func:`write_client_section` adds a client section to a file atomically;
* :func:`parse_address` reads a relay address (``protocol://user@host:port/path``);
* :func:`require_clients` and :func:`check_client_folders` are the start-up checks
  (see :mod:`escale.config.startup`).

Every fault is an :class:`~escale.errors.ConfigError` (exit code 78) naming the file,
section and key. The keys, types and defaults are described in
``doc/configuration.rst``.
"""

from __future__ import annotations

from escale.config.address import CONFIG_PROTOCOLS, Address, parse_address
from escale.config.locate import default_search_paths, find_config
from escale.config.parser import load_config, parse_config
from escale.config.settings import ClientSettings, Config, FileFilter, GlobalSettings
from escale.config.startup import check_client_folders, require_clients
from escale.config.writer import write_client_section

__all__ = [
    "CONFIG_PROTOCOLS",
    "Address",
    "ClientSettings",
    "Config",
    "FileFilter",
    "GlobalSettings",
    "check_client_folders",
    "default_search_paths",
    "find_config",
    "load_config",
    "parse_address",
    "parse_config",
    "require_clients",
    "write_client_section",
]
