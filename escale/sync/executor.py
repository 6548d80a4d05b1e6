"""The executor: carries out a plan's actions, one at a time.

Local actions (``pull``, ``conflict``, ``pull_copy``, ``delete_local``,
``record``, ``forget``, ``ack``, ``diverged``) need no lease; the relay-side
ones (``push``, ``push_copy``, ``push_delete``) run under the lease the relay
phase holds (:mod:`escale.sync.relay_phase`). Every action re-checks what its
plan was made against: a download replaces the user's file only if that file
is still the one planned on (:mod:`escale.sync.localfs`), a push goes ahead
only if the relay still shows the version planned on. The state database is
updated right after each completed step, so that a crash at any point leaves
a state the next pass completes.

Per-action problems never stop the pass: a file changed meanwhile is skipped,
a file behind a link or unreadable is skipped and announced, a local or
protocol error is reported in the pass's ``errors``. Whatever concerns the
whole pass (the relay unreachable, the lease lost) is raised.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import BinaryIO

from escale.config.settings import ClientSettings
from escale.errors import EscaleError, LeaseLost, LocalError, ProtocolError, RelayNotFound, RelayQuotaExceeded
from escale.protocol.lease import Lease
from escale.protocol.objects import Placeholder
from escale.protocol.repository import LocalVersion, RelayState, Repository
from escale.sync import delivery, faults, localfs
from escale.sync.hook import run_hook
from escale.sync.planner import Action, BaseEntry, LocalFile, Plan
from escale.sync.report import Announcer, PassReport, TransferProgress
from escale.sync.state import StateDB
from escale.sync.trash import Trash

log = logging.getLogger(__name__)


class Executor:
    """Runs the actions of one pass of client ``settings``.

    ``report`` collects what was done, ``announce`` the anomalies, ``progress``
    counts the transfers; ``stop`` ends a loop between two actions.
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

    # ----------------------------------------------------------- local side

    def run_local(self, state: RelayState, the_plan: Plan) -> None:
        """Every local action of ``the_plan``, in order, against relay ``state``."""
        report = self.report
        for action in the_plan.actions:
            if action.kind.startswith("push"):
                continue
            if self.stop.is_set():
                return
            try:
                self.local(state, action)
                self.progress.advance(action)
            except localfs.LocalChanged as exc:
                report.skipped.append(action.path)
                log.info("[%s] %s", self.settings.name, exc)
            except (localfs.UnsafeLocalPath, localfs.LocalUnreadable) as exc:
                # a link made, or a permission taken, during the pass: skipped, never written through
                report.skipped.append(action.path)
                self.announce(report, str(exc))
            except (LocalError, ProtocolError, RelayNotFound) as exc:
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

    def _download(self, ph: Placeholder, rel: str, expect: LocalFile | None) -> os.stat_result:
        """Fetch ``ph`` into ``rel`` of the local folder (atomically, never
        through a symbolic link, only if the file is still ``expect``)."""
        def fill(handle: BinaryIO) -> None:
            self.repo.fetch(ph, handle)

        faults.step(f"download {ph.path}")
        st = localfs.write_atomically(self.settings.local_path, rel, fill, expect=expect,
                                      mtime_ns=ph.mtime_ns if self.settings.use_mtime else None)
        faults.step(f"downloaded {ph.path}")
        return st

    def local(self, state: RelayState, action: Action) -> None:
        """Carry out one local action; raises what :meth:`run_local` sorts out."""
        db, repo, report = self.db, self.repo, self.report
        root = self.settings.local_path
        name = self.settings.name
        path = action.path
        localfs.safe_join(root, path)  # refuses an unsafe path before anything is done
        if action.kind in ("pull", "conflict"):
            ph = self._placeholder(state, action)
            if action.kind == "conflict":
                assert action.copy_path is not None and action.expect_local is not None
                localfs.rename_aside(root, path, action.copy_path, expect=action.expect_local)
                faults.step(f"conflict copy {path}")
                report.conflicts.append(path)
                log.warning("[%s] conflict on %s: local version kept as %s", name, path, action.copy_path)
                if action.base is not None:  # relay version unavailable: leave the name free
                    db.set_base(path, action.base)
                    if action.ack:
                        repo.acknowledge(ph)
                    return
                expect = None
            else:
                expect = action.expect_local
            kept = self.trash.keep(root, path, expect, "replaced") if self.trash and expect else None
            if kept is not None:
                faults.step(f"kept version {path}")
            try:
                st = self._download(ph, path, expect)
            except BaseException:
                if self.trash:
                    self.trash.discard(kept, root)
                raise
            db.set_base(path, BaseEntry(st.st_size, st.st_mtime_ns, ph.checksum, ph.version, "remote"))
            faults.step(f"recorded {path}")
            delivery.record_received(db, ph, st.st_size)
            report.pulled.append(path)
            report.bytes_down += st.st_size
            log.info("[%s] received %s (%d bytes) from %s", name, path, st.st_size, ph.pusher_label)
            if action.ack:
                repo.acknowledge(ph)
                faults.step(f"acknowledged {path}")
            run_hook(self.settings, "received", path)
        elif action.kind == "pull_copy":
            ph = self._placeholder(state, action)
            assert action.copy_path is not None
            try:
                self._download(ph, action.copy_path, None)
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
            repo.acknowledge(self._placeholder(state, action))
            faults.step(f"acknowledged {path}")
        elif action.kind == "diverged":
            self.announce(report, f"{path}: {action.reason}")

    # ----------------------------------------------------------- relay side

    def run_pushes(self, lease: Lease, state: RelayState, the_plan: Plan) -> None:
        """Every relay-side action of ``the_plan``, under ``lease``, against the
        relay ``state`` read after the lease was taken. Raises LeaseLost."""
        report = self.report
        name = self.settings.name
        for action in the_plan.of_kind("push", "push_copy", "push_delete"):
            if self.stop.is_set():
                break
            try:
                self.push(lease, state, action)
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
        # the index layout packs pushes into a page: committed here, and only
        # then are they recorded (the callbacks of push); a no-op otherwise
        self.repo.commit_pending(lease, state)

    def push(self, lease: Lease, state: RelayState, action: Action) -> None:
        """Commit one relay-side action: the local file as the next version (or
        under its conflict-copy name), or a tombstone."""
        db, repo, report = self.db, self.repo, self.report
        name = self.settings.name
        root = self.settings.local_path
        # the latest *readable* version, as the plan saw it: a version that does
        # not open (forged, corrupted) must not block the path forever; the
        # commit itself goes above every listed number
        latest = state.latest.get(action.copy_path or action.path)
        current = latest.version if latest is not None else 0
        expected = action.expect_version if action.kind != "push_copy" else current
        if current != expected:
            raise localfs.LocalChanged(f"{action.path} changed on the relay meanwhile; re-planned next pass",
                                       path=action.path)
        if action.kind == "push_delete":
            faults.step(f"tombstone {action.path}")
            tombstone = repo.commit_tombstone(lease, state, action.path)

            def deleted() -> None:
                db.set_seen(tombstone.key, tombstone.version)
                faults.step(f"tombstoned {action.path}")
                db.forget(action.path)
                report.deleted_remote.append(action.path)
                log.info("[%s] deleted %s on the relay", name, action.path)

            repo.when_committed(deleted)  # at once, or once the index layout's delta is written
            return
        local = action.expect_local
        assert local is not None
        relay_path = action.copy_path or action.path
        with localfs.open_for_push(root, action.path, local) as handle:
            faults.step(f"push {relay_path}")
            ph = repo.commit_file(lease, state, LocalVersion(relay_path, local.size, local.mtime_ns,
                                                              local.checksum), handle)

        def sent() -> None:
            db.set_seen(ph.key, ph.version)
            faults.step(f"pushed {relay_path}")
            if action.kind == "push_copy":
                db.set_base(relay_path, BaseEntry(local.size, local.mtime_ns, ph.checksum, ph.version, "local",
                                                  local_deleted=True))
            else:
                db.set_base(action.path, BaseEntry(local.size, local.mtime_ns, ph.checksum or local.checksum,
                                                   ph.version, "local"))
            delivery.record_sent(db, relay_path, ph.version, local.size)
            report.pushed.append(relay_path)
            report.bytes_up += local.size
            log.info("[%s] sent %s (%d bytes)", name, relay_path, local.size)

        # recorded as synced only once on the relay: at once, or after the index layout's delta
        repo.when_committed(sent)
