"""Versions kept: a per-client trash for the local files a pull replaces or deletes.

Before the executor replaces a local file with a version from the relay, or
deletes it because of a tombstone, it keeps the file here
(:meth:`Trash.keep`); ``escalectl versions`` lists and restores what is kept
(:mod:`escale.ops.versions`).

Layout: the folder (``versions folder``, default ``<state dir>/versions``)
mirrors the local folder; each kept version of ``dir/name`` is the file
``dir/name~YYYYMMDD-HHMMSS-ffffff~REASON`` (the time it was kept, UTC;
``REASON`` is ``replaced``, ``deleted`` or ``before-restore``). The name alone
says what a version is, so the folder can be browsed and copied from by hand.

Safety: a version is made with :func:`escale.sync.localfs.keep_copy`, a hard
link when the trash is on the local folder's file system, a verified copy
otherwise, never through a symbolic link, and only if the file is still the one
the plan saw. It is made *before* the replacement or deletion, which happens
only afterwards: a process killed between the two leaves the file in both
places, never in neither (the next pass may then keep that file a second time:
a duplicate version, never a lost one).

Retention (:meth:`Trash.prune_due`, at the end of a pass that kept a version,
and at least hourly): versions kept longer ago than ``keep versions`` are
removed, then the oldest ones while the total is above ``keep versions size``.
"""

from __future__ import annotations

import logging
import os
import re
import stat as stat_module
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from escale.config.settings import ClientSettings
from escale.errors import LocalError
from escale.sync import localfs
from escale.sync.planner import LocalFile

log = logging.getLogger(__name__)

Reason = Literal["replaced", "deleted", "before-restore"]
REASONS: tuple[Reason, ...] = ("replaced", "deleted", "before-restore")
_STAMP = "%Y%m%d-%H%M%S"
#: Seconds between two retention walks of one versions folder (see :meth:`Trash.prune_due`).
PRUNE_EVERY = 3600.0
#: when this process last pruned each versions folder
_last_pruned: dict[str, float] = {}
_VERSION = re.compile(r"(?P<name>.+)~(?P<stamp>[0-9]{8}-[0-9]{6}-[0-9]{6})~(?P<reason>"
                      + "|".join(REASONS) + r")")


@dataclass(frozen=True)
class KeptVersion:
    """One kept version of local path ``path``: stored at ``name`` (relative to
    the trash folder), kept at ``kept_at`` (seconds since the epoch) for
    ``reason``; ``size`` and ``mtime_ns`` of the content."""

    path: str
    name: str
    kept_at: float
    reason: Reason
    size: int
    mtime_ns: int


def versions_folder(settings: ClientSettings, state_dir: str) -> str:
    """Where client ``settings`` keeps versions: ``versions folder``, else
    ``<state_dir>/versions``."""
    return settings.versions_dir or os.path.join(state_dir, "versions")


def _stamp(when: float) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    return f"{moment.strftime(_STAMP)}-{moment.microsecond:06d}"


def _parse_stamp(text: str) -> float:
    moment = datetime.strptime(text[:15], _STAMP).replace(tzinfo=UTC)
    return moment.timestamp() + int(text[16:]) / 1e6


class Trash:
    """The kept versions of one client, in ``folder``.

    ``keep_for``: seconds a version is kept (0: :meth:`keep` keeps nothing, but
    what is there can still be listed and restored); ``keep_bytes``: at most
    this many bytes in all (None: no limit).
    """

    def __init__(self, folder: str, *, keep_for: float, keep_bytes: int | None, client: str = "") -> None:
        self.folder = folder
        self.keep_for = keep_for
        self.keep_bytes = keep_bytes
        self.client = client
        #: versions kept through this object
        self.kept = 0

    @classmethod
    def of(cls, settings: ClientSettings, state_dir: str) -> Trash:
        """The trash of client ``settings`` whose state lives in ``state_dir``."""
        return cls(versions_folder(settings, state_dir), keep_for=settings.keep_versions,
                   keep_bytes=settings.keep_versions_size, client=settings.name)

    @property
    def enabled(self) -> bool:
        return self.keep_for > 0

    # ----------------------------------------------------------- keeping

    def keep(self, root: str, rel: str, expect: LocalFile, reason: Reason, *,
             force: bool = False) -> KeptVersion | None:
        """Keep the local file ``root/rel`` (still ``expect``, else LocalChanged)
        as a version; return it, or None when versions are off (unless
        ``force``). Raises what
        :func:`~escale.sync.localfs.keep_copy` raises: the caller must then
        leave the file alone."""
        if not (self.enabled or force):
            return None
        now = time.time()
        for attempt in range(100):
            name = f"{rel}~{_stamp(now + attempt / 1e6)}~{reason}"
            try:
                st = localfs.keep_copy(root, rel, expect, self.folder, name)
            except localfs.KeptTargetExists:
                continue
            log.info("[%s] kept the previous version of %s (%s) in %s", self.client, rel, reason, self.folder)
            self.kept += 1
            return KeptVersion(rel, name, now + attempt / 1e6, reason, st.st_size, st.st_mtime_ns)
        raise localfs.LocalChanged(f"cannot find a free name for a version of {rel}", path=rel)

    def discard(self, kept: KeptVersion | None, root: str) -> None:
        """Remove version ``kept`` (just made by :meth:`keep` from a file of the
        local folder ``root``) when the replacement or deletion it was made for
        did not happen after all: only while the local file is the very file
        kept (same inode: a hard link). A copy, or a file that may have been
        replaced meanwhile, stays kept: a duplicate version, never a loss."""
        if kept is None:
            return
        try:
            here = os.stat(localfs.safe_join(root, kept.path), follow_symlinks=False)
            there = os.stat(os.path.join(self.folder, kept.name), follow_symlinks=False)
            if (here.st_ino, here.st_dev) == (there.st_ino, there.st_dev):
                localfs.remove_kept(self.folder, kept.name)
        except (OSError, LocalError) as exc:
            log.debug("[%s] version %s stays kept: %s", self.client, kept.name, exc)

    # ----------------------------------------------------------- listing

    def versions(self, rel: str) -> list[KeptVersion]:
        """The kept versions of local path ``rel``, newest first."""
        folder = rel.rpartition("/")[0]
        where = os.path.join(self.folder, *folder.split("/")) if folder else self.folder
        found = []
        try:
            entries = list(os.scandir(where))
        except OSError:
            return []
        for entry in entries:
            kept = self._parse(f"{folder}/{entry.name}" if folder else entry.name, entry)
            if kept is not None and kept.path == rel:
                found.append(kept)
        found.sort(key=lambda k: k.kept_at, reverse=True)
        return found

    def _parse(self, name: str, entry: os.DirEntry[str]) -> KeptVersion | None:
        match = _VERSION.fullmatch(entry.name)
        if match is None:
            return None
        try:
            if not entry.is_file(follow_symlinks=False):
                return None
            st = entry.stat(follow_symlinks=False)
            kept_at = _parse_stamp(match["stamp"])
        except (OSError, ValueError):
            return None
        folder = name.rpartition("/")[0]
        path = f"{folder}/{match['name']}" if folder else match["name"]
        reason: Reason = next(r for r in REASONS if r == match["reason"])
        return KeptVersion(path, name, kept_at, reason, st.st_size, st.st_mtime_ns)

    def all_versions(self) -> list[KeptVersion]:
        """Every kept version, oldest first."""
        found: list[KeptVersion] = []

        def walk(where: str, prefix: str) -> None:
            try:
                entries = list(os.scandir(where))
            except OSError:
                return
            for entry in entries:
                rel = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    walk(entry.path, rel + "/")
                else:
                    kept = self._parse(rel, entry)
                    if kept is not None:
                        found.append(kept)

        walk(self.folder, "")
        found.sort(key=lambda k: k.kept_at)
        return found

    # ----------------------------------------------------------- retention

    def prune_due(self, now: float | None = None) -> int:
        """:meth:`prune` when this object kept a version, or when this process
        last pruned this folder more than :data:`PRUNE_EVERY` seconds ago (the
        walk costs one ``stat`` per version: a daemon does not repeat it every
        pass). Returns how many versions were removed."""
        now = time.time() if now is None else now
        last = _last_pruned.get(self.folder)
        if not self.kept and last is not None and 0 <= now - last < PRUNE_EVERY:
            return 0
        _last_pruned[self.folder] = now
        return self.prune(now)

    def prune(self, now: float | None = None) -> int:
        """Remove the versions past ``keep versions`` (when it is 0, nothing is
        removed: versions kept before it was turned off wait for the user),
        then the oldest while the total is above ``keep versions size``; empty
        folders left behind go too. Returns how many versions were removed;
        failures are logged and skipped."""
        if not os.path.isdir(self.folder) or not self.enabled:
            return 0
        now = time.time() if now is None else now
        kept = self.all_versions()
        doomed = [k for k in kept if now - k.kept_at > self.keep_for]
        rest = [k for k in kept if now - k.kept_at <= self.keep_for]
        if self.keep_bytes is not None:
            total = sum(k.size for k in rest)
            while rest and total > self.keep_bytes:
                oldest = rest.pop(0)
                doomed.append(oldest)
                total -= oldest.size
        removed = 0
        for version in doomed:
            try:
                localfs.remove_kept(self.folder, version.name)
                removed += 1
            except LocalError as exc:
                log.warning("[%s] cannot remove old version %s: %s", self.client, version.name, exc)
        if removed:
            log.info("[%s] removed %d old versions from %s", self.client, removed, self.folder)
            self._remove_empty_folders()
        return removed

    def _remove_empty_folders(self) -> None:
        for where, _dirs, _files in os.walk(self.folder, topdown=False):
            if where == self.folder:
                continue
            try:
                if stat_module.S_ISDIR(os.lstat(where).st_mode):
                    os.rmdir(where)
            except OSError:
                pass  # not empty, or gone
