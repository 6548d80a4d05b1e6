"""The relay as the planner sees it, and what the relay needs beyond the plan.

A pass reads the relay's state once without the lease; these functions turn it
into the planner's inputs. :func:`rolled_back` finds the paths the relay shows
less of than this client knows (frozen for the pass), :func:`remote_view`
builds the planner's :class:`RemoteEntry` per path, :func:`lost_payloads` finds
versions of ours to send again, and :func:`maintenance_due` tells whether the
relay needs the lease for clean-up even when nothing is to be sent.
"""

from __future__ import annotations

import logging

from escale.config.settings import ClientSettings
from escale.errors import LocalError
from escale.protocol.repository import RelayState, Repository
from escale.sync import localfs
from escale.sync.planner import Action, BaseEntry, LocalFile, RemoteEntry
from escale.sync.report import Announcer, PassReport
from escale.sync.state import StateDB

log = logging.getLogger(__name__)


def rolled_back(db: StateDB, repo: Repository, state: RelayState, base: dict[str, BaseEntry],
                report: PassReport, announce: Announcer) -> set[str]:
    """Paths for which the relay shows less than this client knows.

    Knowledge only moves forward: what a client knows of a path is the
    highest version it saw on the relay or wrote there, and the version it
    last synced. A relay that shows an older version, or nothing at all for
    a path this client synced, lost or rolled back objects (a restored
    backup, a replay, a wiped folder). Such a path is reported and frozen:
    nothing of it is applied over local data, and nothing is re-sent on its
    own (another client may hold a newer version that this one never saw);
    ``escalectl fix`` recommits from an up-to-date client above every
    version seen.
    """
    seen = db.seen_versions()
    frozen: set[str] = set()
    for path, ph in state.latest.items():
        known = max(seen.get(ph.key, 0), base[path].version if path in base else 0)
        if ph.version < known:
            frozen.add(path)
            announce(report, f"{path} rolled back on the relay: it shows version {ph.version} but "
                     f"version {known} was known here; the local file is left alone (run `escalectl "
                     "fix` on an up-to-date client)", level=logging.ERROR)
    for path, entry in base.items():
        if path in state.latest or entry.version <= 0:
            continue
        key = repo.sealer.object_key(path)
        frozen.add(path)
        if state.versions.get(key):
            continue  # listed but none opens: refused and reported by read_state
        announce(report, f"{path} rolled back on the relay: it is missing there but version "
                 f"{max(entry.version, seen.get(key, 0))} was known here; the local file is left alone "
                 "and not re-sent (run `escalectl fix` on an up-to-date client)", level=logging.ERROR)
    return frozen


def remote_view(settings: ClientSettings, db: StateDB, repo: Repository, state: RelayState,
                frozen: set[str]) -> dict[str, RemoteEntry]:
    """The planner's view of every relay path outside ``frozen``.

    Records each newer version as seen. A path that cannot be a local path
    is logged and added to ``frozen``; a file the client's filters refuse is
    left out (and acknowledged if this client is expected to receive it, so
    that it does not pin the payload).
    """
    me = repo.client_id
    seen = db.seen_versions()
    view: dict[str, RemoteEntry] = {}
    for path, ph in state.latest.items():
        if path in frozen:
            continue
        if seen.get(ph.key, 0) < ph.version:
            db.set_seen(ph.key, ph.version)
        try:
            localfs.safe_join(settings.local_path, path)
        except LocalError as exc:
            log.error("%s", exc)
            frozen.add(path)
            continue
        acks = state.acks.get((ph.key, ph.version), set())
        expects = settings.receives and ph.pusher != me
        entry = RemoteEntry(
            version=ph.version, deleted=ph.deleted, pusher=ph.pusher, pusher_label=ph.pusher_label,
            size=ph.size, mtime_ns=ph.mtime_ns, checksum=ph.checksum, available=state.has_payload(ph),
            acked=me in acks, expects_me=expects, deliberate=ph.deliberate)
        if not ph.deleted and not settings.filters.accepts_file(path):
            if expects and me not in acks and not ph.deleted:
                repo.acknowledge(ph)  # not wanted here: do not pin the payload
            continue
        view[path] = entry
    return view


def lost_payloads(settings: ClientSettings, repo: Repository, state: RelayState,
                  local: dict[str, LocalFile]) -> list[Action]:
    """Pushes that repair versions of ours whose payload vanished untaken.

    A commit can land after its pusher lost the lease (frozen between the
    fence and the placeholder write, see Repository._commit); the next
    holder may have removed its payload as an orphan by then. Such a
    version has no payload and no acknowledgement (a reclaimed one has at
    least one): receivers would wait for it forever. If the local file
    still holds exactly that content, it is sent again as the next version.
    """
    if not settings.sends:
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
                    settings.name, ph.version, path)
        out.append(Action("push", path, expect_local=mine, expect_version=ph.version,
                          reason="payload lost"))
    return out


def maintenance_due(repo: Repository, state: RelayState) -> bool:
    """Whether the relay holds something to clean up under the lease:
    unreferenced payloads, superseded versions, or payloads to reclaim."""
    referenced = {p.payload for p in state.latest.values() if p.payload}
    if any(p not in referenced for p in state.payloads):
        return True
    if state.superseded():
        return True
    return any(state.has_payload(p) and repo.reclaimable(p, state) for p in state.latest.values())
