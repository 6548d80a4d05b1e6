"""Where the configuration file is looked for when ``-c`` is not given."""

from __future__ import annotations

import os
from collections.abc import Sequence

from escale.errors import ConfigError

SYSTEM_CONFIG = "/etc/escale.conf"


def default_search_paths() -> list[str]:
    """The files tried, in order: the XDG one, the historical one, the system-wide one.

    ``$XDG_CONFIG_HOME/escale/escale.conf`` (``~/.config`` when the variable is
    unset, empty or not absolute), then ``~/.escale/escale.conf``, then
    ``/etc/escale.conf``. Computed on each call, since it depends on HOME.
    """
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(xdg):
        xdg = os.path.join(os.path.expanduser("~"), ".config")
    return [
        os.path.join(xdg, "escale", "escale.conf"),
        os.path.join(os.path.expanduser("~"), ".escale", "escale.conf"),
        SYSTEM_CONFIG,
    ]


def find_config(search_paths: Sequence[str] | None = None) -> str:
    """The first existing file of ``search_paths`` (default :func:`default_search_paths`).

    Raises ConfigError, saying how to create one, when none exists.
    """
    candidates = list(default_search_paths() if search_paths is None else search_paths)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(
        f"no configuration file found (looked for {', '.join(candidates)}); "
        "run 'escale -i' to create one, or pass '-c FILE'"
    )
