"""``escalectl fix``: rebuild a relay's lost metadata from an up-to-date client.

When a relay loses its placeholders (``meta/``), its header, or everything,
the files are still on the clients. ``fix`` runs for one client (one
configuration section) and, from its state database and its local folder:

* recreates the repository header if it is missing (with encryption, a NEW
  header: new salt, hence new object names; every client must use the same key
  file or passphrase, which opens the new header as it opened the old one);
* for every path the client last synced (:meth:`StateDB.base`) whose local file
  is still exactly that synced content, and whose placeholder is missing on the
  relay or older than what the client has seen (a rolled-back relay, e.g. after
  restoring an old backup), commits the local file again (payload, then
  placeholder) under the lease, operation ``fix``;
* removes leftovers the lost metadata no longer points to (orphan payloads),
  and the temporaries (``.escale-tmp-*``) of interrupted uploads in every
  layout folder that were not written to for ``lock timeout`` seconds.

Versions: a recreated path gets version ``max(seen, synced, relay) + 1``, where
*seen* is the highest version of the path this client ever saw on the relay
(:meth:`StateDB.seen_versions`). Every client refuses a relay version lower
than one it has seen (it takes it for a rollback attack and freezes the path);
committing above the highest seen version means that no up-to-date client
mistakes the rebuilt relay for a rollback: they find a newer version with the
content they already have, record it, and carry on.

Paths the client does not hold as synced (changed locally since, deleted,
never received) are not recreated and are listed in the report with the
reason; a path changed locally is sent by the next normal pass.

The index layout (``index = yes``) is fixed the same way, plus its index
itself: when the relay's index does not read whole (lost or corrupted
deltas), shows a generation below the highest this client saw (a rolled-back
or wiped relay, an older backup restored), or names content objects that are
gone, fix first writes one checkpoint at a generation above every generation
this client saw, holding the readable entries and only the content objects
present; then the paths are recommitted as above, packed into pages and
committed as one delta. Clients that saw no more than this client read the
checkpoint as progress. Objects of the other layout, left by an interrupted
``escalectl migrate --layout``, are removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace

from escale.config.settings import ClientSettings
from escale.crypto.keys import KdfParams, KeySecret
from escale.errors import (
    IntegrityError,
    LeaseLost,
    LocalError,
    OperationError,
    ProtocolError,
    RelayNotFound,
    RelayQuotaExceeded,
)
from escale.ops.common import Progress, held_lease, no_progress, open_relay, secret_loader
from escale.ops.convert import index_top, remove_layout
from escale.ops.readers import reader_for
from escale.protocol import layout
from escale.protocol.header import attach_repository, open_repository
from escale.protocol.index import objects as io
from escale.protocol.index.objects import Checkpoint, IndexEntry
from escale.protocol.index.repository import IndexRepository
from escale.protocol.lease import Lease
from escale.protocol.repository import LocalVersion, RelayState, Repository
from escale.protocol.sealer import Sealer
from escale.relay import Entry, Relay
from escale.relay.memory import MemoryRelay
from escale.sync import localfs
from escale.sync.attach import open_client_repository
from escale.sync.client import ClientLock, state_dir_for
from escale.sync.planner import BaseEntry, LocalFile, same_content
from escale.sync.quiet import forget_quiet
from escale.sync.scanner import scan
from escale.sync.state import StateDB

log = logging.getLogger(__name__)


@dataclass
class FixItem:
    """One path fix recreated (or would recreate): its new version and why."""

    path: str
    version: int
    reason: str  # "missing on the relay" | "rolled back on the relay"


@dataclass
class FixReport:
    """What ``fix`` changed (or, with ``dry_run``, would change) for one client."""

    section: str
    relay: str
    dry_run: bool
    header_recreated: bool = False
    recreated: list[FixItem] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    removed: int = 0
    up_to_date: int = 0
    #: index layout: the generation of the checkpoint fix wrote (0: the index was kept)
    index_generation: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.header_recreated or self.recreated or self.removed or self.index_generation)


@dataclass(frozen=True)
class _Candidate:
    path: str
    local: LocalFile
    base: BaseEntry
    key: str
    version: int
    reason: str


def fix_client(
    settings: ClientSettings,
    *,
    dry_run: bool = False,
    lease_wait: float | None = None,
    lock_wait: float = 60.0,
    kdf: KdfParams | None = None,
    on_progress: Progress = no_progress,
) -> FixReport:
    """Rebuild the relay of client ``settings`` from this client (see the module).

    Takes the client's local lock (waits up to ``lock_wait`` seconds for a
    running pass) and, unless ``dry_run``, the relay's lease. Raises
    OperationError when the client has no state database or local folder (it
    was never synced here: nothing to rebuild from), ClientBusy, LeaseBusy,
    RelayError, WrongKeyError. Per-file problems do not stop it: paths left
    alone on purpose are in ``skipped``, paths that failed in ``errors``.
    With ``dry_run`` nothing is written anywhere (not even the header or the
    client's registration).
    """
    state_dir = state_dir_for(settings)
    db_path = os.path.join(state_dir, "state.db")
    if not os.path.isfile(db_path):
        raise OperationError(f"client [{settings.name}] has no state database ({db_path}): it never synced "
                             "here, so fix has nothing to rebuild from")
    if not os.path.isdir(settings.local_path):
        raise OperationError(f"client [{settings.name}]: local folder {settings.local_path} is missing")
    lock = ClientLock(state_dir, settings.name)
    lock.acquire(lock_wait)
    try:
        db = StateDB(db_path)
        try:
            if not dry_run:  # what fix changes here, the next pass must plan on in full
                forget_quiet(db)
            relay = open_relay(settings.relay)
            try:
                return _fix(settings, db, relay, dry_run, lease_wait, kdf, on_progress)
            finally:
                relay.close()
        finally:
            db.close()
    finally:
        lock.release()


def _repository(settings: ClientSettings, db: StateDB, relay: Relay, *, secret: Callable[[], KeySecret] | None,
                kdf: KdfParams | None) -> Repository:
    """The client's repository on ``relay``, its header rebuilt with the
    identity this client knows when it is missing (the one rule of
    :func:`escale.sync.attach.open_client_repository`)."""
    opened = open_client_repository(settings, db, relay, spool_dir=os.path.join(state_dir_for(settings), "spool"),
                                    secret=secret, kdf=kdf, rebuild=True)
    return opened.repo


def _rebase_index(settings: ClientSettings, relay: Relay, repo: IndexRepository, lease: Lease,
                  spool_dir: str) -> int:
    """Re-establish a consistent index for ``repo`` under ``lease``; return the
    generation of the checkpoint written (0 when none was needed).

    The index as the relay shows it (read afresh, whatever this client knows)
    is kept when it reads whole, its generations are not below the highest
    this client saw, and every content object it names is on the relay. Else
    a checkpoint is written at a generation above every one this client saw
    (and every one listed): the readable entries (none when the index does not
    read), naming only content objects that are present. Every client whose
    knowledge is not above this client's reads it as progress; the paths it
    lost are then recommitted by :func:`_fix` above every version seen.
    """
    top = index_top(relay)
    reader = reader_for("index", relay, repo.sealer, spool_dir)
    assert isinstance(reader, IndexRepository)
    entries: dict[str, IndexEntry] = {}
    objects: dict[str, int] = {}
    readable = True
    try:
        reader.read_state()
        entries, objects = dict(reader.entries), dict(reader.objects)
    except (ProtocolError, IntegrityError, RelayNotFound) as exc:
        readable = False
        log.warning("[%s] the index on %s does not read (%s): rebuilding it from this client", settings.name,
                    relay.describe(), exc)
    listed: set[str] = set()
    for folder in (io.PAGES, io.BIG):
        with contextlib.suppress(RelayNotFound):
            listed.update(e.name for e in relay.list(folder) if not e.is_dir)
    present = {name: size for name, size in objects.items() if name in listed}
    if readable and top >= repo.known and present == objects:
        return 0
    generation = max(top, repo.known, repo.head) + 1
    name = io.checkpoint_name(generation)
    lease.check()
    relay.put_bytes(name, repo.sealer.seal(name, Checkpoint(generation, tuple(entries.values()), present).encode()),
                    exclusive=True)
    log.warning("[%s] wrote index checkpoint %d on %s (%d paths, %d content objects; %d lost objects dropped)",
                settings.name, generation, relay.describe(), len(entries), len(present), len(objects) - len(present))
    return generation


def _fix(settings: ClientSettings, db: StateDB, relay: Relay, dry_run: bool, lease_wait: float | None,
         kdf: KdfParams | None, on_progress: Progress) -> FixReport:
    report = FixReport(settings.name, relay.describe(), dry_run)
    secret = secret_loader(settings)
    report.header_recreated = not relay.exists(layout.HEADER)
    if dry_run:
        if report.header_recreated:
            scratch = MemoryRelay()
            scratch.open()
            sealer = open_repository(scratch, encryption=settings.encryption, secret=secret, kdf=kdf)
            state = RelayState()
        else:
            sealer = attach_repository(relay, encryption=settings.encryption, secret=secret, kdf=kdf,
                                       create=False, any_layout=True).sealer
            state = _dry_run_state(relay, sealer, db, settings)
        candidates = _candidates(settings, db, sealer, state, report)
        report.recreated = [FixItem(c.path, c.version, c.reason) for c in candidates]
        referenced = {p.payload for p in state.latest.values() if p.payload}
        report.removed = sum(1 for p in state.payloads if p not in referenced) + sum(
            len(state.versions_of(key)) - 1 for key in state.versions)
        if not report.header_recreated:
            report.removed += len(_temporaries(relay, settings.lock_timeout))
        return report
    # a recreated header keeps the identity this client knows, so that the other
    # clients recognise their repository (doc/protocol.rst: "A repository is born once")
    repo = _repository(settings, db, relay, secret=secret, kdf=kdf)
    sealer = repo.sealer
    if report.header_recreated:
        log.warning("[%s] recreated the repository header of %s", settings.name, relay.describe())
    wait = settings.lock_timeout + 10 if lease_wait is None else lease_wait
    with held_lease(relay, settings.relay, sealer, operation="fix", client_id=repo.client_id,
                    label=f"{settings.label} (escalectl fix)", timeout=settings.lock_timeout, wait=wait) as lease:
        if isinstance(repo, IndexRepository):
            report.index_generation = _rebase_index(settings, relay, repo, lease, repo.spool_dir or ".")
        state = repo.read_state()
        candidates = _candidates(settings, db, sealer, state, report)
        on_progress(0, len(candidates))
        for done, candidate in enumerate(candidates, start=1):
            try:
                item = _recommit(settings, db, repo, lease, state, candidate)
                report.recreated.append(item)
            except (LocalError, RelayQuotaExceeded, ProtocolError) as exc:
                if isinstance(exc, LeaseLost):
                    raise
                report.errors.append((candidate.path, str(exc)))
                log.error("[%s] %s: not recreated: %s", settings.name, candidate.path, exc)
            on_progress(done, len(candidates))
        # the index layout packs the recommits: committed here (a no-op for placeholders)
        repo.commit_pending(lease, state)
        report.removed = repo.collect_garbage(lease, state)
        # objects of the other layout left by an interrupted `escalectl migrate --layout`
        report.removed += remove_layout(relay, "placeholder" if isinstance(repo, IndexRepository) else "index",
                                        lease)
        for entry in _temporaries(relay, settings.lock_timeout):
            lease.check()
            with contextlib.suppress(RelayNotFound):
                relay.delete_temporary(entry.name)
            log.info("[%s] removed temporary %s (%d bytes) left on the relay", settings.name, entry.name,
                     entry.size)
            report.removed += 1
        repo.finish_changes(lease)  # the change marker: clean again (see escale.protocol.marker)
    log.info("[%s] fix: %d paths recreated on %s, %d leftovers removed, %d skipped, %d failed", settings.name,
             len(report.recreated), relay.describe(), report.removed, len(report.skipped), len(report.errors))
    return report


def _dry_run_state(relay: Relay, sealer: Sealer, db: StateDB, settings: ClientSettings) -> RelayState:
    """The relay's state as a dry run sees it: read without writing anything
    (an index that does not read counts as empty: fix would rebuild it)."""
    if settings.index:
        try:  # its spool files are nameless: nothing is left behind
            return reader_for("index", relay, sealer, tempfile.gettempdir()).read_state()
        except (ProtocolError, IntegrityError, RelayNotFound):
            return RelayState()
    return Repository(relay, sealer, client_id=db.client_id(), label=settings.label, receives=settings.receives,
                      mode=settings.mode, meta_cache=db.meta_cache()).read_state()


def _temporaries(relay: Relay, age: float) -> list[Entry]:
    """The relay temporaries (``.escale-tmp-*``, left by interrupted uploads) in
    the repository folder and its layout folders that were not written to in
    the last ``age`` seconds (by relay mtime; all of them when the relay gives
    none). Fix holds the lease: an upload in progress is another client's
    acknowledgement or registration, written in a moment (its mtime is fresh)."""
    now = time.time()
    found: list[Entry] = []
    for folder in ("", *layout.ALL_FOLDERS):
        try:
            found += [e for e in relay.list_temporaries(folder) if e.mtime is None or now - e.mtime > age]
        except RelayNotFound:
            continue
    return found


def _candidates(settings: ClientSettings, db: StateDB, sealer: Sealer, state: RelayState,
                report: FixReport) -> list[_Candidate]:
    """The paths to recreate, in path order; fills ``report.skipped`` and ``up_to_date``."""
    scanned = scan(settings.local_path, settings.filters, checksum=settings.checksum, db=db,
                   persist_cache=settings.checksum_cache)
    if scanned.root_missing:
        raise OperationError(f"client [{settings.name}]: local folder {settings.local_path} is missing")
    seen = db.seen_versions()
    result: list[_Candidate] = []
    base = db.base()
    for path, entry in sorted(base.items()):
        key = sealer.object_key(path)
        placeholder = state.latest.get(path)
        floor = max(seen.get(key, 0), entry.version)
        if placeholder is not None and placeholder.version >= floor:
            report.up_to_date += 1
            continue
        local = scanned.files.get(path)
        if entry.local_deleted or local is None:
            report.skipped.append((path, "not present locally"))
            continue
        if not same_content(local, entry):
            report.skipped.append((path, "changed locally since the last sync (the next pass sends it)"))
            continue
        version = max(floor, state.latest_version(key)) + 1
        reason = "missing on the relay" if placeholder is None else "rolled back on the relay"
        result.append(_Candidate(path, local, entry, key, version, reason))
    for path, placeholder in sorted(state.latest.items()):
        if path not in base and seen.get(placeholder.key, 0) > placeholder.version:
            report.skipped.append((path, f"rolled back on the relay (version {placeholder.version}, "
                                         f"{seen[placeholder.key]} seen) but not synced here"))
    return result


def _recommit(settings: ClientSettings, db: StateDB, repo: Repository, lease: Lease, state: RelayState,
              candidate: _Candidate) -> FixItem:
    """Commit ``candidate``'s local file as version ``candidate.version``."""
    floor = candidate.version - 1
    phantom = floor > state.latest_version(candidate.key)
    if phantom:
        state.add_version(candidate.key, floor)  # commit_file numbers the new version after the highest known one
    try:
        with localfs.open_for_push(settings.local_path, candidate.path, candidate.local) as handle:
            local = LocalVersion(candidate.path, candidate.local.size, candidate.local.mtime_ns,
                                 candidate.local.checksum)
            placeholder = repo.commit_file(lease, state, local, handle)
    finally:
        if phantom:
            state.remove_version(candidate.key, floor)

    def record() -> None:
        db.set_base(candidate.path, dc_replace(candidate.base, version=placeholder.version,
                                               checksum=placeholder.checksum or candidate.base.checksum))
        db.set_seen(candidate.key, placeholder.version)

    repo.when_committed(record)  # the index layout: once its delta is on the relay
    log.info("[%s] recreated %s on the relay as version %d (%s)", settings.name, candidate.path,
             placeholder.version, candidate.reason)
    return FixItem(candidate.path, placeholder.version, candidate.reason)


__all__ = ["FixItem", "FixReport", "fix_client"]
