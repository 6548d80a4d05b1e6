"""The relay as the planner sees it, and what the relay needs beyond the plan.

A pass reads the relay's state once without the lease; these functions turn it
into the planner's inputs. :func:`rolled_back` finds the paths the relay shows
less of than this client knows (frozen for the pass), :func:`remote_view`
gives the planner a :class:`RemoteEntry` per path (a :class:`RemoteView`,
which builds each entry when it is read), :func:`lost_payloads` finds
versions of ours to send again, and :func:`maintenance_due` tells whether the
relay needs the lease for clean-up even when nothing is to be sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, Protocol, cast

from escale.config.settings import ClientSettings
from escale.errors import LocalError
from escale.protocol.objects import Placeholder
from escale.protocol.repository import LatestMap, RelayState, Repository, placeholder_of, raw_values
from escale.sync import localfs
from escale.sync.planner import Action, BaseEntry, LocalFile, RemoteEntry, folders_of
from escale.sync.report import Announcer, PassReport
from escale.sync.state import SEEN_CHUNK, BaseMap, StateDB

log = logging.getLogger(__name__)


class _Version(Protocol):
    """What ``state.latest`` stores per path (a placeholder, or the object a
    :class:`~escale.protocol.repository.LatestMap` builds it from)."""

    @property
    def path(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def pusher(self) -> str: ...


def _seen_of(db: StateDB, state: RelayState) -> Iterator[tuple[_Version, str, int]]:
    """Each version of ``state.latest`` (as stored: see :class:`_Version`)
    with its path key and the highest version this client recorded as seen
    for that key (0: none), in the order of ``state.latest``.

    The versions are taken :data:`~escale.sync.state.SEEN_CHUNK` at a time
    and their keys looked up together: no list of every key, no dictionary
    of every key seen, and no placeholder built."""
    stored = iter(cast("Iterable[_Version]", raw_values(state.latest)))
    while chunk := list(islice(stored, SEEN_CHUNK)):
        keys = [ph.key for ph in chunk]  # once: a packed index entry spells it on each read
        seen = db.seen_of_keys(keys)
        for ph, key in zip(chunk, keys, strict=True):
            yield ph, key, seen.get(key, 0)


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

    Every other version above the one seen of its key is recorded as seen
    (the only pass of a reading over the versions seen).
    """
    behind: dict[str, int] = {}
    version_of = base.version_of if isinstance(base, BaseMap) else (
        lambda path: base[path].version if path in base else 0)
    newer: list[tuple[str, int]] = []  # versions above those seen, recorded as seen a chunk at a time
    for ph, key, seen in _seen_of(db, state):
        path = ph.path
        known = max(seen, version_of(path))
        if ph.version < known:
            behind[path] = known
        elif seen < ph.version:
            newer.append((key, ph.version))
            if len(newer) >= SEEN_CHUNK:
                db.set_seen_many(newer)
                newer = []
    db.set_seen_many(newer)
    frozen: set[str] = set()
    for path in state.latest:  # reported in the relay state's order
        if path in behind:
            ph = state.latest[path]
            known = behind[path]
            frozen.add(path)
            announce(report, f"{path} rolled back on the relay: it shows version {ph.version} but "
                     f"version {known} was known here; the local file is left alone (run `escalectl "
                     "fix` on an up-to-date client)", level=logging.ERROR)
    for path in base:
        if path in state.latest:
            continue  # (checked first: no entry built for the paths on the relay)
        entry = base[path]
        if entry.version <= 0:
            continue
        key = repo.sealer.object_key(path)
        frozen.add(path)
        if state.lists(key, path):
            continue  # listed but none opens: refused and reported by read_state
        announce(report, f"{path} rolled back on the relay: it is missing there but version "
                 f"{max(entry.version, db.seen_version(key))} was known here; the local file is left alone "
                 "and not re-sent (run `escalectl fix` on an up-to-date client)", level=logging.ERROR)
    return frozen


class RemoteView(Mapping[str, RemoteEntry]):
    """The planner's view of the relay: a :class:`RemoteEntry` per path.

    A view of ``state.latest`` itself, less the paths it leaves out (frozen
    ones, those the filters refuse, those removed with :meth:`pop`): no
    dictionary of its own, and no entry kept. An entry is built each time it
    is read, from what ``state.latest`` stores for its path and the relay
    state's acknowledgements as they are at that moment. The view follows
    ``state.latest`` as it changes (a commit of this pass shows in it), but
    not a replacement of the map (a state read again): read it before the
    pass acknowledges or commits anything where that matters (the planner
    does)."""

    def __init__(self, state: RelayState, client_id: str, receives: bool) -> None:
        self._state = state
        self._latest = state.latest
        # how a stored object becomes its placeholder: a LatestMap's own conversion; a
        # plain dict stores the placeholders themselves
        latest = self._latest
        self._placeholder: Callable[[Any], Placeholder] | None = (
            latest.converter() if isinstance(latest, LatestMap) else None)
        self._left_out: set[str] = set()  # paths of the map that the view leaves out
        self._me = client_id
        self._receives = receives

    def leave_out(self, path: str) -> None:
        """Leave ``path`` out of the view (nothing if the relay has no such path)."""
        if path in self._latest:
            self._left_out.add(path)

    def pop(self, path: str, default: Any = None) -> Any:
        """Leave ``path`` out of the view; its entry, or ``default`` if the
        view had none."""
        entry = self.get(path)
        if entry is None:
            return default
        self._left_out.add(path)
        return entry

    def _stored(self, path: str) -> Any:
        """What ``state.latest`` stores for ``path`` (KeyError: not in the view)."""
        if path in self._left_out:
            raise KeyError(path)
        return dict.__getitem__(self._latest, path)

    def _placeholder_of(self, source: Any) -> Placeholder:
        return source if self._placeholder is None else self._placeholder(source)

    def _entry(self, source: Any) -> RemoteEntry:
        ph = self._placeholder_of(source)
        acks = self._state.acks_of(ph)
        return RemoteEntry(
            version=ph.version, deleted=ph.deleted, pusher=ph.pusher, pusher_label=ph.pusher_label,
            size=ph.size, mtime_ns=ph.mtime_ns, checksum=ph.checksum, available=self._state.has_payload(ph),
            acked=self._me in acks, expects_me=self._receives and ph.pusher != self._me,
            deliberate=ph.deliberate)

    def __getitem__(self, path: str) -> RemoteEntry:
        return self._entry(self._stored(path))

    def version_of(self, path: str) -> int | None:
        """The version of ``path``'s entry (what :meth:`get` would give it),
        read from what is stored: no entry built; None when the view has none."""
        if path in self._left_out:
            return None
        stored = dict.get(self._latest, path)
        return None if stored is None else cast(_Version, stored).version

    def ack_due(self, path: str) -> bool:
        """Whether ``path``'s entry (which the view must have) expects this
        client to acknowledge it and has no acknowledgement of it: the
        planner's ``remote.expects_me and not remote.acked and not
        remote.deleted``, without building the entry (the acknowledgements
        are looked up only for another client's file version)."""
        if not self._receives:
            return False
        stored = cast(_Version, self._stored(path))
        if stored.kind == "tombstone" or stored.pusher == self._me:
            return False
        return self._me not in self._state.stored_acks(stored)

    def get(self, path: str, default: Any = None) -> Any:
        """``path``'s entry, or ``default`` if the view has none."""
        if path in self._left_out:
            return default
        stored = dict.get(self._latest, path)
        return default if stored is None else self._entry(stored)

    def __contains__(self, path: object) -> bool:
        return path in self._latest and path not in self._left_out

    def __iter__(self) -> Iterator[str]:
        left_out = self._left_out
        return (path for path in dict.__iter__(self._latest) if path not in left_out)

    def __len__(self) -> int:
        # every left-out path is one of the map's, unless the map lost it since
        return len(self._latest) - sum(1 for path in self._left_out if path in self._latest)

    def _stored_items(self) -> Iterator[tuple[str, _Version]]:
        left_out = self._left_out
        stored_items = cast("Iterable[tuple[str, _Version]]", dict.items(self._latest))
        return ((path, stored) for path, stored in stored_items if path not in left_out)

    def live_folders(self) -> set[str]:
        """Every folder of a path whose relay version is a file (not a
        tombstone), read from what is stored (no entry built)."""
        return folders_of(path for path, stored in self._stored_items() if stored.kind != "tombstone")

    def placeholder(self, path: str) -> Placeholder:
        """The placeholder behind ``path``'s entry (KeyError if none)."""
        return self._placeholder_of(self._stored(path))


def remote_view(settings: ClientSettings, db: StateDB, repo: Repository, state: RelayState,
                frozen: set[str]) -> RemoteView:
    """The planner's view of every relay path outside ``frozen`` (a
    :class:`RemoteView` of ``state.latest``: entries built on access).

    A path that cannot be a local path
    is logged and added to ``frozen``; a file the client's filters refuse is
    left out (and acknowledged if this client is expected to receive it, so
    that it does not pin the payload).
    """
    me = repo.client_id
    view = RemoteView(state, me, settings.receives)
    latest = state.latest
    for path, stored in dict.items(latest):  # as stored: no placeholder built
        if path in frozen:
            view.leave_out(path)
            continue
        try:
            localfs.check_relative(path)
        except LocalError as exc:
            log.error("%s", exc)
            frozen.add(path)
            view.leave_out(path)
            continue
        if stored.kind != "tombstone" and not settings.filters.accepts_file(path):
            ph = placeholder_of(latest, stored)
            if settings.receives and ph.pusher != me and me not in state.acks_of(ph):
                repo.acknowledge(ph)  # not wanted here: do not pin the payload
            view.leave_out(path)
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
    for path, stored in state.latest_items():
        version = cast(_Version, stored)
        if version.pusher != repo.client_id or version.kind == "tombstone" or state.stored_has_payload(stored):
            continue
        if state.acked_by_another(path, stored, repo.client_id):
            continue  # acknowledged: reclaimed, not lost
        ph = placeholder_of(state.latest, stored)
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
    if state.unreferenced_payloads():
        return True
    if state.superseded():
        return True
    return repo.anything_reclaimable(state)
