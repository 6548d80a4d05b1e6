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


def mode_sends(mode: Mode) -> bool:
    """Whether a client in ``mode`` sends its local files to the relay: every
    mode but ``download``. The one statement of this rule (the planner's
    per-file access modifiers override it)."""
    return mode != "download"


def mode_receives(mode: Mode) -> bool:
    """Whether a client in ``mode`` writes relay versions into its local folder
    (and so is a receiver others wait for): every mode but ``upload``. The one
    statement of this rule (the planner's per-file access modifiers override it)."""
    return mode != "upload"


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
#: ``stale receiver``: 7 days without a sign of life
DEFAULT_STALE_RECEIVER = 7 * 86400.0
#: ``watch delay``: quiet seconds after the last local change before a watch-mode pass
DEFAULT_WATCH_DELAY = 1.0
#: ``keep versions``: 30 days
DEFAULT_KEEP_VERSIONS = 30 * 86400.0
#: ``hook timeout``: seconds a hook may run before it is killed
DEFAULT_HOOK_TIMEOUT = 60.0
#: ``transfers``: payloads moved at once on network relays (rclone's default too)
DEFAULT_TRANSFERS = 4
#: the most ``transfers`` accepted (each is one more connection to the server)
MAX_TRANSFERS = 64

AfterDelivery = Literal["leave", "move", "delete"]
DeliveredWhen = Literal["acknowledged", "sent"]


#: folder decisions a FileFilter keeps (bounds its memory on huge trees)
_FOLDERS_KEPT = 100_000


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

    def __post_init__(self) -> None:
        # what accepts_file needs beyond the fields: whether the filter takes
        # everything, and the folders decided so far (a pure function of the
        # fields, asked once per file and pass: kept, up to _FOLDERS_KEPT)
        object.__setattr__(self, "_everything", not (self.extensions or self.include or self.exclude
                                                     or self.include_dirs or self.exclude_dirs))
        object.__setattr__(self, "_folders", {})

    def accepts_file(self, relpath: str) -> bool:
        """Whether the file at ``relpath`` (relative, ``/``-separated) is synced."""
        if self._everything:  # type: ignore[attr-defined]
            return True
        folder, _, base = relpath.rpartition("/")
        if folder:
            folders: dict[str, bool] = self._folders  # type: ignore[attr-defined]
            accepted = folders.get(folder)
            if accepted is None:
                if len(folders) >= _FOLDERS_KEPT:
                    folders.clear()
                accepted = folders[folder] = self.accepts_dir(folder)
            if not accepted:
                return False
        if self.extensions:
            ext = base.rpartition(".")[2].lower() if "." in base else ""
            if ext not in self.extensions:
                return False
        if self.include and not any(p.fullmatch(base) for p in self.include):
            return False
        return not any(p.fullmatch(base) for p in self.exclude)

    def excludes_dir(self, relpath: str) -> bool:
        """Whether folder ``relpath`` (relative, ``/``-separated) is excluded by ``exclude_dirs``.

        A pattern excludes the folder when it matches in full, for the folder or
        any folder above it, either its path from the root (``docs/cache``
        excludes ``docs/cache`` and ``docs/cache/old``, not ``x/docs/cache``) or
        its name alone (``cache`` excludes ``cache``, ``docs/cache`` and
        ``a/b/cache/c``, but not ``cached``). A name holds no ``/``, so a pattern
        written with a ``/`` only ever matches paths from the root.
        """
        if not self.exclude_dirs:
            return False
        parts = relpath.split("/")
        for depth, name in enumerate(parts):
            prefix = "/".join(parts[: depth + 1])
            if any(p.fullmatch(prefix) or p.fullmatch(name) for p in self.exclude_dirs):
                return True
        return False

    def accepts_dir(self, relpath: str) -> bool:
        """Whether files under folder ``relpath`` may be synced.

        ``exclude_dirs`` as :meth:`excludes_dir` says; ``include_dirs`` is tested
        against each leading part of the path (so that ``data`` admits
        ``data/run1``).
        """
        if self.excludes_dir(relpath):
            return False
        parts = relpath.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
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
    stale_receiver: float = DEFAULT_STALE_RECEIVER
    #: ``bandwidth limit``: bytes per second through the relay (None: no limit)
    bandwidth_limit: int | None = None
    #: ``transfers``: payloads downloaded or uploaded at once, one connection
    #: each, on network relays (escale.sync.transfers)
    transfers: int = DEFAULT_TRANSFERS
    #: the daemon watches the local folder (inotify) besides its periodic pass
    watch: bool = True
    watch_delay: float = DEFAULT_WATCH_DELAY
    #: versions kept (escale.sync.trash): seconds a replaced or deleted file is
    #: kept (0: none kept), total bytes kept (None: no limit), where (None:
    #: ``<state dir>/versions``)
    keep_versions: float = DEFAULT_KEEP_VERSIONS
    keep_versions_size: int | None = None
    versions_dir: str | None = None
    #: handoff (escale.sync.handoff), ``upload`` mode only
    after_delivery: AfterDelivery = "leave"
    holding_dir: str | None = None
    delivered_when: DeliveredWhen = "acknowledged"
    #: a program run as ``[hook, status, path]`` after each delivered or received file
    hook: str | None = None
    hook_timeout: float = DEFAULT_HOOK_TIMEOUT

    @property
    def label(self) -> str:
        """The human name shown in logs and conflict copies."""
        return self.client_name or self.name

    @property
    def sends(self) -> bool:
        """See :func:`mode_sends`."""
        return mode_sends(self.mode)

    @property
    def receives(self) -> bool:
        """See :func:`mode_receives`."""
        return mode_receives(self.mode)


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
