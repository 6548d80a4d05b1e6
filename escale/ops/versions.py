"""``escalectl versions``: list and restore the versions a client kept of a file.

Versions are kept by the sync pass in the client's trash
(:mod:`escale.sync.trash`) before a pull replaces or deletes a local file.
These functions work on the local folder and the trash only (no relay, no
daemon needed). A restore takes the client's lock (as a pass does), keeps the
current file as a version of its own (reason ``before-restore``), then writes
the chosen version's content in place atomically, with its modification time:
the next pass sends it like any local edit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from escale.config.settings import ClientSettings
from escale.errors import LocalError, UsageError
from escale.sync import localfs
from escale.sync.client import ClientLock, state_dir_for
from escale.sync.planner import LocalFile
from escale.sync.trash import KeptVersion, Trash

#: Seconds a restore waits for a pass of the same client to end.
LOCK_WAIT = 120.0


@dataclass(frozen=True)
class Restored:
    """What :func:`restore_version` did: ``restored`` was written to ``file``;
    the file it replaced was kept as ``kept`` (None: there was none)."""

    section: str
    file: str
    restored: KeptVersion
    kept: KeptVersion | None


def locate(clients: Sequence[ClientSettings], file: str, section: str | None = None) -> tuple[ClientSettings, str]:
    """The client whose local folder holds ``file`` (a path as the user typed
    it, relative to the current folder), and the file's path relative to that
    folder. ``section`` chooses among several. UsageError when none holds it
    (or several do and none is chosen), or when escale could not sync that
    path."""
    wanted = os.path.abspath(file)
    real = os.path.join(os.path.realpath(os.path.dirname(wanted)), os.path.basename(wanted))
    found: list[tuple[ClientSettings, str]] = []
    for client in clients:
        if section is not None and client.name != section:
            continue
        for root in dict.fromkeys((client.local_path, os.path.realpath(client.local_path))):
            for candidate in (wanted, real):
                if candidate.startswith(root.rstrip(os.sep) + os.sep):
                    found.append((client, os.path.relpath(candidate, root).replace(os.sep, "/")))
                    break
            else:
                continue
            break
    if not found:
        scope = f"client [{section}]" if section else "any configured client"
        raise UsageError(f"{file} is not inside the local folder of {scope}")
    if len(found) > 1:
        names = ", ".join(c.name for c, _ in found)
        raise UsageError(f"{file} is inside the local folders of several clients ({names}); choose one with -r")
    client, rel = found[0]
    try:
        localfs.safe_join(client.local_path, rel)
    except LocalError as exc:
        raise UsageError(f"{file}: escale does not sync this path ({exc})") from None
    return client, rel


def trash_of(settings: ClientSettings) -> Trash:
    """The trash of client ``settings``."""
    return Trash.of(settings, state_dir_for(settings))


def list_versions(settings: ClientSettings, rel: str) -> list[KeptVersion]:
    """The kept versions of ``rel`` of client ``settings``, newest first
    (number 1 is the newest)."""
    return trash_of(settings).versions(rel)


def restore_version(settings: ClientSettings, rel: str, number: int, *, lock_wait: float = LOCK_WAIT) -> Restored:
    """Put version ``number`` (1: the newest, as listed by
    :func:`list_versions`) of ``rel`` back in client ``settings``'s folder.

    The current file, if any, is kept first as a version (``before-restore``,
    even with ``keep versions = no``); the chosen one stays in the trash. Raises
    UsageError for a number that is not listed, ClientBusy when a pass of the
    client holds its lock for longer than ``lock_wait`` seconds, LocalError
    (file untouched) when the file changed during the restore or cannot be
    written.
    """
    trash = trash_of(settings)
    root = settings.local_path
    lock = ClientLock(state_dir_for(settings), settings.name)
    lock.acquire(lock_wait)
    try:
        versions = trash.versions(rel)
        if not versions:
            raise UsageError(f"no kept version of {rel} in [{settings.name}] ({trash.folder})")
        if not 1 <= number <= len(versions):
            raise UsageError(f"{rel} has {len(versions)} kept version(s): choose 1 to {len(versions)}")
        chosen = versions[number - 1]
        now = localfs.current(root, rel)
        kept = trash.keep(root, rel, now, "before-restore", force=True) if now is not None else None

        def fill(handle: BinaryIO) -> None:
            with localfs.open_for_push(trash.folder, chosen.name, LocalFile(chosen.size, chosen.mtime_ns)) as source:
                while chunk := source.read(1 << 20):
                    handle.write(chunk)

        try:
            localfs.write_atomically(root, rel, fill, expect=now, mtime_ns=chosen.mtime_ns)
        except LocalError:
            trash.discard(kept, root)
            raise
        return Restored(settings.name, localfs.safe_join(root, rel), chosen, kept)
    finally:
        lock.release()
