"""The executor: carries out a plan's actions, one at a time.

Local actions (``pull``, ``conflict``, ``pull_copy``, ``delete_local``,
``record``, ``forget``, ``ack``, ``diverged``) need no lease; the relay-side
ones (``push``, ``push_copy``, ``push_delete``) run under the lease the relay
phase holds (:mod:`escale.sync.relay_phase`). Every action re-checks what its
plan was made against: a download replaces the user's file only if that file
is still the one planned on (:mod:`escale.sync.localfs`), a push goes ahead
only if the relay still shows the version planned on. The state database is
updated right after each completed step, so that a crash at any point leaves
a state the next pass completes. One exception, for speed: received files are
written without an ``fsync`` each and *settled* in groups (one ``syncfs``, then
their records in one transaction, then their acknowledgements), so that no
acknowledgement leaves before the file it vouches for is on disk. A group's
``syncfs`` runs on another thread while the next files are written; the
group is recorded once it has returned. Big files (``localfs.FLUSH_ALONE_MIN``)
are flushed on their own instead, and a group of only those, with nothing else
changed locally meanwhile, is settled by flushing their folders, not the whole
file system (see :meth:`Executor._barrier`). A crash
before a group is settled leaves files whose record is missing: the next pass
finds them identical to the relay's versions and records them. The
nameless files that new downloads are written to are made ahead on another
thread when a pass receives many (:class:`localfs.NamelessAhead`): file
creation is most of the kernel's cost of a small file. The records of a
settled group, and those of a commit's pushed files, are written with one
prepared statement per table.

Per-action problems never stop the pass: a file changed meanwhile is skipped,
a file behind a link or unreadable is skipped and announced, a local or
protocol error is reported in the pass's ``errors``. Whatever concerns the
whole pass (the relay unreachable, the lease lost) is raised.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from escale.config.settings import ClientSettings
from escale.errors import EscaleError, LeaseLost, LocalError, ProtocolError, RelayNotFound, RelayQuotaExceeded
from escale.protocol.lease import Lease
from escale.protocol.objects import Placeholder
from escale.protocol.repository import BigReservation, BigUpload, LocalVersion, RelayState, Repository, StagedPayload
from escale.relay import Relay
from escale.sync import delivery, faults, localfs
from escale.sync.hook import run_hook
from escale.sync.planner import RECEIVES, Action, ActionKind, BaseEntry, LocalFile, Plan
from escale.sync.report import Announcer, PassReport, TransferProgress
from escale.sync.state import Delivery, StateDB
from escale.sync.transfers import (
    Acknowledgements,
    BigUploads,
    Downloads,
    TransferPool,
    Unsealed,
    Uploads,
    transfer_connections,
)
from escale.sync.trash import Trash

log = logging.getLogger(__name__)

#: Received files wait for one durability barrier (``syncfs``) before they are
#: recorded and acknowledged: at most this many of them ...
SETTLE_FILES = 2000
#: ... or for at most this long (so that a slow pull still acknowledges as it goes;
#: not when a fault test numbers the steps, see :func:`faults.steps_watched`).
SETTLE_SECONDS = 2.0
#: The placeholder layout commits the placeholders of uploaded payloads in
#: groups (one durability barrier each on a local folder): at most this many ...
GROUP_FILES = 1000
#: ... or those uploaded within this long (a slow push still commits as it goes;
#: not when a fault test numbers the steps).
GROUP_SECONDS = 2.0
#: A pass with at least this many new files to receive makes their files ahead
#: on another thread (:class:`localfs.NamelessAhead`).
NAMELESS_AHEAD_MIN = 16
#: With several transfers, at most this many acknowledgements are being
#: written on their connections at once (the settle hands them over in groups).
ACKS_IN_FLIGHT = 256
#: A received file's checksum goes into the scanner's cache only when the
#: mtime escale gave it is at least this much older than the file's ctime
#: after the rename (see :func:`received_checksum_entries`).
RECEIVED_CACHE_MARGIN_NS = 2_000_000_000
#: The relay-side actions that :meth:`Executor.run_pushes` carries out.
PUSHES: tuple[ActionKind, ...] = ("push", "push_copy", "push_delete")


@dataclass(frozen=True)
class _Received:
    """A file a pull wrote into the local folder, waiting to be settled."""

    path: str
    placeholder: Placeholder
    stat: os.stat_result
    ack: bool


def received_checksum_entries(received: list[_Received]) -> list[tuple[str, os.stat_result, str]]:
    """The checksum cache entries of received files that the next scan may
    trust without reading them again: (path, stat after the rename, checksum).

    The checksum was verified while the content was written, and the stat
    was taken after the file got its name; what must be ruled out is a local
    edit between that rename and that stat, which the cache would then pair
    with the old checksum and the next scan would miss. A file qualifies
    only when its size and mtime are those escale wrote (the placeholder's),
    and that mtime is :data:`RECEIVED_CACHE_MARGIN_NS` older than its ctime:
    an edit meanwhile would have set the mtime to about its ctime. Any other
    file (no checksum, no mtime kept, a fresh mtime) is hashed by the next
    scan as before."""
    entries = []
    for item in received:
        st, ph = item.stat, item.placeholder
        if ph.checksum and st.st_size == ph.size and st.st_mtime_ns == ph.mtime_ns \
                and st.st_mtime_ns + RECEIVED_CACHE_MARGIN_NS <= st.st_ctime_ns:
            entries.append((item.path, st, ph.checksum))
    return entries


class _Barrier:
    """One durability barrier (``flush``, see :meth:`Executor._barrier`)
    running on a thread of its own: the kernel flushes one group of received
    files while the pass writes the next (``syncfs`` and ``fsync`` release
    the interpreter). It covers what ``flush`` covers of the writes made
    before it began."""

    def __init__(self, flush: Callable[[], None], root: str) -> None:
        self._root = root
        self._error: LocalError | None = None
        self._flushed = False
        self._thread = threading.Thread(target=self._run, args=(flush,), name="settle-barrier", daemon=True)
        self._thread.start()

    def _run(self, flush: Callable[[], None]) -> None:
        try:
            flush()
            self._flushed = True
        except LocalError as exc:  # raised by wait(), on the pass's thread
            self._error = exc

    def done(self) -> bool:
        """Whether the barrier has ended (then :meth:`wait` returns at once)."""
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Wait for the barrier; raises what it raised (LocalError when the
        kernel reported a write error: nothing it covers is known durable)."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        if not self._flushed:  # the thread died otherwise: nothing is known durable
            raise LocalError(f"cannot flush {self._root} to disk", path=self._root)


@dataclass
class _SentRows:
    """The records of committed pushes, buffered so that a commit's many
    files are written with one prepared statement per table (in the batch of
    :meth:`Executor._run_after_commit`)."""

    seen: list[tuple[str, int]] = field(default_factory=list)
    bases: list[tuple[str, BaseEntry]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    def write(self, db: StateDB) -> None:
        """Write what is buffered (versions seen, bases, delivery records) and empty the buffer."""
        seen, bases, deliveries = self.seen, self.bases, self.deliveries
        self.seen, self.bases, self.deliveries = [], [], []
        db.set_seen_many(seen)
        db.set_bases(bases)
        db.set_deliveries(deliveries)


@dataclass(frozen=True, slots=True)
class _Sent:
    """A push to record once its commit is on the relay (what
    :meth:`Executor._record_sent` needs of it: the action and the committed
    version's key, number and checksum); a compact row, not a closure holding
    the placeholder."""

    action: Action
    key: str
    version: int
    checksum: str | None


#: Rows of pushed files buffered before they are written (in the same batch).
_SENT_ROWS_BUFFER = 1024


class Executor:
    """Runs the actions of one pass of client ``settings``.

    ``report`` collects what was done, ``announce`` the anomalies, ``progress``
    counts the transfers; ``stop`` ends a loop between two actions.
    ``open_relay`` makes new connections to the relay: with it, payloads are
    downloaded and uploaded on up to ``settings.transfers`` connections at
    once (:mod:`escale.sync.transfers`); without it, one at a time on the
    repository's own connection. ``pool``: the pass's transfer connections
    when it opened them already (its read of the relay state used them):
    :meth:`run_local` then uses them instead of opening its own, and never
    closes them (their owner does).
    """

    def __init__(
        self,
        settings: ClientSettings,
        db: StateDB,
        repo: Repository,
        report: PassReport,
        *,
        announce: Announcer,
        progress: TransferProgress,
        stop: threading.Event,
        trash: Trash | None = None,
        open_relay: Callable[[], Relay] | None = None,
        pool: TransferPool | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.repo = repo
        self.report = report
        self.announce = announce
        self.progress = progress
        self.stop = stop
        #: where a local file a pull replaces or deletes is kept first (None: not kept)
        self.trash = trash
        self.open_relay = open_relay
        #: the pass's transfer connections, if it opened them already (its read of the
        #: relay state used them): run_local's downloads use them, their owner closes them
        self.pool = pool
        #: the receiving actions (pull, pull_copy, conflict) that :meth:`run_local`
        #: did not complete (failed, skipped, or not reached when stopped); None
        #: until it ran
        self.unreceived: list[Action] | None = None
        #: received files are written without their own fsync and made durable
        #: together (see _settle) where the platform allows it
        self.bulk_durability = localfs.BULK_DURABILITY
        #: what to record once the commits made so far are on the relay
        self._after_commit: list[Callable[[], None] | _Sent] = []
        #: the state-database rows of pushed files, written at the end of _run_after_commit
        self._sent_rows = _SentRows()
        #: pushes whose payload is on the relay and whose placeholder is not
        #: committed yet (the placeholder layout commits them as a group, :meth:`_commit_group`)
        self._group: list[tuple[Action, StagedPayload]] = []
        self._group_since = time.monotonic()
        #: files received but not yet durable, recorded and acknowledged
        self._unsettled: list[_Received] = []
        #: whether the local folder changed, since the last barrier began, in a
        #: way that only a barrier of the whole file system covers (a file not
        #: flushed on its own, a deletion, a rename aside, a version kept);
        #: otherwise flushing the folders of the received files is enough
        self._unflushed_writes = False
        #: received files whose barrier runs in the background (see _settle)
        self._flushing: tuple[list[_Received], _Barrier] | None = None
        self._unsettled_since = time.monotonic()
        #: groups are cut by count only, not by time, when a fault test numbers the steps
        self._steps_watched = faults.steps_watched()
        #: the payloads run_local's downloads fetch ahead (None: fetched one by one)
        self._downloads: Downloads | None = None
        #: the files run_local's new downloads are written to, made ahead (None: made one by one)
        self._ahead: localfs.NamelessAhead | None = None
        #: acknowledgements written on the transfers' connections (several transfers only)
        self._acks: Acknowledgements | None = None
        #: the upload connections opened ahead of the lease (see connect_uploads)
        self._upload_pool: TransferPool | None = None

    def _connections(self) -> int:
        """How many transfers run at once (1: serial, on the main connection)."""
        if self.open_relay is None:
            return 1
        return transfer_connections(self.settings.transfers, self.repo.relay)

    # ----------------------------------------------------------- local side

    def run_local(self, state: RelayState, the_plan: Plan) -> None:
        """Every local action of ``the_plan``, in order, against relay ``state``.

        With several transfers, the payloads of the downloads are fetched
        ahead on other connections (:class:`Downloads`), and the
        acknowledgements of settled files are written on them too
        (:class:`Acknowledgements`; every one is on the relay before this
        returns, or its failure is raised); every action is still carried out
        here, in order."""
        count = self._connections()
        pool: TransferPool | None = self.pool if count > 1 else None
        owned = pool is None and count > 1 and self.open_relay is not None
        if owned and self.open_relay is not None:
            # one pool (its threads start on first use) for the downloads and the acknowledgements
            pool = TransferPool(self.open_relay, count, name="download")
        if pool is not None:
            # every payload (placeholder layout), or the big objects (index layout: pages are fetched here)
            wanted = [ph for action in the_plan.actions if _fetches(action)
                      and (ph := state.latest.get(action.path)) is not None and ph.version == action.expect_version
                      and self.repo.fetchable_apart(ph)]
            if len(wanted) > 1:
                self._downloads = Downloads(self.repo, wanted, pool, ahead=count, spool_dir=self.repo.spool_dir)
            if self.repo.acknowledges_apart():
                self._acks = Acknowledgements(self.repo, pool, window=ACKS_IN_FLIGHT,
                                              on_written=lambda path: faults.step(f"acknowledged {path}"))
        try:
            self._ahead = self._nameless_ahead(state, the_plan)
            self._run_local(state, the_plan)
        except BaseException:
            self._settle_after_failure()
            self._finish_acks_after_failure()
            raise
        else:
            self._settle()
            if self._acks is not None:
                self._acks.finish()
        finally:
            if self._ahead is not None:
                self._ahead.close()
                self._ahead = None
            if self._acks is not None:
                self._acks.close()
                self._acks = None
            if self._downloads is not None:
                self._downloads.close()
                self._downloads = None
            if pool is not None and owned:
                pool.close()

    def _acknowledge(self, placeholder: Placeholder, path: str) -> None:
        """Acknowledge ``placeholder`` (received or kept at ``path``): handed
        to the transfers' connections when there are several (written while
        the pass goes on; :meth:`run_local` waits for them), else written now."""
        if self._acks is not None:
            self._acks.send(placeholder, path)
        else:
            self.repo.acknowledge(placeholder)
            faults.step(f"acknowledged {path}")

    def _finish_acks_after_failure(self) -> None:
        """The pass is failing: wait for the acknowledgements handed over, and
        only log what goes wrong meanwhile (the next pass writes those)."""
        if self._acks is None:
            return
        try:
            self._acks.finish()
        except EscaleError as exc:
            log.warning("[%s] acknowledgements not all written: %s (the next pass does it)",
                        self.settings.name, exc)

    def _nameless_ahead(self, state: RelayState, the_plan: Plan) -> localfs.NamelessAhead | None:
        """The files that ``the_plan``'s new downloads (not fetched apart)
        will be written to, made ahead on another thread
        (:class:`localfs.NamelessAhead`); None when there are few, or when
        the local folder is held in memory
        (:data:`localfs.IN_MEMORY_FILE_SYSTEMS`: the thread would cost more
        than it saves)."""
        if not localfs.NAMELESS_AHEAD:
            return None
        rels = [a.path for a in the_plan.actions if a.kind == "pull" and a.expect_local is None
                and not (self._downloads is not None and (ph := state.latest.get(a.path)) is not None
                         and self.repo.fetchable_apart(ph))]
        if len(rels) < NAMELESS_AHEAD_MIN:
            return None
        root = self.settings.local_path
        if (kind := localfs.file_system_type(root)) in localfs.IN_MEMORY_FILE_SYSTEMS:
            log.debug("[%s] %s is on %s: no files made ahead", self.settings.name, root, kind)
            return None
        return localfs.NamelessAhead(root, rels)

    # ----------------------------------------------------------- received files

    def _settle_if_due(self) -> None:
        """Record the group whose barrier has ended; start the barrier of the
        received files once enough of them, or old enough ones, wait."""
        timed = not self._steps_watched  # see faults.steps_watched
        if timed and self._flushing is not None and self._flushing[1].done():
            self._finish_flushing()
        if len(self._unsettled) >= SETTLE_FILES or (
                timed and time.monotonic() - self._unsettled_since >= SETTLE_SECONDS):
            self._settle(background=True)

    def _settle(self, *, background: bool = False) -> None:
        """Make the files received since the last call durable with one
        barrier, then record them (one transaction) and acknowledge them.

        With ``background`` the barrier runs on a thread of its own while
        the pass writes the next files (:class:`_Barrier`), and the group is
        recorded once it has ended (:meth:`_settle_if_due`, or the next
        call); without, this returns once every group is settled. Either way
        a group is recorded only after a barrier that began once all its
        files were written has ended: what is recorded is on disk. A group's
        barrier runs only when the previous group's has ended and that
        group is recorded (groups settle in order).

        Raises LocalError when a barrier fails (that group is not recorded
        nor acknowledged: the next pass finds those files identical to the
        relay's versions and records them then), or what an acknowledgement
        raises (the files are recorded; the next pass acknowledges the rest)."""
        self._finish_flushing()
        pending, self._unsettled = self._unsettled, []
        if not pending:
            return
        flush = self._barrier(pending)
        if background:
            self._flushing = (pending, _Barrier(flush, self.settings.local_path))
            return
        flush()
        self._record_settled(pending)

    def _barrier(self, pending: list[_Received]) -> Callable[[], None]:
        """What makes ``pending`` (and every other local write since the last
        barrier began) durable: when each of those files was flushed on its
        own and nothing else changed locally, an ``fsync`` of the folders
        that name them (:func:`localfs.make_folders_durable`), falling back to
        the file-system-wide barrier if one of them cannot be flushed; else
        that barrier (:func:`localfs.make_durable`), which also waits for
        whatever else is being written to that file system. Raises
        LocalError as :func:`localfs.make_durable`."""
        root = self.settings.local_path
        whole, self._unflushed_writes = self._unflushed_writes, False
        if whole:
            return lambda: localfs.make_durable(root)
        rels = [item.path for item in pending]

        def folders() -> None:
            try:
                localfs.make_folders_durable(root, rels)
            except LocalError as exc:
                log.debug("[%s] %s: flushing the whole file system instead", self.settings.name, exc)
                localfs.make_durable(root)

        return folders

    def _finish_flushing(self) -> None:
        """Wait for the barrier running in the background, if any, then
        record and acknowledge its group (raises as :meth:`_settle`)."""
        if self._flushing is None:
            return
        pending, barrier = self._flushing
        self._flushing = None
        barrier.wait()
        self._record_settled(pending)

    def _record_settled(self, pending: list[_Received]) -> None:
        """Record and acknowledge ``pending``, whose files are durable."""
        faults.step(f"flushed {len(pending)} received")
        with self.db.batch():
            self._record_received(pending)
        self._acknowledge_received(pending)

    def _settle_after_failure(self) -> None:
        """The pass is failing: still settle what was received, and only log
        what goes wrong meanwhile (the pass's own error is the one raised)."""
        try:
            self._finish_flushing()
        except EscaleError as exc:
            log.warning("[%s] received files not all recorded: %s (the next pass does it)",
                        self.settings.name, exc)
        try:
            self._settle()
        except EscaleError as exc:
            log.warning("[%s] received files not all recorded: %s (the next pass does it)",
                        self.settings.name, exc)

    def _record_received(self, received: list[_Received]) -> None:
        """Record each received file as the synced version of its path (and
        its delivery record): two prepared statements for all of them, in the
        caller's batch."""
        self.db.set_bases([(item.path, BaseEntry(item.stat.st_size, item.stat.st_mtime_ns, item.placeholder.checksum,
                                                 item.placeholder.version, "remote")) for item in received])
        for item in received:
            faults.step(f"recorded {item.path}")
        now = time.time()
        self.db.set_deliveries([delivery.received_record(item.placeholder, item.stat.st_size, now)
                                for item in received])
        if self.settings.checksum_cache:
            self.db.cache_checksums(received_checksum_entries(received))

    def _acknowledge_received(self, received: list[_Received]) -> None:
        """Acknowledge the received files that must be, then run the hook."""
        for item in received:
            if item.ack:
                self._acknowledge(item.placeholder, item.path)
            run_hook(self.settings, "received", item.path)

    def _run_local(self, state: RelayState, the_plan: Plan) -> None:
        report = self.report
        unreceived: list[Action] = []
        self.unreceived = unreceived
        for at, action in enumerate(the_plan.actions):
            if action.kind.startswith("push"):
                continue
            if self.stop.is_set():
                unreceived.extend(a for a in the_plan.actions[at:] if a.kind in RECEIVES)
                return
            receives = action.kind in RECEIVES
            if receives:
                unreceived.append(action)  # until it completes
                noted = len(report.pulled) + len(report.conflicts)
            try:
                self.local(state, action)
                self.progress.advance(action)
                # received: carried out, and noted as received or as a conflict (a pull_copy
                # whose copy exists already receives nothing)
                if receives and len(report.pulled) + len(report.conflicts) > noted:
                    unreceived.pop()
            except localfs.LocalChanged as exc:
                report.skipped.append(action.path)
                log.info("[%s] %s", self.settings.name, exc)
            except (localfs.UnsafeLocalPath, localfs.LocalUnreadable) as exc:
                # a link made, or a permission taken, during the pass: skipped, never written through
                report.skipped.append(action.path)
                self.announce(report, str(exc))
            except RelayNotFound as exc:
                if _fetches(action) and (ph := state.latest.get(action.path)) is not None \
                        and self.repo.replaced_meanwhile(ph):
                    # another client's newer version superseded it during this pass
                    report.skipped.append(action.path)
                    log.info("[%s] %s: version %d was replaced on the relay meanwhile; the next pass "
                             "receives the new one", self.settings.name, action.path, ph.version)
                else:
                    report.errors.append(f"{action.path}: {exc}")
                    log.error("[%s] %s: %s", self.settings.name, action.path, exc)
            except (LocalError, ProtocolError) as exc:
                report.errors.append(f"{action.path}: {exc}")
                log.error("[%s] %s: %s", self.settings.name, action.path, exc)
            except EscaleError as exc:
                if exc.transient or exc.exit_code != 65:
                    raise
                # integrity failure: the download was refused, the local file untouched
                report.errors.append(f"{action.path}: {exc}")
                log.error("[%s] %s: %s", self.settings.name, action.path, exc)

    def _placeholder(self, state: RelayState, action: Action) -> Placeholder:
        """The relay version ``action`` was planned on; RelayNotFound if it moved."""
        ph = state.latest.get(action.path)
        if ph is None or ph.version != action.expect_version:
            raise RelayNotFound(f"version {action.expect_version} of {action.path} is no longer on the relay",
                                name=action.path)
        return ph

    def _download(self, ph: Placeholder, rel: str, expect: LocalFile | None, *,
                  durable: bool = True) -> os.stat_result:
        """Fetch ``ph`` into ``rel`` of the local folder (atomically, never
        through a symbolic link, only if the file is still ``expect``; on disk
        before it returns if ``durable``, else at the next :meth:`_settle`)."""
        faults.step(f"download {ph.path}")
        mtime_ns = ph.mtime_ns if self.settings.use_mtime else None
        # fetched, opened and verified ahead on another connection, or fetched now
        prepared = self._downloads.take(ph) if self._downloads is not None else None
        if prepared is None:
            st = localfs.write_atomically(self.settings.local_path, rel, lambda handle: self.repo.fetch(ph, handle),
                                          expect=expect, durable=durable, mtime_ns=mtime_ns, ahead=self._ahead)
        else:
            with prepared:
                st = localfs.install_prepared(self.settings.local_path, rel, prepared, expect=expect,
                                              durable=durable, mtime_ns=mtime_ns)
        faults.step(f"downloaded {ph.path}")
        return st

    def local(self, state: RelayState, action: Action) -> None:
        """Carry out one local action; raises what :meth:`run_local` sorts out."""
        db, repo, report = self.db, self.repo, self.report
        root = self.settings.local_path
        name = self.settings.name
        path = action.path
        localfs.safe_join(root, path)  # refuses an unsafe path before anything is done
        if action.kind not in ("pull", "record", "forget", "ack", "diverged"):
            self._unflushed_writes = True  # renamed aside, deleted, copied: the next barrier flushes everything
        if action.kind in ("pull", "conflict"):
            # (a conflict that only frees the name may have no relay version: a folder took the name)
            ph = self._placeholder(state, action) if action.base is None or action.ack else None
            if action.kind == "conflict":
                assert action.copy_path is not None and action.expect_local is not None
                localfs.rename_aside(root, path, action.copy_path, expect=action.expect_local)
                if action.copy_base is not None:
                    db.set_base(action.copy_path, action.copy_base)
                faults.step(f"conflict copy {path}")
                report.conflicts.append(path)
                log.warning("[%s] conflict on %s: local version kept as %s", name, path, action.copy_path)
                if action.base is not None:  # relay version unavailable, or the name taken: leave it free
                    db.set_base(path, action.base)
                    if ph is not None and action.ack:
                        repo.acknowledge(ph)
                    return
                expect = None
            else:
                expect = action.expect_local
            assert ph is not None
            kept = self.trash.keep(root, path, expect, "replaced") if self.trash and expect else None
            if kept is not None:
                faults.step(f"kept version {path}")
            # a big file is flushed on its own (its transfer did most of it); the rest waits for the barrier
            alone = action.kind == "pull" and ph.size >= localfs.FLUSH_ALONE_MIN
            if kept is not None or not alone:
                self._unflushed_writes = True
            try:
                st = self._download(ph, path, expect, durable=alone or not self.bulk_durability)
            except BaseException:
                if self.trash:
                    self.trash.discard(kept, root)
                raise
            report.pulled.append(path)
            report.bytes_down += st.st_size
            log.info("[%s] received %s (%d bytes) from %s", name, path, st.st_size, ph.pusher_label)
            received = _Received(path, ph, st, action.ack)
            if self.bulk_durability:
                if not self._unsettled:
                    self._unsettled_since = time.monotonic()
                self._unsettled.append(received)
                self._settle_if_due()
            else:
                self._record_received([received])
                self._acknowledge_received([received])
        elif action.kind == "pull_copy":
            ph = self._placeholder(state, action)
            assert action.copy_path is not None
            try:
                st = self._download(ph, action.copy_path, None)
                # the copy holds another client's version: tracked as received (version 0:
                # not on the relay under this name), so that the copy made by every client
                # alike is one file, and a later edit or deletion of it elsewhere applies here
                db.set_base(action.copy_path, BaseEntry(st.st_size, st.st_mtime_ns, ph.checksum, 0, "remote"))
                report.conflicts.append(path)
                log.warning("[%s] %s: relay version from %s kept as %s", name, path, ph.pusher_label,
                            action.copy_path)
            except localfs.LocalChanged:
                log.info("[%s] %s exists already", name, action.copy_path)
            if action.base is not None:
                db.set_base(path, action.base)
            if action.ack:
                repo.acknowledge(ph)
        elif action.kind == "delete_local":
            assert action.expect_local is not None
            kept = self.trash.keep(root, path, action.expect_local, "deleted") if self.trash else None
            if kept is not None:
                faults.step(f"kept version {path}")
            try:
                deleted = localfs.delete_if_unchanged(root, path, action.expect_local)
            except BaseException:
                if self.trash:
                    self.trash.discard(kept, root)
                raise
            if deleted:
                faults.step(f"deleted {path}")
                db.forget(path)
                report.deleted_local.append(path)
                log.info("[%s] deleted %s (deleted on the relay)", name, path)
            else:
                if self.trash:
                    self.trash.discard(kept, root)
                report.skipped.append(path)
        elif action.kind == "record":
            assert action.base is not None
            db.set_base(path, action.base)
        elif action.kind == "forget":
            db.forget(path)
        elif action.kind == "ack":
            self._acknowledge(self._placeholder(state, action), path)
        elif action.kind == "diverged":
            self.announce(report, f"{path}: {action.reason}")

    def _when_committed(self, record: Callable[[], None] | _Sent) -> None:
        """Run ``record`` (it writes a commit's outcome to the state database)
        once the commit is on the relay: at once in the placeholder layout;
        in the index layout, together with the others of its delta, in one
        state-database batch (a lost record is harmless: the next pass finds
        the file identical to the relay's version and records it then)."""
        self._after_commit.append(record)
        if len(self._after_commit) == 1:
            self.repo.when_committed(self._run_after_commit)

    def _run_after_commit(self) -> None:
        records, self._after_commit = self._after_commit, []
        rows = self._sent_rows
        with self.db.batch():
            try:
                for record in records:
                    if isinstance(record, _Sent):
                        self._record_sent(record)
                        if len(rows.seen) >= _SENT_ROWS_BUFFER:
                            rows.write(self.db)  # same batch: a bounded buffer, the same outcome
                    else:
                        record()
            finally:
                # what the records of pushed files buffered (_SentRows), in the same batch
                self._sent_rows.write(self.db)

    # ----------------------------------------------------------- relay side

    def run_pushes(self, lease: Lease, state: RelayState, the_plan: Plan) -> None:
        """Every relay-side action of ``the_plan``, under ``lease``, against the
        relay ``state`` read after the lease was taken. Raises LeaseLost.

        With several transfers, payloads are sealed here and uploaded on other
        connections ahead of their commit (:class:`Uploads`); each placeholder
        is still committed here, in order, once its payload is stored. In the
        index layout the big files are uploaded so (:class:`BigUploads`)
        while the small ones are packed here; each big file's entry is packed
        once its upload returned, so the delta naming it follows its data."""
        actions = list(the_plan.of_kind(*PUSHES))
        uploads = self._uploads(lease, state, actions)
        try:
            self._run_pushes(lease, state, actions, uploads)
        finally:
            if uploads is not None:
                uploads.close()
        # the index layout packs pushes into a page: committed here, and only
        # then are they recorded (the callbacks of push); a no-op otherwise
        self.repo.commit_pending(lease, state)

    def connect_uploads(self, the_plan: Plan) -> None:
        """Start opening the connections that :meth:`run_pushes` will upload
        ``the_plan``'s pushes on (none when it uploads one at a time), so
        that they open while the relay phase takes the lease: through
        ``ssh`` a connection takes a tenth of a second or more. They are
        :meth:`run_pushes`'s to use and close; :meth:`close_uploads` closes
        them when the relay phase does not get that far."""
        self.close_uploads()
        if self._upload_kind(list(the_plan.of_kind(*PUSHES))) is not None and self.open_relay is not None:
            self._upload_pool = TransferPool(self.open_relay, self._connections(), name="upload")
            self._upload_pool.connect_ahead()

    def close_uploads(self) -> None:
        """Close the connections :meth:`connect_uploads` opened, if no upload
        took them."""
        if self._upload_pool is not None:
            self._upload_pool.close()
            self._upload_pool = None

    def _upload_kind(self, actions: list[Action]) -> list[bool] | None:
        """How :meth:`_uploads` uploads ``actions`` ahead: None when one at a
        time (in :meth:`push`); else, per action, whether it is a big file
        of the index layout (:class:`BigUploads`; all False: the placeholder
        layout's payloads, :class:`Uploads`)."""
        if self._connections() <= 1 or self.open_relay is None:
            return None
        if not self.repo.pushes_apart():
            big = [a.kind != "push_delete" and a.expect_local is not None
                   and self.repo.pushes_big_apart(a.expect_local.size) for a in actions]
            return big if any(big) else None
        if sum(1 for a in actions if a.kind != "push_delete") < 2:
            return None
        return [False] * len(actions)

    def _uploads(self, lease: Lease, state: RelayState, actions: list[Action]) -> Uploads | BigUploads | None:
        """The uploads ahead of ``actions`` (None: one at a time, in :meth:`push`),
        on the connections :meth:`connect_uploads` opened if it did."""
        kind = self._upload_kind(actions)
        pool, self._upload_pool = self._upload_pool, None
        if kind is None or self.open_relay is None:
            if pool is not None:
                pool.close()
            return None
        count = self._connections()
        if pool is None:
            pool = TransferPool(self.open_relay, count, name="upload")
        if not self.repo.pushes_apart():  # the index layout: its big files, numbered on ``state``

            def stage_big(index: int) -> tuple[BigReservation, BinaryIO]:
                return self._stage_big(lease, state, actions[index])

            return BigUploads(self.repo, lease, kind, stage_big, pool, ahead=count)

        def stage(index: int) -> StagedPayload | Unsealed | None:
            return self._stage(lease, state, actions[index])

        return Uploads(self.repo, lease, state, len(actions), stage, pool, ahead=count)

    def _run_pushes(self, lease: Lease, state: RelayState, actions: list[Action],
                    uploads: Uploads | BigUploads | None) -> None:
        report = self.report
        name = self.settings.name
        for index, action in enumerate(actions):
            if self.stop.is_set():
                break
            try:
                staged = uploads.take(index) if uploads is not None else None
                if action.kind == "push_delete":
                    self._commit_group(lease, state)  # the plan's order: what was uploaded before it first
                self.push(lease, state, action, staged)
                self.progress.advance(action)
            except (localfs.LocalChanged, RelayQuotaExceeded) as exc:
                report.skipped.append(action.path)
                log.info("[%s] %s", name, exc)
            except (localfs.UnsafeLocalPath, localfs.LocalUnreadable) as exc:
                # unreadable (checksum = no finds it only here) or behind a link: not sent this pass
                report.skipped.append(action.path)
                self.announce(report, str(exc))
            except (LocalError, ProtocolError) as exc:
                if isinstance(exc, LeaseLost):
                    raise
                report.errors.append(f"{action.path}: {exc}")
                log.error("[%s] %s: %s", name, action.path, exc)
            if len(self._group) >= GROUP_FILES or (not self._steps_watched and self._group
                                                   and time.monotonic() - self._group_since >= GROUP_SECONDS):
                self._commit_group(lease, state)
        self._commit_group(lease, state)

    def _commit_group(self, lease: Lease, state: RelayState) -> None:
        """Commit the placeholders of the pushes whose payloads were uploaded
        (:meth:`Repository.commit_staged_group`: on a local folder, one
        durability barrier for all of them), then record each in one
        state-database batch. A version another writer took is reported for
        its file; LeaseLost and relay errors end the pass, the group
        unrecorded (its versions are found on the relay next pass, as after
        a crash between a commit and its record)."""
        group, self._group = self._group, []
        if not group:
            return
        outcomes = self.repo.commit_staged_group(lease, state, [staged for _, staged in group])
        records: list[Callable[[], None] | _Sent] = []
        for (action, _), outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, ProtocolError):
                self.report.errors.append(f"{action.path}: {outcome}")
                log.error("[%s] %s: %s", self.settings.name, action.path, outcome)
            else:
                records.append(self._sent_record(action, outcome))
        self._after_commit.extend(records)
        self._run_after_commit()

    @staticmethod
    def _recheck(state: RelayState, action: Action) -> None:
        """LocalChanged unless the relay still shows the version ``action`` was planned on."""
        # the latest *readable* version, as the plan saw it: a version that does
        # not open (forged, corrupted) must not block the path forever; the
        # commit itself goes above every listed number
        latest = state.latest.get(action.copy_path or action.path)
        current = latest.version if latest is not None else 0
        expected = action.expect_version if action.kind != "push_copy" else current
        if current != expected:
            raise localfs.LocalChanged(f"{action.path} changed on the relay meanwhile; re-planned next pass",
                                       path=action.path)

    def _stage(self, lease: Lease, state: RelayState, action: Action) -> StagedPayload | Unsealed | None:
        """Check ``action`` against the relay and seal its file for upload
        (:meth:`Repository.stage_file`), or, where the repository allows it,
        reserve it and leave the sealing to the upload's worker
        (:class:`Unsealed`: the file stays open for it); None for a
        tombstone. Raises what :meth:`push` raises for those steps."""
        self._recheck(state, action)
        if action.kind == "push_delete":
            return None
        local = action.expect_local
        assert local is not None
        relay_path = action.copy_path or action.path
        version = LocalVersion(relay_path, local.size, local.mtime_ns, local.checksum, local.inode, local.ctime_ns)
        handle = localfs.open_for_push(self.settings.local_path, action.path, local)
        handed_over = False
        try:
            faults.step(f"push {relay_path}")
            if self.repo.seals_apart(version.size):
                unsealed = Unsealed(self.repo.reserve_stage(lease, state, version), version, handle)
                handed_over = True  # closed once sealed, or when the uploads close
                return unsealed
            return self.repo.stage_file(lease, state, version, handle)
        finally:
            if not handed_over:
                handle.close()

    def _stage_big(self, lease: Lease, state: RelayState, action: Action) -> tuple[BigReservation, BinaryIO]:
        """Check ``action`` (a big file's push) against the relay, open its
        file as scanned and reserve its object (:meth:`Repository.reserve_big`);
        the opened file is handed over (closed by the upload's worker). Raises
        what :meth:`push` raises for those steps."""
        self._recheck(state, action)
        local = action.expect_local
        assert local is not None
        relay_path = action.copy_path or action.path
        handle = localfs.open_for_push(self.settings.local_path, action.path, local)
        try:
            faults.step(f"push {relay_path}")
            reservation = self.repo.reserve_big(lease, state, LocalVersion(relay_path, local.size, local.mtime_ns,
                                                                           local.checksum, local.inode,
                                                                           local.ctime_ns))
        except BaseException:
            handle.close()
            raise
        return reservation, handle

    def push(self, lease: Lease, state: RelayState, action: Action,
             staged: StagedPayload | BigUpload | None = None) -> None:
        """Carry out one relay-side action: the local file as the next version
        (or under its conflict-copy name), or a tombstone. ``staged``: the
        action's payload, already checked, sealed and uploaded
        (:class:`Uploads`), or its big object, checked and uploaded
        (:class:`BigUploads`; its entry is packed here). In the placeholder
        layout a file's payload is uploaded here (unless ``staged``) and its
        placeholder joins the group :meth:`_commit_group` commits; the index
        layout packs it, and records it once its delta is written."""
        db, repo, report = self.db, self.repo, self.report
        name = self.settings.name
        root = self.settings.local_path
        if staged is None:
            self._recheck(state, action)
        if action.kind == "push_delete":
            faults.step(f"tombstone {action.path}")
            tombstone = repo.commit_tombstone(lease, state, action.path, deliberate=action.deliberate)

            def deleted() -> None:
                self._sent_rows.write(db)  # the records before this one first, in order
                db.set_seen(tombstone.key, tombstone.version)
                faults.step(f"tombstoned {action.path}")
                db.forget(action.path)
                report.deleted_remote.append(action.path)
                log.info("[%s] deleted %s on the relay", name, action.path)

            self._when_committed(deleted)  # at once, or once the index layout's delta is written
            return
        local = action.expect_local
        assert local is not None
        relay_path = action.copy_path or action.path
        if isinstance(staged, BigUpload):
            ph = repo.commit_big(lease, state, staged)
        elif staged is not None or repo.pushes_apart():
            if staged is None:
                staged = self._upload(lease, state, action, local, relay_path)
            staged.close()  # uploaded: only its placeholder is needed now
            if not self._group:
                self._group_since = time.monotonic()
            self._group.append((action, staged))  # committed by _commit_group
            return
        else:
            with localfs.open_for_push(root, action.path, local) as handle:
                faults.step(f"push {relay_path}")
                ph = repo.commit_file(lease, state, LocalVersion(relay_path, local.size, local.mtime_ns,
                                                                  local.checksum, local.inode, local.ctime_ns),
                                      handle)
        # recorded as synced only once on the relay: after the index layout's delta
        self._when_committed(self._sent_record(action, ph))

    def _upload(self, lease: Lease, state: RelayState, action: Action, local: LocalFile,
                relay_path: str) -> StagedPayload:
        """Seal ``action``'s file and upload its payload on this connection
        (:meth:`Repository.send_file`: sealed while sent, or through a spool
        file); its placeholder is left to :meth:`_commit_group`. Raises what
        :meth:`Repository.commit_file` raises for those steps (the room
        reserved is given back; a payload stored all the same is an orphan)."""
        with localfs.open_for_push(self.settings.local_path, action.path, local) as handle:
            faults.step(f"push {relay_path}")
            return self.repo.send_file(lease, state, LocalVersion(relay_path, local.size, local.mtime_ns,
                                                                  local.checksum, local.inode, local.ctime_ns),
                                       handle)

    @staticmethod
    def _sent_record(action: Action, ph: Placeholder) -> _Sent:
        """What records ``action``'s push once ``ph`` is committed."""
        return _Sent(action, ph.key, ph.version, ph.checksum)

    def _record_sent(self, sent: _Sent) -> None:
        """Record a committed push (:meth:`_run_after_commit`, with the others
        of its commit: the rows are buffered, one statement each)."""
        action = sent.action
        local = action.expect_local
        assert local is not None
        relay_path = action.copy_path or action.path
        rows = self._sent_rows
        rows.seen.append((sent.key, sent.version))
        faults.step(f"pushed {relay_path}")
        if action.kind == "push_copy":
            rows.bases.append((relay_path, BaseEntry(local.size, local.mtime_ns, sent.checksum, sent.version, "local",
                                                     local_deleted=True)))
        else:
            rows.bases.append((action.path, BaseEntry(local.size, local.mtime_ns, sent.checksum or local.checksum,
                                                      sent.version, "local")))
        rows.deliveries.append(delivery.sent_record(relay_path, sent.version, local.size, time.time()))
        self.report.pushed.append(relay_path)
        self.report.bytes_up += local.size
        log.info("[%s] sent %s (%d bytes)", self.settings.name, relay_path, local.size)


def _fetches(action: Action) -> bool:
    """Whether ``action`` downloads the relay version it was planned on."""
    return action.kind in ("pull", "pull_copy") or (action.kind == "conflict" and action.base is None)
