"""``escalectl backup``: a snapshot of a relay repository in a tar archive.

Every object of the repository, in either layout (payloads, placeholders,
acknowledgements; or pages, big objects, index deltas and checkpoints,
acknowledgement records; client registrations, the header, and any foreign
object in the folder) is
stored sealed, exactly as on the relay, under its relay name; lease objects are
left out (they describe who works on the relay now, not its content), and the
manifest records the lease generation instead. See :mod:`escale.ops.archive`
for the format.

Consistency: by default the relay's lease is held for the whole backup
(operation ``backup``), so no client commits, reclaims or cleans up meanwhile:
the archive is one state of the repository. With ``fast``, no lease is taken
(no key needed either) and clients that run meanwhile may leave the archive
with a placeholder whose payload is missing or an orphan payload: only use it
when no client runs.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import tempfile
from dataclasses import dataclass

from escale.config.settings import ClientSettings
from escale.errors import OperationError, RelayNotFound, UsageError
from escale.ops.archive import ArchiveWriter, Manifest, compression_for
from escale.ops.common import (
    LEASED_FOLDERS,
    METADATA_FOLDERS,
    ObjectInfo,
    Progress,
    escalectl_lease,
    existing_sealer,
    in_protocol_order,
    no_progress,
    open_relay,
    require_repository,
    top_folder,
)
from escale.ops.copy import fetch
from escale.protocol import layout
from escale.protocol.lease import Lease, highest_generation
from escale.relay import Relay
from escale.relay.base import Entry

log = logging.getLogger(__name__)


@dataclass
class BackupReport:
    """What a backup wrote."""

    archive: str
    section: str
    relay: str
    objects: int
    bytes: int
    consistent: bool
    skipped: list[str]


def _snapshot(relay: Relay) -> list[Entry]:
    """The objects to back up, in protocol order, leases left out.

    Metadata (placeholders, or the index layout's deltas and checkpoints) is
    listed before content (payloads, pages, big objects): in a ``--fast``
    backup a commit landing between the listings then adds at worst an orphan
    content object, never metadata whose content was missed. Both layouts are
    backed up alike (every object under its relay name).
    """
    metas: list[Entry] = []
    for folder in METADATA_FOLDERS:
        try:
            metas.extend(relay.walk(folder))
        except RelayNotFound:
            continue
    rest = [e for e in relay.walk("") if top_folder(e.name) not in (*METADATA_FOLDERS, layout.LEASES)]
    entries = {e.name: e for e in [*metas, *rest]}
    return [entries[n] for n in in_protocol_order(list(entries))]


def backup(
    settings: ClientSettings,
    archive: str,
    *,
    fast: bool = False,
    force: bool = False,
    lease_wait: float | None = None,
    on_progress: Progress = no_progress,
) -> BackupReport:
    """Back up the relay of client ``settings`` into ``archive``.

    Raises UsageError for an unknown archive extension or an existing archive
    without ``force``; OperationError when the relay holds no repository;
    LeaseBusy when another client keeps the lease longer than ``lease_wait``
    seconds (default: the lock timeout plus 10 s); LeaseLost when the lease is
    lost midway; RelayError when the relay fails. In every failure case no file
    appears under ``archive`` (an existing one is untouched) and the relay is
    unchanged apart from the lease objects.
    """
    compression_for(archive)
    if os.path.exists(archive) and not force:
        raise UsageError(f"archive {archive} exists; use --force to replace it")
    if os.path.isdir(archive):
        raise UsageError(f"archive {archive} is a folder")
    relay = open_relay(settings.relay)
    try:
        with contextlib.ExitStack() as stack:
            lease: Lease | None = None
            if fast:
                require_repository(relay)
                log.warning("fast backup of %s: no lease held; clients running now may make it inconsistent",
                            relay.describe())
            else:
                sealer = existing_sealer(relay, settings)
                lease = stack.enter_context(escalectl_lease(relay, settings, sealer, "backup", lease_wait))
            return _write(settings, relay, archive, lease, on_progress)
    finally:
        relay.close()


def _write(settings: ClientSettings, relay: Relay, archive: str, lease: Lease | None,
           on_progress: Progress) -> BackupReport:
    entries = _snapshot(relay)
    generation = lease.generation if lease is not None else highest_generation(relay)
    manifest = Manifest(
        section=settings.name, relay=relay.describe(), encryption=settings.encryption,
        consistent=lease is not None, lease_generation=generation,
        created=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    skipped: list[str] = []
    total = len(entries)
    on_progress(0, total)
    with ArchiveWriter(archive) as writer, tempfile.TemporaryFile() as spool:
        for done, entry in enumerate(entries, start=1):
            if lease is not None:
                lease.check()
            try:
                info = fetch(relay, entry.name, spool)
            except RelayNotFound:
                if lease is not None and top_folder(entry.name) in LEASED_FOLDERS:
                    raise OperationError(
                        f"relay object {entry.name} vanished during the backup although the lease was held"
                    ) from None
                log.warning("relay object %s vanished during the backup; left out", entry.name)
                skipped.append(entry.name)
                on_progress(done, total)
                continue
            writer.add(info.name, info.size, spool)
            manifest.objects.append(info)
            on_progress(done, total)
        if lease is not None:
            lease.check()
        writer.commit(manifest)
    size = sum(o.size for o in manifest.objects)
    log.info("backed up %d objects (%d bytes) of %s into %s", len(manifest.objects), size, relay.describe(),
             archive)
    return BackupReport(os.path.abspath(archive), settings.name, relay.describe(), len(manifest.objects), size,
                        lease is not None, skipped)


__all__ = ["BackupReport", "ObjectInfo", "backup"]
