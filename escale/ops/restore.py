"""``escalectl restore``: put a backup archive back on a relay.

Order of work, and what a failure at each point leaves:

1. the whole archive is read and checked against its manifest
   (:func:`escale.ops.archive.verify_archive`): a corrupt, truncated or
   tampered archive raises ArchiveError and the relay is not even contacted;
2. the relay must hold no repository (no ``escale.repo`` and nothing in the
   layout's folders) unless ``force``: TargetNotEmpty, nothing written;
3. unless ``fast``, the archive's header is opened with the client's key (a
   wrong key fails here, nothing written) and the relay's lease is taken
   (operation ``restore``), its generation continuing the archive's;
4. objects are written in protocol order: content (payloads ``data/``, or
   pages ``pages/`` and big objects ``big/``), metadata (placeholders
   ``meta/``, or index documents ``index/``), acknowledgements ``acks/``,
   registrations (and index acknowledgement records) ``clients/``, any
   foreign object, and the header ``escale.repo`` last (either layout); each is checked again
   against the manifest before it is written and read back after. A failure
   midway leaves a relay without header (not taken for a repository by an
   operation; rerun the restore with ``force``).

With ``force`` the archive's objects replace same-named objects and other
objects on the relay stay: empty the relay first to get exactly the snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass

from escale.config.settings import ClientSettings
from escale.errors import ArchiveError, TargetNotEmpty
from escale.ops.archive import Manifest, compression_for, read_object, read_objects, verify_archive
from escale.ops.common import (
    Progress,
    escalectl_lease,
    no_progress,
    open_relay,
    repository_objects,
    secret_loader,
)
from escale.ops.copy import digest, store_verified
from escale.protocol import layout
from escale.protocol.header import attach_repository
from escale.protocol.lease import Lease, highest_generation, new_record, write_released
from escale.protocol.sealer import Sealer
from escale.relay import Relay
from escale.relay.memory import MemoryRelay

log = logging.getLogger(__name__)


@dataclass
class RestoreReport:
    """What a restore wrote."""

    archive: str
    section: str
    relay: str
    objects: int
    bytes: int
    consistent: bool
    replaced: int


def _archive_sealer(path: str, settings: ClientSettings) -> Sealer:
    """The sealer of the archive's repository, opened with the client's key."""
    header = read_object(path, layout.HEADER)
    if header is None:
        raise ArchiveError(f"archive {path}: holds no repository header ({layout.HEADER})")
    scratch = MemoryRelay()
    scratch.open()
    scratch.put_bytes(layout.HEADER, header)
    return attach_repository(scratch, encryption=settings.encryption, secret=secret_loader(settings),
                             create=False, any_layout=True).sealer


def _continue_generation(relay: Relay, sealer: Sealer, generation: int) -> None:
    """On a relay without leases, leave a released lease of ``generation`` so that
    the next lease continues the archive's numbering."""
    if generation <= 0 or highest_generation(relay) > 0:
        return
    record = new_record(generation, holder=layout.new_client_id(), label="escalectl restore", operation="restore")
    write_released(relay, sealer, record, exclusive=True)


def restore(
    settings: ClientSettings,
    archive: str,
    *,
    fast: bool = False,
    force: bool = False,
    lease_wait: float | None = None,
    on_progress: Progress = no_progress,
) -> RestoreReport:
    """Restore ``archive`` onto the relay of client ``settings``.

    Raises UsageError for an unknown extension; ArchiveError (nothing written,
    relay not contacted) for a missing, corrupt, truncated or altered archive;
    TargetNotEmpty when the relay holds a repository and ``force`` is not set;
    WrongKeyError/ProtocolError when the key or encryption does not fit the
    archive's repository (nothing written); LeaseBusy, LeaseLost, RelayError,
    OperationError for failures while writing (see the module docstring for
    what is left then).
    """
    compression_for(archive)
    manifest = verify_archive(archive)
    names = {o.name for o in manifest.objects}
    if layout.HEADER not in names:
        raise ArchiveError(f"archive {archive}: holds no repository header ({layout.HEADER})")
    sealer = None if fast else _archive_sealer(archive, settings)
    relay = open_relay(settings.relay)
    try:
        present = repository_objects(relay)
        if present and not force:
            raise TargetNotEmpty(
                f"relay {relay.describe()} already holds an escale repository ({len(present)} objects, e.g. "
                f"{present[0]}); use --force to restore over it")
        with contextlib.ExitStack() as stack:
            lease: Lease | None = None
            if sealer is not None:
                _continue_generation(relay, sealer, manifest.lease_generation)
                lease = stack.enter_context(escalectl_lease(relay, settings, sealer, "restore", lease_wait))
            else:
                log.warning("fast restore onto %s: no lease held", relay.describe())
            written = _write(archive, manifest, relay, lease, on_progress)
        replaced = len(names & set(present))
        log.info("restored %d objects (%d bytes) from %s onto %s", len(manifest.objects), written, archive,
                 relay.describe())
        return RestoreReport(os.path.abspath(archive), settings.name, relay.describe(), len(manifest.objects),
                             written, lease is not None, replaced)
    finally:
        relay.close()


def _write(archive: str, manifest: Manifest, relay: Relay, lease: Lease | None, on_progress: Progress) -> int:
    total = len(manifest.objects)
    written = 0
    on_progress(0, total)
    with read_objects(archive, manifest) as objects, tempfile.TemporaryFile() as spool:
        for done, (info, member) in enumerate(objects, start=1):
            spool.seek(0)
            spool.truncate()
            while chunk := member.read(1024 * 1024):
                spool.write(chunk)
            spool.seek(0)
            if digest(spool) != (info.size, info.sha256):
                raise ArchiveError(f"archive {archive}: relay object {info.name} changed since it was checked")
            spool.seek(0)
            if lease is not None:
                lease.check()
            store_verified(relay, info, spool)
            written += info.size
            on_progress(done, total)
    return written
