"""One client's synchronisation pass: scan, read the relay, plan, execute.

A pass (:meth:`SyncClient.run_pass`):

1. takes the client's local lock (two processes never work on one client);
2. opens the relay and the repository (header, encryption) and registers the
   client;
3. reads the relay state (no lease needed) and scans the local folder; paths
   the relay rolled back and local paths not confirmed are frozen for the pass
   (:mod:`escale.sync.relay_view`);
4. plans (pure, :mod:`escale.sync.planner`), then executes the local side:
   downloads, conflict copies, local deletions, acknowledgements
   (:mod:`escale.sync.executor`). Each download goes to a temporary file, is
   verified, and replaces the user's file only if that file did not change;
5. if anything must be written to the relay (pushes, tombstones, reclaimable
   payloads, leftovers), takes the lease, re-reads the relay, re-checks every
   push against the version it was planned on, commits, reclaims, cleans up,
   and releases the lease (:mod:`escale.sync.relay_phase`).

The state database is updated after every completed step, so a crash at any
point leaves a state that the next pass completes.

A *dry run* (``dry_run=True``) stops after step 4's plan, kept in
:attr:`SyncClient.last_plan`: the relay is wrapped in a
:class:`~escale.relay.readonly.ReadOnlyRelay` (no registration, no lease, no
repository created), the state database is a throw-away copy, and nothing in
the local folder is created, removed or changed.

A file named :data:`ALLOW_DELETIONS` in the client's state folder (written by
``escalectl allow-deletions``) lets the next pass apply the deletions the
mass-deletion guard holds back, as ``allow_mass_deletion`` would; the pass
removes it once it has run to its end.

``bandwidth limit`` wraps every relay the client opens in one shared
:class:`~escale.relay.throttle.ThrottledRelay` bucket.

This module holds the orchestration, the client lock and where the state
lives; :class:`PassReport` is defined in :mod:`escale.sync.report` and
available here too.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from escale.config.settings import ClientSettings
from escale.crypto.keys import KdfParams, KeySecret, load_secret
from escale.errors import ClientBusy, EscaleError, RepositoryGone
from escale.protocol.repository import RelayState, Repository
from escale.relay import Relay, make_relay
from escale.relay.readonly import ReadOnlyRelay
from escale.relay.retry import RetryingRelay
from escale.relay.throttle import ThrottledRelay, TokenBucket
from escale.sync import delivery, faults, localfs, receivers
from escale.sync.attach import open_client_repository
from escale.sync.executor import Executor
from escale.sync.home import check_home
from escale.sync.labels import conflict_label
from escale.sync.planner import RECEIVES, Plan, plan
from escale.sync.quiet import SNAPSHOT_KEY, QuietCheck, was_quiet
from escale.sync.reads import pooled_reader
from escale.sync.relay_phase import run_relay_phase
from escale.sync.relay_view import RemoteView, lost_payloads, maintenance_due, remote_view, rolled_back
from escale.sync.report import TRANSFERS, Announcer, PassReport, TransferProgress
from escale.sync.scanner import STATE_FOLDER, ScanResult, scan
from escale.sync.state import StateDB
from escale.sync.transfers import TransferPool, transfer_connections
from escale.sync.trash import Trash

__all__ = ["ALLOW_DELETIONS", "ClientLock", "PassReport", "SyncClient", "allow_deletions_flag", "state_dir_for"]

log = logging.getLogger(__name__)

#: The file, in a client's state folder, that allows its next pass to apply
#: the deletions held back by the mass-deletion guard.
ALLOW_DELETIONS = "allow-deletions"


def state_dir_for(settings: ClientSettings) -> str:
    """Where a client keeps its state: ``state directory``, else
    ``<local path>/.escale/<section>``."""
    if settings.state_dir:
        return settings.state_dir
    return os.path.join(settings.local_path, STATE_FOLDER, settings.name)


def allow_deletions_flag(settings: ClientSettings) -> str:
    """The path of the file that allows the next pass's held deletions."""
    return os.path.join(state_dir_for(settings), ALLOW_DELETIONS)


class ClientLock:
    """An exclusive, process-wide lock on one client's state folder.

    Held with ``flock`` on ``<state dir>/lock``: released by the kernel when the
    process dies, so a crash never leaves it behind.
    """

    def __init__(self, folder: str, client: str) -> None:
        self.path = os.path.join(folder, "lock")
        self.client = client
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0, *, record: bool = True) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise ClientBusy.
        With ``record``, the holder's pid is written into the lock file."""
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise ClientBusy(
                        f"client [{self.client}] is already being synced by another escale process "
                        f"(lock {self.path})") from None
                time.sleep(0.2)
        if record:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class SyncClient:
    """Synchronises one configured client; one pass at a time."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        stop: threading.Event | None = None,
        allow_mass_deletion: bool = False,
        lease_wait: float = 0.0,
        kdf: KdfParams | None = None,
        relay_factory: Callable[[], Relay] | None = None,
        dry_run: bool = False,
        host: str | None = None,
    ) -> None:
        self.settings = settings
        #: what this client's conflict copies are named after: ``<label>@<host>``
        #: (``host``: this machine's host name unless given)
        self.conflict_label = conflict_label(settings.label, host)
        self.stop = stop or threading.Event()
        self.allow_mass_deletion = allow_mass_deletion
        self.lease_wait = lease_wait
        self.kdf = kdf
        self.dry_run = dry_run
        #: the plan of the last pass (what a dry run reports)
        self.last_plan: Plan | None = None
        #: a dry run found no repository on the relay, which the first real pass creates
        self.would_create = False
        bucket = TokenBucket(settings.bandwidth_limit) if settings.bandwidth_limit else None

        def backend() -> Relay:
            inner = make_relay(settings.relay)
            return RetryingRelay(ThrottledRelay(inner, bucket) if bucket is not None else inner)

        factory = relay_factory or backend
        self._relay_factory: Callable[[], Relay] = (lambda: ReadOnlyRelay(factory())) if dry_run else factory
        self.state_dir = state_dir_for(settings)
        self.lock = ClientLock(self.state_dir, settings.name)
        self.last_report: PassReport | None = None
        #: the checksum algorithm in use: the repository's, else the configured one
        self.checksum: str | None = settings.checksum
        self._secret: KeySecret | None = None
        #: called as ``on_progress(done, total)`` with the transfers of a pass
        self.on_progress: Callable[[int, int], None] | None = None
        #: anomalies are logged at WARNING/ERROR once in this process (later
        #: passes log them at DEBUG: a daemon passes every ``refresh`` seconds)
        self._announce = Announcer(settings.name, log)

    # ----------------------------------------------------------- setup

    def _load_secret(self) -> KeySecret:
        if self._secret is None:
            self._secret = load_secret(self.settings.key_file, self.settings.passphrase)
        return self._secret

    def _open(self, db: StateDB, relay: Relay) -> Repository:
        """Attach to the repository on ``relay`` (see :mod:`escale.sync.attach`):
        created only if none exists and this client never synced with one;
        RepositoryGone if the one it knows is no longer there."""
        s = self.settings
        spool = os.path.join(self.state_dir if not self.dry_run else os.path.dirname(db.path), "spool")
        opened = open_client_repository(
            s, db, relay, spool_dir=spool, secret=self._load_secret if s.encryption else None, kdf=self.kdf,
            create=not self.dry_run, on_step=faults.step, pusher_label=self.conflict_label)
        if opened.checksum != s.checksum and self._announce.first_time(f"checksum:{opened.checksum}"):
            log.info("[%s] the repository on %s uses checksum %s (configured: %s); using %s", s.name,
                     relay.describe(), opened.checksum, s.checksum, opened.checksum)
        self.checksum = opened.checksum
        return opened.repo

    # ----------------------------------------------------------- the pass

    def run_pass(self, *, lock_wait: float = 0.0) -> PassReport:
        """Run one pass. Never raises for per-file problems (they are in the
        report's ``errors``); raises EscaleError when the pass as a whole could
        not run (relay unreachable, wrong key, client busy)."""
        report = PassReport(self.settings.name, started=time.time())
        if self.dry_run:
            return self._dry_pass(report, lock_wait)
        self.lock.acquire(lock_wait)
        try:
            os.makedirs(self.settings.local_path, exist_ok=True)
            db = StateDB(os.path.join(self.state_dir, "state.db"))
            relay = self._relay_factory()
            try:
                copied = check_home(db, self.state_dir, self.settings.local_path, client=self.settings.name)
                if copied:
                    report.warnings.append(copied)
                relay.open()
                repo = self._open(db, relay)
                self._pass(db, repo, report)
            finally:
                relay.close()
                db.close()
        except EscaleError as exc:
            report.ok = False
            report.errors.append(str(exc))
            raise
        finally:
            self.lock.release()
            report.finished = time.time()
            self.last_report = report
        return report

    def _dry_pass(self, report: PassReport, lock_wait: float) -> PassReport:
        """A pass that plans and stops (see the module's docstring): the lock
        is taken when the state folder exists (it is never created), the state
        database is copied into a temporary folder, removed afterwards."""
        locked = os.path.isdir(self.state_dir)
        if locked:
            self.lock.acquire(lock_wait, record=False)
        scratch = tempfile.mkdtemp(prefix="escale-dry-run-")
        try:
            copy = os.path.join(scratch, "state.db")
            original = os.path.join(self.state_dir, "state.db")
            if os.path.exists(original):
                # read through SQLite (consistent with its journal); a read-only
                # connection would leave -wal/-shm files behind, this one removes them
                source = sqlite3.connect(original, timeout=30)
                target = sqlite3.connect(copy)
                try:
                    source.backup(target)
                finally:
                    target.close()
                    source.close()
            db = StateDB(copy)
            relay = self._relay_factory()
            try:
                relay.open()
                try:
                    repo = self._open(db, relay)
                except RepositoryGone:
                    if os.path.exists(original):
                        raise
                    self._plan_new_repository(report)
                else:
                    self._pass(db, repo, report)
            finally:
                relay.close()
                db.close()
        except EscaleError as exc:
            report.ok = False
            report.errors.append(str(exc))
            raise
        except sqlite3.Error as exc:
            raise EscaleError(f"[{self.settings.name}] cannot read the state database for a dry run: {exc}") from exc
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if locked:
                self.lock.release()
            report.finished = time.time()
            self.last_report = report
        return report

    def _plan_new_repository(self, report: PassReport) -> None:
        """Dry run of a client that never synced, on a relay without a
        repository: the first real pass would create one; plan against that
        empty repository (:attr:`would_create` tells the caller)."""
        s = self.settings
        self.would_create = True
        scanned = scan(s.local_path, s.filters, checksum=None, db=None, persist_cache=False)
        report.warnings.extend(scanned.warnings)
        # the scan's own map, less what it could not confirm (no dict of every file built)
        local = _without(scanned.files, {p for p in scanned.files if scanned.is_unconfirmed(p)})
        self.last_plan = plan(local, {}, {}, mode=s.mode, label=self.conflict_label, access={},
                              deletion_guard=s.deletion_guard, allow_mass_deletion=self.allow_mass_deletion,
                              local_root_missing=scanned.root_missing)

    def _pass(self, db: StateDB, repo: Repository, report: PassReport) -> None:
        """One pass on the opened ``repo``; the transfer connections it opens
        (:class:`TransferPool`, shared by its read of the relay state and its
        downloads) are closed when it returns."""
        count = transfer_connections(self.settings.transfers, repo.relay)
        pool = TransferPool(self._relay_factory, count, name="transfer") if count > 1 else None
        try:
            self._pass_on(db, repo, report, pool)
        finally:
            if pool is not None:
                pool.close()

    def _pass_on(self, db: StateDB, repo: Repository, report: PassReport, pool: TransferPool | None) -> None:
        s = self.settings
        flag = os.path.join(self.state_dir, ALLOW_DELETIONS)
        cache = db.meta_cache()
        quiet: QuietCheck | None = None
        access = db.access()
        if not self.dry_run:
            record = cache.get(SNAPSHOT_KEY)
            quiet, unchanged = QuietCheck.begin(s, repo, access, record)
            if unchanged and not os.path.exists(flag):
                log.debug("[%s] nothing changed since the last pass that had nothing to do", s.name)
                report.relay_bytes = quiet.relay_bytes
                Trash.of(s, self.state_dir).prune_due()
                return
            if record is not None:
                del cache[SNAPSHOT_KEY]
        # reading phase: its writes (caches, versions seen) are batched, see StateDB.batch
        with db.batch():
            state = self._read_state(repo, pool)
            for line in state.warnings:
                self._announce(report, line, level=logging.ERROR)
            base = db.base()
            frozen = rolled_back(db, repo, state, base, report, self._announce)
            remote = remote_view(s, db, repo, state, frozen)
            scanned = scan(s.local_path, s.filters, checksum=self.checksum, db=db, persist_cache=s.checksum_cache,
                           known=base)
            if s.checksum_cache and not scanned.root_missing:
                # the cache shrinks when files go (entries of paths not seen now but not
                # confirmed absent are kept: the file may be back readable next pass)
                db.prune_checksums(scanned.files, also_keep=scanned.is_unconfirmed)
        for line in scanned.warnings:
            report.warnings.append(line)
        unconfirmed = _unconfirmed(scanned, base, remote, scanned.files)
        frozen |= unconfirmed
        if scanned.leftovers and not self.dry_run:
            removed = localfs.remove_leftovers(s.local_path, scanned.leftovers)
            if removed:
                log.info("[%s] removed %d temporary files left by an interrupted pass", s.name, removed)
        resend = [a for a in lost_payloads(s, repo, state, scanned.files) if a.path not in frozen]
        frozen |= {a.path for a in resend}
        # frozen paths leave the three views in place (no second copy of a view of the whole tree)
        local = _without(scanned.files, frozen)
        base = _without(base, frozen)
        remote = _without(remote, frozen)
        allowed_once = os.path.exists(flag)
        if allowed_once:
            log.info("[%s] %s found: deletions held back by the mass-deletion guard are applied in this pass",
                     s.name, flag)
        the_plan = plan(local, remote, base, mode=s.mode, label=self.conflict_label, access=access,
                        deletion_guard=s.deletion_guard,
                        allow_mass_deletion=self.allow_mass_deletion or allowed_once,
                        local_root_missing=scanned.root_missing, local_folders=scanned.folders)
        the_plan.actions.extend(resend)
        self.last_plan = the_plan
        # the scan's map and the base are not read after the plan (its actions
        # hold what they need of them): dropped here, so that what the local and
        # relay phases allocate reuses their memory instead of adding to it
        del local, base, scanned
        for note in the_plan.notes:
            log.warning("[%s] %s", s.name, note)
        report.held = [a.path for a in the_plan.held]
        if self.dry_run:
            return
        progress = TransferProgress(sum(1 for a in the_plan.actions if a.kind in TRANSFERS), self.on_progress)
        progress.start()
        trash = Trash.of(s, self.state_dir)
        executor = Executor(s, db, repo, report, announce=self._announce, progress=progress, stop=self.stop,
                            trash=trash, open_relay=self._relay_factory, pool=pool)  # transfers: more connections
        relay_due = relay_needed = the_plan.needs_lease or maintenance_due(repo, state)
        later = the_plan
        if s.priority == "upload" and relay_due:
            # priority = upload: send what is pending before receiving (on connections of its own:
            # the read's are closed first, so that a server limiting connections lets them open),
            # except a send that would replace a version this pass still receives
            first, later = the_plan.split_for_upload_priority()
            _release(executor, pool)
            run_relay_phase(executor, first, self._relay_factory, wait=self.lease_wait)
            relay_due = later.needs_lease and not report.busy
        if not self.stop.is_set():
            executor.run_local(state, the_plan)
        # what was not received stays so (only the local phase receives; the executor
        # lists what it did not complete); the relay's view is not read after this,
        # and is dropped before the relay phase
        pulls = executor.unreceived if executor.unreceived is not None else the_plan.of_kind(*RECEIVES)
        report.pending_down = len(pulls)
        report.pending_down_bytes = sum(remote[a.path].size for a in pulls if a.path in remote)
        del pulls, remote
        _release(executor, pool)  # the relay phase opens connections of its own
        repo.flush_acks()  # the index layout's one acknowledgement record (before the relay phase)
        if relay_due and not self.stop.is_set():
            run_relay_phase(executor, later, self._relay_factory, wait=self.lease_wait, state=state)
        report.pending_up = sum(1 for a in the_plan.actions if a.kind.startswith("push")) - len(
            report.pushed) - len(report.deleted_remote)
        sent = set(report.pushed)
        report.pending_up_bytes = sum(a.expect_local.size for a in the_plan.of_kind("push", "push_copy")
                                      if a.expect_local and (a.copy_path or a.path) not in sent)
        del sent  # (a slot per file sent: not held beside the next set, nor through what follows)
        report.relay_bytes = state.stored_bytes()
        report.warnings.extend(receivers.after_pass(db, repo, state, s))
        delivery.after_pass(s, db, repo, state, the_plan, report)
        repo.flush_acks()
        trash.prune_due()
        if quiet is not None and was_quiet(
                planned=len(the_plan.actions), held=len(the_plan.held) + len(the_plan.notes), frozen=len(frozen),
                warnings=len(report.warnings) + len(state.warnings) + len(state.rejected),
                errors=len(report.errors), busy=report.busy, relay_due=relay_needed or allowed_once,
                stopped=self.stop.is_set()) and s.after_delivery == "leave":
            snapshot = quiet.encode(report.relay_bytes)
            if snapshot is not None:
                cache[SNAPSHOT_KEY] = snapshot
        if allowed_once and not self.stop.is_set():
            try:
                os.unlink(flag)
            except FileNotFoundError:
                pass
            else:
                log.info("[%s] held deletions allowed for one pass: %s removed", s.name, flag)


    def _read_state(self, repo: Repository, pool: TransferPool | None) -> RelayState:
        """The relay state for this pass (``read_state`` with the change
        marker). With the pass's transfer connections (``pool``: a network
        relay, ``transfers`` above 1), the placeholders not cached yet are
        fetched on them (:mod:`escale.sync.reads`; a connection opens only
        when there is such a placeholder to fetch)."""
        if pool is None:
            return repo.read_state(use_marker=True)
        repo.object_reader = pooled_reader(pool, transfer_connections(self.settings.transfers, repo.relay),
                                           repo.relay)
        try:
            return repo.read_state(use_marker=True)
        finally:
            repo.object_reader = None


_D = TypeVar("_D", bound=dict[str, Any] | RemoteView)


def _release(executor: Executor, pool: TransferPool | None) -> None:
    """Close the pass's transfer connections and take them from ``executor``."""
    executor.pool = None
    if pool is not None:
        pool.close()


def _unconfirmed(scanned: ScanResult, *views: Mapping[str, object]) -> set[str]:
    """The paths of ``views`` whose local absence is not confirmed by the scan
    (:meth:`ScanResult.is_unconfirmed`), without building their union."""
    if not scanned.unconfirmed and not scanned.unlisted:
        return set()
    return {p for view in views for p in view if scanned.is_unconfirmed(p)}


def _without(view: _D, frozen: set[str]) -> _D:
    """``view`` with the paths of ``frozen`` removed, in place; returned."""
    for path in frozen:
        view.pop(path, None)
    return view
