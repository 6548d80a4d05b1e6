"""One client's synchronisation pass: scan, read the relay, plan, execute.

A pass (:meth:`SyncClient.run_pass`):

1. takes the client's local lock (two processes never work on one client);
2. opens the relay and the repository (header, encryption) and registers the
   client;
3. reads the relay state (no lease needed) and scans the local folder;
4. plans (pure), then executes the local side: downloads, conflict copies,
   local deletions, acknowledgements. Each download goes to a temporary file,
   is verified, and replaces the user's file only if that file did not change;
5. if anything must be written to the relay (pushes, tombstones, reclaimable
   payloads, leftovers), takes the lease, re-reads the relay, re-checks every
   push against the version it was planned on, commits, reclaims, cleans up,
   and releases the lease.

The state database is updated after every completed step, so a crash at any
point leaves a state that the next pass completes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from escale.config.settings import ClientSettings
from escale.crypto.keys import KdfParams, KeySecret, load_secret
from escale.errors import (
    ClientBusy,
    EscaleError,
    LeaseBusy,
    LeaseLost,
    LocalError,
    ProtocolError,
    RelayNotFound,
    RelayQuotaExceeded,
)
from escale.protocol.header import open_repository
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.objects import Placeholder
from escale.protocol.repository import LocalVersion, RelayState, Repository
from escale.relay import Relay, make_relay
from escale.relay.retry import RetryingRelay
from escale.sync import faults, localfs
from escale.sync.planner import Action, BaseEntry, LocalFile, Plan, RemoteEntry, plan
from escale.sync.scanner import STATE_FOLDER, scan
from escale.sync.state import StateDB

log = logging.getLogger(__name__)


@dataclass
class PassReport:
    """What one pass did. ``ok`` is False when the pass stopped on an error."""

    client: str
    pushed: list[str] = field(default_factory=list)
    pulled: list[str] = field(default_factory=list)
    deleted_local: list[str] = field(default_factory=list)
    deleted_remote: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    pending_up: int = 0
    pending_down: int = 0
    pending_up_bytes: int = 0
    pending_down_bytes: int = 0
    relay_bytes: int = 0
    busy: bool = False
    ok: bool = True
    started: float = 0.0
    finished: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.pushed or self.pulled or self.deleted_local or self.deleted_remote or self.conflicts)

    def summary(self) -> str:
        parts = [f"{len(self.pushed)} sent", f"{len(self.pulled)} received"]
        if self.deleted_local or self.deleted_remote:
            parts.append(f"{len(self.deleted_local) + len(self.deleted_remote)} deleted")
        if self.conflicts:
            parts.append(f"{len(self.conflicts)} conflicts")
        if self.reclaimed:
            parts.append(f"{len(self.reclaimed)} reclaimed")
        if self.held:
            parts.append(f"{len(self.held)} deletions held")
        if self.errors:
            parts.append(f"{len(self.errors)} errors")
        if self.busy:
            parts.append("relay busy")
        return ", ".join(parts)


def state_dir_for(settings: ClientSettings) -> str:
    """Where a client keeps its state: ``state directory``, else
    ``<local path>/.escale/<section>``."""
    if settings.state_dir:
        return settings.state_dir
    return os.path.join(settings.local_path, STATE_FOLDER, settings.name)


class ClientLock:
    """An exclusive, process-wide lock on one client's state folder.

    Held with ``flock`` on ``<state dir>/lock``: released by the kernel when the
    process dies, so a crash never leaves it behind.
    """

    def __init__(self, folder: str, client: str) -> None:
        self.path = os.path.join(folder, "lock")
        self.client = client
        self._fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to ``wait`` seconds; raise ClientBusy."""
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
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


#: Action kinds counted as transfers for progress display.
_TRANSFERS = frozenset({"pull", "conflict", "pull_copy", "delete_local", "push", "push_copy", "push_delete"})


class SyncClient:
    """Synchronises one configured client; one pass at a time."""

    _progress: tuple[int, int]

    def _advance(self, action: Action) -> None:
        done, total = self._progress
        if action.kind in _TRANSFERS and total:
            self._progress = (done + 1, total)
            if self.on_progress is not None:
                self.on_progress(done + 1, total)

    def __init__(
        self,
        settings: ClientSettings,
        *,
        stop: threading.Event | None = None,
        allow_mass_deletion: bool = False,
        lease_wait: float = 0.0,
        kdf: KdfParams | None = None,
        relay_factory: Callable[[], Relay] | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.allow_mass_deletion = allow_mass_deletion
        self.lease_wait = lease_wait
        self.kdf = kdf
        self._relay_factory = relay_factory or (lambda: RetryingRelay(make_relay(settings.relay)))
        self.state_dir = state_dir_for(settings)
        self.lock = ClientLock(self.state_dir, settings.name)
        self.last_report: PassReport | None = None
        self._secret: KeySecret | None = None
        #: called as ``on_progress(done, total)`` with the transfers of a pass
        self.on_progress: Callable[[int, int], None] | None = None
        self._progress = (0, 0)
        self._index_warned = False

    # ----------------------------------------------------------- setup

    def _load_secret(self) -> KeySecret:
        if self._secret is None:
            self._secret = load_secret(self.settings.key_file, self.settings.passphrase)
        return self._secret

    def _open(self, db: StateDB, relay: Relay) -> Repository:
        s = self.settings
        if s.index and not self._index_warned:
            log.warning("[%s] index = yes: this version keeps one placeholder per file (the index layout "
                        "is not implemented yet); maxpagesize is unused", s.name)
            self._index_warned = True
        sealer = open_repository(
            relay, encryption=s.encryption, secret=self._load_secret if s.encryption else None, kdf=self.kdf)
        spool = os.path.join(self.state_dir, "spool")
        os.makedirs(spool, mode=0o700, exist_ok=True)
        repo = Repository(
            relay, sealer, client_id=db.client_id(), label=s.label, receives=s.receives, mode=s.mode,
            checksum=s.checksum, puller_count=s.puller_count, disk_quota=s.disk_quota,
            meta_cache=db.meta_cache(), spool_dir=spool, on_step=faults.step)
        repo.prepare()
        return repo

    # ----------------------------------------------------------- the pass

    def run_pass(self, *, lock_wait: float = 0.0) -> PassReport:
        """Run one pass. Never raises for per-file problems (they are in the
        report's ``errors``); raises EscaleError when the pass as a whole could
        not run (relay unreachable, wrong key, client busy)."""
        report = PassReport(self.settings.name, started=time.time())
        self.lock.acquire(lock_wait)
        try:
            os.makedirs(self.settings.local_path, exist_ok=True)
            db = StateDB(os.path.join(self.state_dir, "state.db"))
            relay = self._relay_factory()
            try:
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

    def _remote_view(self, db: StateDB, repo: Repository, state: RelayState,
                     frozen: set[str]) -> dict[str, RemoteEntry]:
        me = repo.client_id
        seen = db.seen_versions()
        view: dict[str, RemoteEntry] = {}
        for path, ph in state.latest.items():
            if seen.get(ph.key, 0) > ph.version:
                log.error("relay serves version %d of %s but version %d was seen before: "
                          "ignoring this path (rolled back or tampered relay)", ph.version, path, seen[ph.key])
                frozen.add(path)
                continue
            if seen.get(ph.key, 0) < ph.version:
                db.set_seen(ph.key, ph.version)
            try:
                localfs.safe_join(self.settings.local_path, path)
            except LocalError as exc:
                log.error("%s", exc)
                frozen.add(path)
                continue
            acks = state.acks.get((ph.key, ph.version), set())
            expects = self.settings.receives and ph.pusher != me
            entry = RemoteEntry(
                version=ph.version, deleted=ph.deleted, pusher=ph.pusher, pusher_label=ph.pusher_label,
                size=ph.size, mtime_ns=ph.mtime_ns, checksum=ph.checksum, available=state.has_payload(ph),
                acked=me in acks, expects_me=expects)
            if not ph.deleted and not self.settings.filters.accepts_file(path):
                if expects and me not in acks and not ph.deleted:
                    repo.acknowledge(ph)  # not wanted here: do not pin the payload
                continue
            view[path] = entry
        return view

    def _pass(self, db: StateDB, repo: Repository, report: PassReport) -> None:
        s = self.settings
        state = repo.read_state()
        frozen: set[str] = set()
        remote = self._remote_view(db, repo, state, frozen)
        scanned = scan(s.local_path, s.filters, checksum=s.checksum, db=db, persist_cache=s.checksum_cache)
        base = db.base()
        resend = self._lost_payloads(repo, state, scanned.files)
        frozen |= {a.path for a in resend}
        local = {p: f for p, f in scanned.files.items() if p not in frozen}
        base = {p: b for p, b in base.items() if p not in frozen}
        remote = {p: r for p, r in remote.items() if p not in frozen}
        the_plan = plan(local, remote, base, mode=s.mode, label=s.label, access=db.access(),
                        deletion_guard=s.deletion_guard, allow_mass_deletion=self.allow_mass_deletion,
                        local_root_missing=scanned.root_missing)
        the_plan.actions.extend(resend)
        for note in the_plan.notes:
            log.warning("[%s] %s", s.name, note)
        report.held = [a.path for a in the_plan.held]
        transfers = sum(1 for a in the_plan.actions if a.kind in _TRANSFERS)
        self._progress = (0, transfers)
        if transfers and self.on_progress is not None:
            self.on_progress(0, transfers)
        relay_due = the_plan.needs_lease or self._maintenance_due(repo, state)
        if s.priority == "upload" and relay_due:
            # priority = upload: send what is pending before receiving
            self._relay_phase(db, repo, the_plan, report, scanned.files)
            relay_due = False
        if not self.stop.is_set():
            self._local_phase(db, repo, state, the_plan, report)
        if relay_due and not self.stop.is_set():
            self._relay_phase(db, repo, the_plan, report, scanned.files)
        report.pending_up = sum(1 for a in the_plan.actions if a.kind.startswith("push")) - len(
            report.pushed) - len(report.deleted_remote)
        sent = set(report.pushed)
        report.pending_up_bytes = sum(a.expect_local.size for a in the_plan.of_kind("push", "push_copy")
                                      if a.expect_local and (a.copy_path or a.path) not in sent)
        received = set(report.pulled) | set(report.conflicts)
        pulls = [a for a in the_plan.of_kind("pull", "pull_copy", "conflict") if a.path not in received]
        report.pending_down = len(pulls)
        report.pending_down_bytes = sum(remote[a.path].size for a in pulls if a.path in remote)
        report.relay_bytes = state.stored_bytes()

    def _lost_payloads(self, repo: Repository, state: RelayState,
                       local: dict[str, LocalFile]) -> list[Action]:
        """Pushes that repair versions of ours whose payload vanished untaken.

        A commit can land after its pusher lost the lease (frozen between the
        fence and the placeholder write, see Repository._commit); the next
        holder may have removed its payload as an orphan by then. Such a
        version has no payload and no acknowledgement (a reclaimed one has at
        least one): receivers would wait for it forever. If the local file
        still holds exactly that content, it is sent again as the next version.
        """
        if self.settings.mode == "download":
            return []
        out = []
        for path, ph in state.latest.items():
            if ph.pusher != repo.client_id or ph.deleted or state.has_payload(ph):
                continue
            if state.acks.get((ph.key, ph.version), set()) - {repo.client_id}:
                continue  # acknowledged: reclaimed, not lost
            mine = local.get(path)
            if mine is None or mine.size != ph.size:
                continue
            if mine.checksum is not None and ph.checksum is not None:
                if mine.checksum != ph.checksum:
                    continue
            elif mine.mtime_ns != ph.mtime_ns:
                continue
            log.warning("[%s] version %d of %s lost its payload before anyone received it "
                        "(committed after the lease was lost?): sending it again",
                        self.settings.name, ph.version, path)
            out.append(Action("push", path, expect_local=mine, expect_version=ph.version,
                              reason="payload lost"))
        return out

    def _maintenance_due(self, repo: Repository, state: RelayState) -> bool:
        referenced = {p.payload for p in state.latest.values() if p.payload}
        if any(p not in referenced for p in state.payloads):
            return True
        if state.superseded():
            return True
        return any(state.has_payload(p) and repo.reclaimable(p, state) for p in state.latest.values())

    # ----------------------------------------------------------- local side

    def _local_phase(self, db: StateDB, repo: Repository, state: RelayState, the_plan: Plan,
                     report: PassReport) -> None:
        for action in the_plan.actions:
            if action.kind.startswith("push"):
                continue
            if self.stop.is_set():
                return
            try:
                self._local_action(db, repo, state, action, report)
                self._advance(action)
            except localfs.LocalChanged as exc:
                report.skipped.append(action.path)
                log.info("[%s] %s", self.settings.name, exc)
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
        ph = state.latest.get(action.path)
        if ph is None or ph.version != action.expect_version:
            raise RelayNotFound(f"version {action.expect_version} of {action.path} is no longer on the relay",
                                name=action.path)
        return ph

    def _download(self, repo: Repository, ph: Placeholder, target: str,
                  expect: LocalFile | None) -> os.stat_result:
        def fill(handle: BinaryIO) -> None:
            repo.fetch(ph, handle)

        faults.step(f"download {ph.path}")
        st = localfs.write_atomically(target, fill, expect=expect,
                                      mtime_ns=ph.mtime_ns if self.settings.use_mtime else None)
        faults.step(f"downloaded {ph.path}")
        return st

    def _local_action(self, db: StateDB, repo: Repository, state: RelayState, action: Action,
                      report: PassReport) -> None:
        root = self.settings.local_path
        name = self.settings.name
        path = action.path
        target = localfs.safe_join(root, path)
        if action.kind in ("pull", "conflict"):
            ph = self._placeholder(state, action)
            if action.kind == "conflict":
                assert action.copy_path is not None and action.expect_local is not None
                localfs.rename_aside(target, localfs.safe_join(root, action.copy_path), expect=action.expect_local)
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
            st = self._download(repo, ph, target, expect)
            db.set_base(path, BaseEntry(st.st_size, st.st_mtime_ns, ph.checksum, ph.version, "remote"))
            faults.step(f"recorded {path}")
            report.pulled.append(path)
            report.bytes_down += st.st_size
            log.info("[%s] received %s (%d bytes) from %s", name, path, st.st_size, ph.pusher_label)
            if action.ack:
                repo.acknowledge(ph)
                faults.step(f"acknowledged {path}")
        elif action.kind == "pull_copy":
            ph = self._placeholder(state, action)
            assert action.copy_path is not None
            try:
                self._download(repo, ph, localfs.safe_join(root, action.copy_path), None)
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
            if localfs.delete_if_unchanged(target, action.expect_local):
                faults.step(f"deleted {path}")
                db.forget(path)
                report.deleted_local.append(path)
                log.info("[%s] deleted %s (deleted on the relay)", name, path)
            else:
                report.skipped.append(path)
        elif action.kind == "record":
            assert action.base is not None
            db.set_base(path, action.base)
        elif action.kind == "forget":
            db.forget(path)
        elif action.kind == "ack":
            repo.acknowledge(self._placeholder(state, action))
            faults.step(f"acknowledged {path}")

    # ----------------------------------------------------------- relay side

    def _take_lease(self, db: StateDB, repo: Repository) -> tuple[Lease, LeaseManager, Relay]:
        heartbeat = self._relay_factory()
        heartbeat.open()
        manager = LeaseManager(repo.relay, repo.sealer, client_id=repo.client_id, label=self.settings.label,
                               timeout=self.settings.lock_timeout, observations=db.lease_observations())
        deadline = time.monotonic() + self.lease_wait
        while True:
            try:
                lease = manager.acquire("sync")
                break
            except LeaseBusy:
                if time.monotonic() >= deadline or self.stop.is_set():
                    heartbeat.close()
                    raise
                time.sleep(min(2.0, max(0.2, self.settings.lock_timeout / 20)))
        lease.start_heartbeat(heartbeat)
        return lease, manager, heartbeat

    def _relay_phase(self, db: StateDB, repo: Repository, the_plan: Plan, report: PassReport,
                     scanned: dict[str, LocalFile]) -> None:
        name = self.settings.name
        try:
            lease, _, heartbeat = self._take_lease(db, repo)
        except LeaseBusy as exc:
            report.busy = True
            log.info("[%s] %s; will retry", name, exc)
            return
        try:
            faults.step("lease taken")
            state = repo.read_state()
            for action in the_plan.of_kind("push", "push_copy", "push_delete"):
                if self.stop.is_set():
                    break
                try:
                    self._push(db, repo, lease, state, action, report)
                    self._advance(action)
                except (localfs.LocalChanged, RelayQuotaExceeded) as exc:
                    report.skipped.append(action.path)
                    log.info("[%s] %s", name, exc)
                except (LocalError, ProtocolError) as exc:
                    if isinstance(exc, LeaseLost):
                        raise
                    report.errors.append(f"{action.path}: {exc}")
                    log.error("[%s] %s: %s", name, action.path, exc)
            if not self.stop.is_set():
                for ph in repo.reclaim(lease, state):
                    report.reclaimed.append(ph.path)
                    faults.step(f"reclaimed {ph.path}")
                repo.collect_garbage(lease, state)
        finally:
            lease.release()
            heartbeat.close()

    def _push(self, db: StateDB, repo: Repository, lease: Lease, state: RelayState, action: Action,
              report: PassReport) -> None:
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
            repo.commit_tombstone(lease, state, action.path)
            faults.step(f"tombstoned {action.path}")
            db.forget(action.path)
            report.deleted_remote.append(action.path)
            log.info("[%s] deleted %s on the relay", name, action.path)
            return
        local = action.expect_local
        assert local is not None
        source = localfs.safe_join(root, action.path)
        relay_path = action.copy_path or action.path
        with localfs.open_for_push(source, local) as handle:
            faults.step(f"push {relay_path}")
            ph = repo.commit_file(lease, state, LocalVersion(relay_path, local.size, local.mtime_ns,
                                                              local.checksum), handle)
        faults.step(f"pushed {relay_path}")
        if action.kind == "push_copy":
            db.set_base(relay_path, BaseEntry(local.size, local.mtime_ns, ph.checksum, ph.version, "local",
                                              local_deleted=True))
        else:
            db.set_base(action.path, BaseEntry(local.size, local.mtime_ns, ph.checksum or local.checksum,
                                               ph.version, "local"))
        report.pushed.append(relay_path)
        report.bytes_up += local.size
        log.info("[%s] sent %s (%d bytes)", name, relay_path, local.size)
