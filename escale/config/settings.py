"""Typed, frozen settings: what the configuration layer hands to the rest.

Nothing below :mod:`escale.config` parses text; it receives these objects. All
sizes are in bytes, all durations in seconds, all paths absolute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from escale.errors import ConfigError
from escale.relay.spec import RelaySpec

Mode = Literal["shared", "upload", "download", "conservative"]
MODES: tuple[Mode, ...] = ("shared", "upload", "download", "conservative")

#: Encryption algorithms selectable by name; ``encryption = yes`` means RECOMMENDED.
ENCRYPTION_ALGORITHMS = (
    "aes-256-gcm",
    "chacha20-poly1305",
    "fernet",
    "blowfish",
    "blowfish.cryptography",
    "blowfish.blowfish",
)
RECOMMENDED_ALGORITHM = "aes-256-gcm"

DEFAULT_REFRESH = 10.0
DEFAULT_LOCK_TIMEOUT = 120.0
DEFAULT_MAXPAGESIZE = 1_000_000_000
DEFAULT_LOG_ROTATE = 3
DEFAULT_DELETION_GUARD = 0.5


@dataclass(frozen=True)
class FileFilter:
    """Which local files a client considers.

    ``extensions``: lower-case, without the dot; empty means any. ``include`` and
    ``exclude`` match file base names; ``include_dirs``/``exclude_dirs`` match
    folder paths relative to the local root (``/``-separated). Empty include
    lists mean "everything"; an exclude always wins over an include.
    """

    extensions: tuple[str, ...] = ()
    include: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = ()
    include_dirs: tuple[re.Pattern[str], ...] = ()
    exclude_dirs: tuple[re.Pattern[str], ...] = ()

    def accepts_file(self, relpath: str) -> bool:
        """Whether the file at ``relpath`` (relative, ``/``-separated) is synced."""
        folder, _, base = relpath.rpartition("/")
        if folder and not self.accepts_dir(folder):
            return False
        if self.extensions:
            ext = base.rpartition(".")[2].lower() if "." in base else ""
            if ext not in self.extensions:
                return False
        if self.include and not any(p.fullmatch(base) for p in self.include):
            return False
        return not any(p.fullmatch(base) for p in self.exclude)

    def accepts_dir(self, relpath: str) -> bool:
        """Whether files under folder ``relpath`` may be synced.

        ``include_dirs`` is tested against each leading part of the path (so that
        ``data`` admits ``data/run1``); ``exclude_dirs`` against every prefix.
        """
        parts = relpath.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(p.fullmatch(prefix) for p in self.exclude_dirs for prefix in prefixes):
            return False
        if self.include_dirs:
            return any(p.fullmatch(prefix) for p in self.include_dirs for prefix in prefixes)
        return True


@dataclass(frozen=True)
class ClientSettings:
    """One client: one configuration section, one local folder, one relay."""

    name: str
    local_path: str
    relay: RelaySpec
    mode: Mode = "shared"
    client_name: str = ""
    refresh: float = DEFAULT_REFRESH
    use_mtime: bool = True
    encryption: str | None = None
    key_file: str | None = None
    passphrase: str | None = field(default=None, repr=False)
    filters: FileFilter = field(default_factory=FileFilter)
    disk_quota: int | None = None
    maintainer: str | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    puller_count: int | None = None
    checksum: str | None = "sha256"
    checksum_cache: bool = True
    index: bool = False
    index_topdir: int | None = None
    maxpagesize: int = DEFAULT_MAXPAGESIZE
    priority: Literal["upload"] | None = None
    state_dir: str | None = None
    deletion_guard: float = DEFAULT_DELETION_GUARD

    @property
    def label(self) -> str:
        """The human name shown in logs and conflict copies."""
        return self.client_name or self.name

    @property
    def sends(self) -> bool:
        return self.mode != "download"

    @property
    def receives(self) -> bool:
        return self.mode != "upload"


@dataclass(frozen=True)
class GlobalSettings:
    """Keys before the first section."""

    log_file: str | None = None
    log_rotate: int = DEFAULT_LOG_ROTATE
    log_level: str = "INFO"


@dataclass(frozen=True)
class Config:
    """A whole configuration file: where it was read, globals, clients in file order."""

    path: str
    globals: GlobalSettings
    clients: tuple[ClientSettings, ...]

    def client(self, name: str) -> ClientSettings:
        """The client of section ``name``; raises ConfigError naming the file."""
        for client in self.clients:
            if client.name == name:
                return client
        known = ", ".join(c.name for c in self.clients) or "none"
        raise ConfigError(f"no section [{name}] (sections: {known})", path=self.path)
