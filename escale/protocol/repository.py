"""The placeholder-layout repository: every protocol operation on one relay.

A :class:`Repository` wraps an open :class:`Relay` and a :class:`Sealer`. It
reads the relay into a :class:`RelayState` (no lease needed), fetches payloads,
writes acknowledgements, and, under a :class:`Lease`, commits new versions,
reclaims acknowledged payloads and removes garbage.

Write order (doc/protocol.rst, "Push, pull, acknowledge, reclaim" and "Crash
recovery"), and what a crash at each point leaves:

* commit: payload ``data/…`` first, then placeholder ``meta/…`` (exclusive), then
  removal of the superseded version: its placeholder, then its payload, then its
  acknowledgements. A crash before the placeholder leaves an orphan payload
  (removed by :meth:`collect_garbage`); after it, leftovers of the old version
  (removed likewise). The new version is visible only once whole.
* reclaim: only the payload is deleted; the placeholder stays, so every client
  still knows the file's last state.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import itertools
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, BinaryIO, TypeVar, cast

from escale.derived import DerivedDict
from escale.errors import (
    CryptoError,
    DiskFull,
    EscaleError,
    IntegrityError,
    LocalError,
    ObjectTooLarge,
    ProtocolError,
    RelayError,
    RelayExists,
    RelayNotFound,
    RelayQuotaExceeded,
)
from escale.protocol import layout, spooled
from escale.protocol.identity import checksum_read, trusted_checksum
from escale.protocol.lease import Lease
from escale.protocol.marker import MARKER, ChangeMarker
from escale.protocol.objects import MAX_OBJECT_BYTES, Ack, ClientRecord, Placeholder, checksum_problem
from escale.protocol.packed import PackedPlaceholder, StoredPlaceholder, pack_placeholder
from escale.protocol.sealer import Sealer
from escale.protocol.spooled import SpooledValue
from escale.protocol.streams import (
    HashingReader,
    HashingWriter,
    receive_opening,
    received_bound,
    sealing_parts,
    send_sealing,
    start_of,
)
from escale.relay import Entry, Relay

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds after which a relay temporary (``.escale-tmp-*``) is stale: an
#: upload of that age is over, or was interrupted. See
#: :meth:`Repository.stale_temporaries`.
STALE_TEMPORARY_AGE = 6 * 3600.0
#: ``meta_cache`` key prefix: when this client first saw a temporary without mtime
_TEMP_SEEN = "temporary-seen@"
#: ``meta_cache`` keys: the highest change-marker counter seen or written, and
#: the snapshot of the last full read taken under a clean marker
_MARKER_HIGHEST = "marker@highest"
_SNAPSHOT = "marker@snapshot"
#: Seconds after which a pass reads ``meta/`` and ``data/`` in full even when
#: the change marker did not move (a safety net: the marker is an
#: optimisation, never the only way to see a change).
FULL_READ_AFTER = 3600.0

#: Payloads of at most this many plaintext bytes are fetched into memory by
#: :meth:`Repository.fetch` (no spool file); the sealed object may be at most
#: :data:`SMALL_PAYLOAD_SEALED` bytes (far above what sealing adds), a larger
#: one is refused as tampered without being read whole.
SMALL_PAYLOAD = 1 << 20
SMALL_PAYLOAD_SEALED = 4 << 20
#: A payload of a file up to this size is sealed in memory before its upload
#: (no spool file to create, write, read back and remove).
SPOOL_IN_MEMORY = 1 << 16
#: Reclaimable versions whose acknowledgements one :meth:`Repository.reclaim`
#: reads at once (one :meth:`Relay.get_many`: a few round trips where the relay
#: reads groups cheaply); bounds what the group holds.
RECLAIM_GROUP = 256
#: A staged payload of at most this many sealed bytes (every payload sealed in
#: memory, padding and framing included) is read whole and put straight under
#: its fresh name by :meth:`Repository.upload_staged`.
FRESH_PUT_IN_MEMORY = 2 * SPOOL_IN_MEMORY

#: Reads relay objects on other connections (see :attr:`Repository.object_reader`):
#: ``reader(names, limit)`` yields ``(name, outcome)`` for each of ``names``,
#: in their order, where ``outcome`` is the object's bytes as stored (at most
#: ``limit`` of them), or the RelayNotFound or ProtocolError (ObjectTooLarge)
#: that reading it raised; any other error of a read is raised when its turn
#: comes, as it would be on the repository's own connection. Closing the
#: generator drops the reads not yet taken.
ObjectReader = Callable[[Sequence[str], int], Generator[tuple[str, "bytes | EscaleError"], None, None]]
#: :meth:`Repository.read_state` reads placeholders through
#: :attr:`Repository.object_reader` only when at least this many are not cached
#: (fewer go faster on the connection already open).
READER_MIN = 8


class LatestMap(DerivedDict[Placeholder]):
    """``RelayState.latest`` whose values may be kept in another form.

    A layout that already holds every path's version in memory (the index
    layout's materialised index) stores its own object per path (a
    *source*, :meth:`~escale.derived.DerivedDict.store`) instead of a second, :class:`Placeholder`
    copy of it: the placeholder is built each time it is read by
    ``convert``, which must give the same placeholder for the same source
    whenever it is called. Setting a path stores a placeholder as is. Only a
    memory matter: it reads as a dict of placeholders. :func:`raw_values`
    gives the stored objects (each has ``path``, ``key``, ``version``,
    ``kind`` and ``pusher``); :meth:`payload_of` a stored object's payload
    without building its placeholder.

    With ``pack``, setting a path stores ``pack(placeholder)`` instead (a
    source that ``convert`` turns back into an equal placeholder, or the
    placeholder itself): the placeholder layout's map of
    :class:`~escale.protocol.packed.PackedPlaceholder` records
    (:func:`packed_latest`)."""

    def __init__(self, convert: Callable[[object], Placeholder],
                 payload: Callable[[object], str | None],
                 pack: Callable[[Placeholder], object] | None = None) -> None:
        super().__init__()
        self._convert = convert
        self._payload = payload
        self._pack = pack

    def __setitem__(self, key: str, value: Placeholder) -> None:
        self.store(key, value if self._pack is None else self._pack(value))

    def derive(self, source: Any) -> Placeholder:
        return source if isinstance(source, Placeholder) else self._convert(source)

    def converter(self) -> Callable[[Any], Placeholder]:
        """:meth:`derive` as a function that does not keep this map alive
        (a bound method would)."""
        convert = self._convert
        return lambda source: source if isinstance(source, Placeholder) else convert(source)

    def payload_of(self, stored: object) -> str | None:
        """``derive(stored).payload``, without building it."""
        return stored.payload if isinstance(stored, Placeholder) else self._payload(stored)


def _unpacked(stored: object) -> Placeholder:
    return cast(PackedPlaceholder, stored).unpack()


def _packed_payload(stored: object) -> str | None:
    return cast(PackedPlaceholder, stored).payload


def packed_latest() -> LatestMap:
    """An empty ``RelayState.latest`` for the placeholder layout: each
    placeholder set or stored in it is kept as a
    :class:`~escale.protocol.packed.PackedPlaceholder` where one packs it
    exactly (the placeholder itself otherwise), and read back as an equal
    placeholder (a new object at each read)."""
    return LatestMap(_unpacked, _packed_payload, pack_placeholder)


def raw_values(latest: dict[str, Placeholder]) -> Iterable[object]:
    """The objects ``latest`` stores (placeholders, or a :class:`LatestMap`'s
    sources), without building a placeholder."""
    return dict.values(latest)


def payload_of(latest: dict[str, Placeholder], stored: object) -> str | None:
    """The payload of ``stored``, one of :func:`raw_values`'s objects."""
    if isinstance(latest, LatestMap):
        return latest.payload_of(stored)
    return cast(Placeholder, stored).payload


def placeholder_of(latest: dict[str, Placeholder], stored: object) -> Placeholder:
    """The placeholder of ``stored``, one of :func:`raw_values`'s objects."""
    if isinstance(latest, LatestMap):
        return latest.derive(stored)
    return cast(Placeholder, stored)


@dataclass
class RelayState:
    """What the relay holds, as read at one moment.

    ``latest``: the newest decodable placeholder per path (a
    :class:`LatestMap` in the index layout: built from the materialised
    index when read; :func:`raw_values` iterates it without building
    them). ``versions``:
    every placeholder version listed per key, an ``int`` when the key has one
    version (most keys), else a sorted tuple; read it through
    :meth:`versions_of`, change it through :meth:`add_version` and
    :meth:`remove_version`. ``acks``: the clients whose acknowledgement is
    listed per (key, version), as a frozenset (versions acknowledged by the
    same clients share one; a new group is made by :meth:`add_ack` and
    :meth:`drop_ack`, never by changing one in place). ``payloads``: payload
    names present with their stored sizes. ``rejected``: relay objects that
    failed to open or decode (reported, never acted upon).

    Compact on purpose (a pass holds one per repository, with an entry per
    tracked file): no list per key, no set per version, and the names of the
    acknowledgement objects are not kept (:meth:`ack_names_of` spells them
    again from key, version and client, which is what the listing held: only
    canonical names are parsed).
    """

    latest: dict[str, Placeholder] = field(default_factory=dict)
    versions: dict[str, int | tuple[int, ...]] = field(default_factory=dict)
    acks: dict[tuple[str, int], frozenset[str]] = field(default_factory=dict)
    #: acknowledgement objects listed but refused (they do not open, or name
    #: another version or client), per (key, version): dropped from ``acks``,
    #: still deleted with their version (:meth:`ack_names_of`)
    refused_acks: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    payloads: dict[str, int] = field(default_factory=dict)
    #: paths whose latest version's payload :meth:`Repository.reclaim` deleted
    #: on this reading, its acknowledgements checked (so :meth:`Repository.delivered`
    #: need not read them again); the strings are those of ``latest``
    reclaimed: set[str] = field(default_factory=set)
    #: temporaries (``.escale-tmp-*``: uploads in progress or interrupted) seen
    #: in the folders read, by name: they take relay space like payloads
    temporaries: dict[str, Entry] = field(default_factory=dict)
    clients: dict[str, ClientRecord] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    #: anomalies of the read as a whole (a change marker that went back), one
    #: human line each: the caller reports them
    warnings: list[str] = field(default_factory=list)
    #: ``meta/`` and ``data/`` were not listed: the change marker showed that
    #: nothing changed there since the last full read, whose result this is
    #: (temporaries of those folders are then unknown)
    from_snapshot: bool = False
    #: the change marker (counter, token) under which this reading was made,
    #: when that marker was clean and the reading raised no warning (the
    #: placeholder layout's; see :meth:`Repository.state_under_lease`)
    read_under: tuple[int, str] | None = None
    #: the groups of ``acks`` made so far: (group, client added or removed) ->
    #: the group that results (shared, so that equal groups are one object)
    _groups: dict[tuple[frozenset[str], str, bool], frozenset[str]] = field(
        default_factory=dict, repr=False, compare=False)

    def versions_of(self, key: str) -> tuple[int, ...]:
        """The versions listed for ``key``, ascending (empty: none)."""
        listed = self.versions.get(key)
        if listed is None:
            return ()
        return (listed,) if isinstance(listed, int) else listed

    def add_version(self, key: str, version: int) -> None:
        """Record ``version`` as listed for ``key`` (no effect if it is)."""
        listed = self.versions.get(key)
        if listed is None:
            self.versions[key] = version
        elif isinstance(listed, int):
            if listed != version:
                self.versions[key] = (listed, version) if listed < version else (version, listed)
        elif version not in listed:
            self.versions[key] = tuple(sorted((*listed, version)))

    def remove_version(self, key: str, version: int) -> None:
        """Forget ``version`` of ``key`` (no effect if it is not listed)."""
        rest = tuple(v for v in self.versions_of(key) if v != version)
        if not rest:
            self.versions.pop(key, None)
        else:
            self.versions[key] = rest[0] if len(rest) == 1 else rest

    def latest_version(self, key: str) -> int:
        """The highest version number listed for ``key``, readable or not (the
        next commit goes above it, so it never collides with any object)."""
        return max(self.versions_of(key), default=0)

    def next_version(self, key: str, path: str) -> int:
        """The number of ``path``'s next commit (above every listed version).

        Raises ProtocolError when none is left: a planted version at the 63-bit
        ceiling must be deleted by hand (no name above it would be parsed)."""
        return self._version_above(self.latest_version(key), key, path)

    @staticmethod
    def _version_above(top: int, key: str, path: str) -> int:
        """``top + 1``, the next version of ``key`` (``path``); ProtocolError
        at the ceiling (see :meth:`next_version`)."""
        version = top + 1
        if version > layout.MAX_VERSION:
            raise ProtocolError(
                f"relay object {layout.meta_name(key, version - 1)}: no version number is left above it for "
                f"{path}; delete that object (it was not written by escale)", name=layout.meta_name(key, version - 1))
        return version

    def superseded(self) -> list[tuple[str, int]]:
        """Listed versions older than their key's latest *readable* version.

        Only those are leftovers: a version above the latest readable one does
        not open (forged, corrupted, foreign key) and proves nothing, so it
        never makes a genuine version look superseded.
        """
        # only a key listed with another version than its latest readable one can
        # have one: their latest versions alone are collected (no dict of every key)
        versions = self.versions
        top: dict[str, int] = {}
        for p in raw_values(self.latest):
            key, version = cast(Placeholder, p).key, cast(Placeholder, p).version
            if versions.get(key, version) != version:
                top[key] = version
        return [(key, v) for key in versions if key in top
                for v in self.versions_of(key) if v < top[key]]

    def _group(self, group: frozenset[str], client: str, add: bool) -> frozenset[str]:
        """``group`` with ``client`` added (or removed), as a shared object."""
        made = self._groups.get((group, client, add))
        if made is None:
            made = group | {client} if add else group - {client}
            for known in self._groups.values():  # a handful: reuse an equal group made another way
                if known == made:
                    made = known
                    break
            self._groups[group, client, add] = made
        return made

    def add_ack(self, key: str, version: int, client: str) -> None:
        """Record ``client``'s acknowledgement of ``key`` ``version`` as listed."""
        pair = (key, version)
        self.acks[pair] = self._group(self.acks.get(pair, frozenset()), client, True)

    def drop_ack(self, key: str, version: int, client: str) -> None:
        """Stop counting ``client``'s listed acknowledgement of ``key``
        ``version`` (it was refused); its object is still deleted with its
        version (:meth:`ack_names_of`)."""
        pair = (key, version)
        held = self.acks.get(pair)
        if held is None or client not in held:
            return
        self.acks[pair] = self._group(held, client, False)
        self.refused_acks.setdefault(pair, []).append(layout.ack_name(key, version, client))

    def lists(self, key: str, path: str) -> bool:
        """Whether some version of ``key`` (the key of ``path``) is listed,
        readable or not."""
        return key in self.versions

    def acks_of(self, placeholder: Placeholder) -> frozenset[str]:
        """The clients whose acknowledgement of ``placeholder``'s version is
        listed (the pusher's own, if listed, included)."""
        return self.acks.get((placeholder.key, placeholder.version), frozenset())

    def ack_names_of(self, key: str, version: int) -> list[str]:
        """The acknowledgement objects listed for ``key`` ``version``: those
        of :attr:`acks` and those refused."""
        pair = (key, version)
        names = [layout.ack_name(key, version, client) for client in sorted(self.acks.get(pair, ()))]
        return names + self.refused_acks.get(pair, [])

    def ack_pairs(self) -> list[tuple[str, int]]:
        """Every (key, version) with a listed acknowledgement object."""
        return [*self.acks, *(pair for pair in self.refused_acks if pair not in self.acks)]

    def forget_acks(self, key: str, version: int) -> None:
        """Forget the acknowledgements of ``key`` ``version`` (deleted)."""
        self.acks.pop((key, version), None)
        self.refused_acks.pop((key, version), None)

    def has_payload(self, placeholder: Placeholder) -> bool:
        return placeholder.payload is not None and placeholder.payload in self.payloads

    def latest_items(self) -> Iterable[tuple[str, object]]:
        """Each path of ``latest`` with the object stored for it (see
        :func:`raw_values`), without building its placeholder: for loops that
        pass over most paths on their stored fields (``key``, ``version``,
        ``kind``, ``pusher``, :meth:`stored_has_payload`) and build the
        placeholder (:func:`placeholder_of`) of the few they keep."""
        return dict.items(self.latest)

    def stored_acks(self, stored: object) -> frozenset[str]:
        """:meth:`acks_of` the placeholder of ``stored`` (one of
        :meth:`latest_items`'s objects), without building it: ``acks_of``
        reads only a placeholder's path, key and version, which every
        stored form has."""
        return self.acks_of(cast(Placeholder, stored))

    def acked_by_another(self, path: str, stored: object, client: str) -> bool:
        """Whether a client other than ``client`` acknowledged the version
        ``stored`` holds (``path`` and ``stored``: one of
        :meth:`latest_items`'s pairs): ``stored_acks(stored) - {client}``
        is not empty, without building that set where a layout can tell
        sooner."""
        return bool(self.stored_acks(stored) - {client})

    def stored_has_payload(self, stored: object) -> bool:
        """:meth:`has_payload` of the placeholder of ``stored`` (one of
        :meth:`latest_items`'s objects), without building it."""
        payload = payload_of(self.latest, stored)
        return payload is not None and payload in self.payloads

    def unreferenced_payloads(self) -> set[str]:
        """The payloads listed that no version of ``latest`` names (orphans
        of an interrupted push, or a version's payload whose placeholder was
        superseded or lost). A set of the names listed, not of every name
        ``latest`` holds: after a reclaim, few are left."""
        unreferenced = set(self.payloads)
        if unreferenced:
            latest = self.latest
            for stored in raw_values(latest):
                unreferenced.discard(payload_of(latest, stored))
        return unreferenced

    def stored_bytes(self) -> int:
        """Bytes of payloads and temporaries on the relay (what ``disk quota``
        limits): a temporary left by an interrupted upload takes space until
        :meth:`Repository.collect_garbage` removes it."""
        return sum(self.payloads.values()) + sum(e.size for e in self.temporaries.values())


@dataclass(frozen=True)
class LocalVersion:
    """What a pusher knows of the local file it commits.

    ``inode`` and ``ctime_ns`` (0: unknown): the identity the file had when
    ``checksum`` was taken (see :class:`escale.sync.planner.LocalFile`). A
    repository may take ``checksum`` for the content it reads when the opened
    file has that identity, size and mtime both before and after the reading
    (any write in between changes the ctime); otherwise it hashes what it reads.
    """

    path: str
    size: int
    mtime_ns: int
    checksum: str | None
    inode: int = 0
    ctime_ns: int = 0


@dataclass(frozen=True)
class StagedPayload:
    """A payload sealed into a local spool file, not yet on the relay (see
    :meth:`Repository.stage_file`): the placeholder to commit once it is
    uploaded, the spool, and its stored size."""

    placeholder: Placeholder
    spool: BinaryIO
    stored: int

    def close(self) -> None:
        """Remove the spool file (it has no name: closing it frees it)."""
        self.spool.close()


@dataclass(frozen=True)
class BigReservation:
    """A file that will be uploaded as a content object of its own on another
    connection (:meth:`Repository.reserve_big`): its local version, the
    version number it was given and the relay object's name."""

    local: LocalVersion
    key: str
    version: int
    name: str


@dataclass(frozen=True)
class BigUpload:
    """A reserved file, uploaded (:meth:`Repository.upload_big`): what its
    index entry records about the object (stored size, stored length,
    compression) and the checksum of the content sent."""

    reservation: BigReservation
    stored: int
    length: int
    compression: str
    checksum: str | None



def _refused(state: RelayState, name: str, exc: EscaleError) -> None:
    """Log that the relay object ``name`` is refused and list it in ``state.rejected``."""
    log.warning("ignoring relay object %s: %s", name, exc)
    state.rejected.append(name)

class Repository:
    """One client's view of one relay repository (placeholder layout)."""

    #: The layout this class reads and writes, as the header records it.
    layout_name = "placeholder"
    #: While :meth:`read_state_again` reads: the placeholders the earlier
    #: reading held, by key (among other values: only placeholders count);
    #: :meth:`_open_meta` returns the one of the same name instead of
    #: decoding it again (a placeholder never changes)
    _known_meta: dict[str, object] | None = None

    def __init__(
        self,
        relay: Relay,
        sealer: Sealer,
        *,
        client_id: str,
        label: str,
        receives: bool,
        mode: str,
        checksum: str | None = "sha256",
        puller_count: int | None = None,
        disk_quota: int | None = None,
        meta_cache: MutableMapping[str, bytes] | None = None,
        spool_dir: str | None = None,
        on_step: Callable[[str], None] | None = None,
        pusher_label: str | None = None,
    ) -> None:
        self.relay = relay
        self.sealer = sealer
        self.client_id = client_id
        self.label = label
        #: what the versions this client pushes name it by (``pusher_label``):
        #: ``pusher_label`` if given (sync passes give ``<label>@<host>``, see
        #: :mod:`escale.sync.labels`), else ``label``
        self.pusher_label = pusher_label or label
        self.receives = receives
        self.mode = mode
        self.checksum = checksum
        self.puller_count = puller_count
        self.disk_quota = disk_quota
        self.meta_cache: MutableMapping[str, bytes] = meta_cache if meta_cache is not None else {}
        self.spool_dir = spool_dir
        #: called after each single relay mutation inside a multi-object
        #: operation (fault tests crash or pause the process there)
        self.step: Callable[[str], None] = on_step or _no_step
        #: temporaries seen by the listings of the current read_state
        self._temporaries: list[Entry] = []
        #: the lease under which this repository marked the relay as being
        #: changed (see :meth:`_touch`), until :meth:`finish_changes`
        self._marker_lease: Lease | None = None
        #: the modification times of ``meta/`` and ``data/`` as listed by
        #: :meth:`prepare` (None each where the backend does not tell)
        self._folder_stamps: list[float | None] | None = None
        #: the time of ``acks/`` in the same listing (see :meth:`quiet_probe`)
        self._acks_stamp: float | None = None
        #: the repository's lasting identity (its header's ``id``), set by
        #: whoever attached to it; part of :meth:`lease_stamp`
        self.identity = ""
        #: the marker (counter, token) under which this object last saved the
        #: snapshot of a full read (:meth:`_save_snapshot`): a second full read
        #: under the same clean marker (the relay phase's, under the lease)
        #: does not write it again
        self._snapshot_marker: tuple[int, str] | None = None
        #: the clean marker this object wrote when its last relay phase's
        #: changes ended (:meth:`finish_changes`), for :meth:`lease_stamp`;
        #: None when that phase changed nothing (or has not ended)
        self._left_marker: ChangeMarker | None = None
        #: an acknowledgement of this client was written since the last
        #: :meth:`read_state` began (set from any thread: one attribute store)
        self._acked_since_read = False
        #: set by a caller that has other connections to the relay (a pass's
        #: transfers): :meth:`read_state` fetches the placeholders it has not
        #: cached through it, several at once, and still opens, checks and
        #: caches each one here, in the same order and by the same rules
        self.object_reader: ObjectReader | None = None

    # ----------------------------------------------------------- setup

    def created_now(self) -> None:
        """Called once, before the first :meth:`read_state`, when this
        process has just created the repository (not when it rebuilt a
        missing header): a layout may skip reading what it knows to be
        empty. This layout reads as always."""

    def prepare(self) -> None:
        """Create the layout's missing folders (idempotent; one listing when
        they all exist). Registration happens in :meth:`read_state`."""
        folders = {e.basename: e for e in self.relay.list() if e.is_dir}
        present = set(folders)
        self._folder_stamps = [folders[f].mtime if f in folders else None for f in (layout.META, layout.DATA)]
        self._acks_stamp = folders[layout.ACKS].mtime if layout.ACKS in folders else None
        for folder in layout.FOLDERS:
            if folder not in present:
                self.relay.mkdir(folder)

    def _register(self, state: RelayState, every: float = 86400.0) -> None:
        """Write this client's registration if it is missing or out of date.

        Out of date: its label, mode or ``receives`` changed, it was forgotten
        (``escalectl clients forget``; the client then registers again), or its
        ``seen`` stamp is ``every`` seconds old or more on this client's own
        clock (or ahead of it). The stamp is this clock in milliseconds; only
        its changes matter to observers. Read passes call this with a day;
        :func:`escale.sync.receivers.after_pass` with a shorter ``every`` when
        ``stale receiver`` is shorter than four days.
        """
        import time  # kept local: this method is the only user in this module

        current = state.clients.get(self.client_id)
        now = int(time.time() * 1000)
        seen = current.seen if current is not None and not current.forgotten else None
        if seen is None or abs(now - seen) >= every * 1000:
            seen = now
        record = ClientRecord(self.client_id, self.label, self.receives, self.mode, seen=seen)
        if current != record:
            name = layout.client_name(self.client_id)
            self.relay.put_bytes(name, self.sealer.seal(name, record.encode()))
            self.meta_cache.pop(name, None)
            state.clients[self.client_id] = record
            if current is None:
                log.info("registered client %s (%s) on %s", self.label, self.client_id, self.relay.describe())
            elif current.forgotten:
                log.warning("client %s (%s) had been forgotten on %s (escalectl clients forget): registered "
                            "again; versions reclaimed meanwhile are missed here", self.label, self.client_id,
                            self.relay.describe())
            elif (current.label, current.receives, current.mode) != (record.label, record.receives, record.mode):
                log.info("updated the registration of client %s (%s) on %s", self.label, self.client_id,
                         self.relay.describe())

    # ----------------------------------------------------------- reading

    def _entries(self, folder: str) -> list[Entry]:
        try:
            return [e for e in self.relay.list(folder, temporaries=self._temporaries) if not e.is_dir]
        except RelayNotFound:
            return []

    def _list(self, folder: str) -> list[str]:
        return [e.name for e in self._entries(folder)]

    def _listing(self, folder: str) -> Iterator[Entry]:
        """The objects of ``folder`` as :meth:`_entries` gives them (listed at
        once, here), each let go as soon as the caller takes the next one:
        what a reader keeps of a listing (names, keys, sizes) replaces the
        listing as it goes, instead of being held beside all of it."""
        try:
            listed = self.relay.list(folder, temporaries=self._temporaries)
        except RelayNotFound:
            return iter(())
        return (entry for entry in _consumed(listed) if not entry.is_dir)

    def _open_meta(self, name: str, stored: bytes | EscaleError | None = None,
                   cached: bytes | None = None, *, looked_up: bool = False) -> StoredPlaceholder:
        """Placeholder ``name``, as ``RelayState.latest`` stores it (packed,
        see :func:`packed_latest`): opened from ``stored`` when given (its
        sealed bytes, or the error reading them raised, as
        :data:`ObjectReader` gives them: the caller read it because
        ``meta_cache`` did not hold it, so the cache is not asked again), else
        from ``cached`` when given (what ``meta_cache`` holds for ``name``,
        looked up by the caller), else from ``meta_cache`` (unless
        ``looked_up``: the caller asked it already, and it held nothing), else
        read on this connection; checked against its name and key, then cached. Raises
        RelayNotFound, ProtocolError or CryptoError (and relay errors of the
        read)."""
        if self._known_meta is not None and (known := self._reused_meta(name)) is not None:
            return known
        if stored is None and cached is None and not looked_up:
            cached = self.meta_cache.get(name)
        elif stored is not None:
            cached = None
        fetched = cached is None
        placeholder: Placeholder | None = None
        if cached is None:
            if isinstance(stored, EscaleError):
                raise stored
            if stored is None:
                stored = self.relay.get_bytes(name, limit=MAX_OBJECT_BYTES)
            cached = self.sealer.open(name, stored)
        else:
            # checked whole against this very name before it was cached (the state is
            # bound to this repository): only its JSON is read, as from the snapshot
            with contextlib.suppress(ValueError, KeyError, TypeError):
                placeholder = _cached_placeholder(cached)
        if placeholder is None:
            placeholder = Placeholder.decode(cached, name)
            if self.sealer.object_key(placeholder.path) != placeholder.key:
                raise ProtocolError(f"relay object {name}: path does not match its key", name=name)
        ref = layout.parse_meta(name)
        if ref is None or placeholder.key != ref.key or placeholder.version != ref.version:
            raise ProtocolError(f"relay object {name}: placeholder does not match its name", name=name)
        if fetched:
            self.meta_cache[name] = cached
        packed = pack_placeholder(placeholder)
        return packed if packed is not placeholder else _shared_strings(placeholder)

    def read_state(self, *, use_marker: bool = False) -> RelayState:
        """List the relay and decode what changed since the last read.

        Placeholders are immutable (a new version is a new object), so each is
        fetched once and then served from ``meta_cache``. Objects that fail to
        open or decode are listed in ``rejected`` and otherwise ignored.

        The change marker (:mod:`escale.protocol.marker`) is read first, before
        any listing. A full read with a clean marker is remembered in
        ``meta_cache`` as a snapshot (the names listed in ``meta/`` and
        ``data/`` and which placeholders were the latest). With
        ``use_marker`` (a pass's read without the lease), when the marker is
        clean and is the very one of that snapshot, and the snapshot is less
        than :data:`FULL_READ_AFTER` seconds old, and ``meta/`` and ``data/``
        look unchanged (on a local-folder relay: their folder times, as
        :meth:`prepare` listed them; elsewhere: their names, listed), no
        placeholder is fetched or decoded strictly: the state is rebuilt from
        the snapshot and the cached placeholders (``from_snapshot``). ``clients/`` and ``acks/``, which other clients
        write without the lease, are always listed. A marker whose counter is
        below the highest this client saw is reported in ``warnings`` (a
        rolled-back relay) and forces a full read.
        """
        state = RelayState(latest=packed_latest())
        self._temporaries = []
        self._acked_since_read = False
        marker = self._read_marker(state)
        self._read_clients(state)
        if use_marker and marker is not None and marker.clean and not state.warnings:
            state.from_snapshot = self._from_snapshot(state, marker)
        if not state.from_snapshot:
            # (not interned: a packed placeholder holds no payload name, it spells it when read)
            state.payloads.update(self._data_entries())
        self._read_acks(state)
        if not state.from_snapshot:
            self._read_meta(state)
            self._list_late_payloads(state)
            if marker is not None and marker.clean and not state.warnings:
                if (marker.counter, marker.token) != self._snapshot_marker:
                    self._save_snapshot(state, marker)
            else:
                self.meta_cache.pop(_SNAPSHOT, None)
                self._snapshot_marker = None
        state.temporaries = {e.name: e for e in self._temporaries}
        self._register(state)
        if marker is not None and marker.clean and not state.warnings:
            state.read_under = (marker.counter, marker.token)
        return state

    def _list_late_payloads(self, state: RelayState) -> None:
        """Add the payloads uploaded after ``data/`` was listed whose
        placeholders were committed before ``meta/`` was.

        ``data/`` is listed first: a push that uploads its payload after that
        listing and commits before ``meta/`` is listed shows a latest
        placeholder whose payload seems gone, and a payload that is gone is
        taken for reclaimed (a receiver in conflict with that version would
        keep its own copy, acknowledge the version unreceived, and never get
        it). A reclaimed version has acknowledgements (reclaim keeps them); a
        latest placeholder whose payload is not listed and that nobody but its
        pusher acknowledged is listed again, once, for all such placeholders:
        ``data/`` is listed a second time and those of their payloads it shows
        are added. What is still missing then is really gone (lost, see
        :func:`~escale.sync.relay_view.lost_payloads`)."""
        latest = state.latest
        late = set()
        for stored in raw_values(latest):
            payload = payload_of(latest, stored)
            # (acks_of reads the key and version alone, which a stored placeholder has)
            if payload is not None and payload not in state.payloads and \
                    not state.acks_of(cast(Placeholder, stored)) - {cast(Placeholder, stored).pusher}:
                late.add(payload)
        if not late:
            return
        log.debug("%d placeholders name a payload not listed and not acknowledged: listing %s again",
                  len(late), layout.DATA)
        for payload_name, stored in self._data_entries():
            if payload_name in late:
                state.payloads[payload_name] = stored

    def _read_acks(self, state: RelayState) -> None:
        """Fill ``state.acks`` from the listing of ``acks/`` (names only: an
        acknowledgement is opened when it is to count, :meth:`acks_authentic`).
        Keys and client ids are shared strings (the keys are also those of
        ``versions`` and of the placeholders), each version's clients a
        shared group; the listed names are not kept."""
        clients: dict[str, str] = {}
        for entry in self._listing(layout.ACKS):
            ref = layout.parse_ack(entry.name)
            if ref is not None:
                client = clients.setdefault(ref.suffix, ref.suffix)
                state.add_ack(sys.intern(ref.key), ref.version, client)

    def _read_clients(self, state: RelayState) -> None:
        for entry in self._entries(layout.CLIENTS):
            name = entry.name
            client = layout.parse_client(name)
            if client is None:
                continue
            # registrations change rarely: cached by name, size and mtime
            cache_key = f"{name}@{entry.size}@{entry.mtime}"
            try:
                data = self.meta_cache.get(cache_key)
                if data is None:
                    data = self.sealer.open(name, self.relay.get_bytes(name, limit=MAX_OBJECT_BYTES))
                record = ClientRecord.decode(data, name)
            except RelayNotFound:
                continue
            except (ProtocolError, CryptoError) as exc:
                _refused(state, name, exc)
                continue
            if record.client == client:
                state.clients[client] = record
                if cache_key not in self.meta_cache:
                    for old in _cache_keys(self.meta_cache, name + "@"):
                        del self.meta_cache[old]
                    self.meta_cache[cache_key] = data

    def _read_meta(self, state: RelayState) -> None:
        """Fill ``state.versions`` and ``state.latest`` from ``meta/``: for each
        key, its highest version that opens (a lower one only when the higher
        ones are gone or refused). The highest versions not cached are fetched
        through :attr:`object_reader` when there is one and they are many; each
        is still opened and checked here, one by one, in the listing's order.
        ``state.latest`` is a map of :func:`packed_latest`."""
        latest = cast(LatestMap, state.latest)
        for entry in self._listing(layout.META):
            if (ref := layout.parse_meta(entry.name)) is not None:
                state.add_version(sys.intern(ref.key), ref.version)
        stream = None
        wanted: set[str] = set()
        if self.object_reader is not None and len(state.versions) >= READER_MIN:
            # one listing of the cache's names (not one lookup per placeholder)
            cached = set(_cache_keys(self.meta_cache, layout.META + "/"))
            missing = [name for key in state.versions
                       if (name := layout.meta_name(key, state.latest_version(key))) not in cached]
            del cached
            if len(missing) >= READER_MIN:
                wanted = set(missing)
                log.debug("reading %d placeholders on other connections", len(missing))
                stream = self.object_reader(missing, MAX_OBJECT_BYTES)
        keys = iter(state.versions)
        try:
            while chunk := list(itertools.islice(keys, _CACHE_LOOKUPS)):
                # the cached placeholders of a chunk's latest versions, in few queries (the
                # placeholders an earlier reading gave are taken from it instead); None for
                # a name asked that the cache does not hold
                prefetched: dict[str, bytes | None] = {}
                if self._known_meta is None:
                    prefetched = dict.fromkeys(
                        name for key in chunk
                        if (name := layout.meta_name(key, state.latest_version(key))) not in wanted)
                    prefetched.update(_cached_values(self.meta_cache, list(prefetched)))
                for key in chunk:
                    self._read_key(state, latest, key, stream, wanted, prefetched)
        finally:
            if stream is not None:
                stream.close()
        for stale in _cache_keys(self.meta_cache, layout.META + "/", lambda n: not _listed(state, n)):
            del self.meta_cache[stale]

    def _read_key(self, state: RelayState, latest: LatestMap, key: str,
                  stream: Generator[tuple[str, bytes | EscaleError], None, None] | None, wanted: set[str],
                  prefetched: dict[str, bytes | None]) -> None:
        """Put ``key``'s highest version that opens into ``latest`` (see
        :meth:`_read_meta`): ``stream`` gives the ``wanted`` placeholders in
        order, ``prefetched`` what the cache holds for some of the others
        (None: asked, not held)."""
        for version in reversed(state.versions_of(key)):
            name = layout.meta_name(key, version)
            stored: bytes | EscaleError | None = None
            if stream is not None and name in wanted:
                got, stored = next(stream)
                if got != name:  # the reader's contract: the names asked, in order
                    raise RuntimeError(f"object reader gave {got!r} for {name!r}")
            try:
                opened = self._open_meta(name, stored, prefetched.get(name), looked_up=name in prefetched)
            except RelayNotFound:
                continue
            except (ProtocolError, CryptoError) as exc:
                _refused(state, name, exc)
                continue
            path = opened.path
            known = dict.get(latest, path)
            if known is None or cast(StoredPlaceholder, known).version < opened.version:
                latest.store(path, opened)  # as opened (packed, see packed_latest)
            return

    # ----------------------------------------------------------- the change marker

    def _read_marker(self, state: RelayState) -> ChangeMarker | None:
        """The relay's change marker, None when it is missing or unreadable
        (both mean: read everything). Records the highest counter seen; a
        lower one is a rollback, put in ``state.warnings``."""
        highest = _int_or_zero(self.meta_cache.get(_MARKER_HIGHEST))
        try:
            marker = ChangeMarker.decode(self.sealer.open(MARKER, self.relay.get_bytes(
                MARKER, limit=MAX_OBJECT_BYTES)))
        except RelayNotFound:
            if highest:
                state.warnings.append(
                    f"the relay's change marker ({MARKER}) is missing, but counter {highest} was seen here: "
                    "the relay lost objects or was rolled back to an older state")
            return None
        except (ProtocolError, CryptoError) as exc:
            log.warning("ignoring relay object %s: %s", MARKER, exc)
            state.rejected.append(MARKER)
            return None
        if marker.counter < highest:
            state.warnings.append(
                f"the relay's change marker ({MARKER}) went back from counter {highest} to {marker.counter}: "
                "the relay was rolled back to an older state (a restored backup, a replay)")
        elif marker.counter > highest:
            self.meta_cache[_MARKER_HIGHEST] = str(marker.counter).encode("ascii")
        return marker

    def _save_snapshot(self, state: RelayState, marker: ChangeMarker) -> None:
        """Remember ``state``'s ``meta/`` and ``data/`` part under ``marker``
        (read back by :meth:`_from_snapshot`): one JSON object, the names of
        ``meta`` in sorted order. Made a few thousand names at a time (the
        bytes are those of ``json.dumps`` of the whole, compact): no list of
        every name and no text of the whole, in memory; the pieces go to a
        spool file as they are made, and from there to the state database a
        piece at a time (:mod:`escale.protocol.spooled`)."""
        if _SNAPSHOT in self.meta_cache:
            del self.meta_cache[_SNAPSHOT]  # (replacing it would read the old one back to compare)
        head = json.dumps({"counter": marker.counter, "token": marker.token, "time": time.time(),
                           "stamps": self._folder_stamps}, separators=(",", ":"))
        with SpooledValue(self.spool_dir) as out:
            out.append(head[:-1].encode("utf-8") + b',"meta":[')
            # keys have one length (32 hex digits): sorted keys, then each key's
            # versions as spelled, is the order of the sorted names
            _write_pieces(out, (f"{key}.{digits}" for key in sorted(state.versions)
                                for digits in sorted(f"{v:010d}" for v in state.versions_of(key))))
            out.append(b'],"latest":[')
            _write_pieces(out, (layout.meta_name(p.key, p.version)
                                for p in cast("Iterable[StoredPlaceholder]", raw_values(state.latest))))
            out.append(b'],"payloads":{')
            _write_pieces(out, iter(state.payloads.items()))
            out.append(b'},"rejected":' + json.dumps(state.rejected, separators=(",", ":")).encode("utf-8") + b"}")
            spooled.store(self.meta_cache, _SNAPSHOT, out)
        self._snapshot_marker = (marker.counter, marker.token)

    def _from_snapshot(self, state: RelayState, marker: ChangeMarker) -> bool:
        """Fill ``state``'s ``meta/`` and ``data/`` part from the last full
        read's snapshot if ``marker`` is the one it was taken under; False
        (``state`` untouched there) when it cannot be used."""
        raw = self.meta_cache.get(_SNAPSHOT)
        if raw is None:
            return False
        try:
            snapshot = json.loads(raw)
            if (snapshot["counter"], snapshot["token"]) != (marker.counter, marker.token):
                return False
            if self._stamps_trusted():
                if snapshot["stamps"] != self._folder_stamps:
                    return False  # meta/ or data/ changed without the marker (by hand, a partial restore)
            else:
                # folder times too coarse (a change within the second of the last read keeps the
                # time) or meaningless: the names are listed (no object is read or decoded)
                listed = sorted(name.rpartition("/")[2] for name in self._list(layout.META))
                if listed != snapshot["meta"] or dict(self._data_entries()) != snapshot["payloads"]:
                    return False
            if not 0 <= time.time() - float(snapshot["time"]) < FULL_READ_AFTER:
                return False
            shelf = RelayState()
            for base in snapshot["meta"]:
                key, _, digits = base.partition(".")
                shelf.add_version(sys.intern(key), int(digits))
            versions = shelf.versions
            del shelf
            payloads = {str(k): int(v) for k, v in snapshot["payloads"].items()}
            latest = packed_latest()
            wanted = set(snapshot["latest"])
            stream = getattr(self.meta_cache, "items_with_prefix", None)
            if stream is not None:  # the state database's table: one query for them all
                for name, data in stream(layout.META + "/"):
                    if name in wanted:
                        placeholder = _cached_placeholder(data)
                        latest[placeholder.path] = placeholder
            else:
                for name in wanted:
                    placeholder = _cached_placeholder(self.meta_cache[name])
                    latest[placeholder.path] = placeholder
            if len(latest) != len(wanted):
                return False  # a cached placeholder is missing (or two share a path)
            rejected = [str(n) for n in snapshot["rejected"]]
        except (KeyError, ValueError, TypeError, AttributeError):
            log.debug("the snapshot of the last full read is unusable: reading the relay")
            return False
        state.versions, state.latest, state.payloads = versions, latest, payloads
        state.rejected.extend(rejected)
        return True

    def _stamps_trusted(self) -> bool:
        """Whether the folder times listed by :meth:`prepare` show every change
        of ``meta/`` and ``data/``: a local folder relay, whose times are
        finer than a second (on servers they are whole seconds, or, on object
        stores, not kept at all)."""
        precision = self.relay.capabilities.mtime_precision
        return (self.relay.scheme == "file" and precision is not None and precision < 1.0
                and self._folder_stamps is not None and None not in self._folder_stamps)

    def _touch(self, lease: Lease) -> None:
        """Before a change to ``meta/`` or ``data/`` under ``lease``: mark the
        relay as being changed (once per lease), so that no reader trusts an
        older snapshot from now on, even if this writer crashes."""
        if self._marker_lease is lease:
            return
        highest = _int_or_zero(self.meta_cache.get(_MARKER_HIGHEST))
        try:
            current = ChangeMarker.decode(self.sealer.open(MARKER, self.relay.get_bytes(
                MARKER, limit=MAX_OBJECT_BYTES)))
            highest = max(highest, current.counter)
        except RelayNotFound:
            pass
        except (ProtocolError, CryptoError) as exc:
            log.warning("overwriting relay object %s: %s", MARKER, exc)
        self._write_marker(lease, ChangeMarker.next(highest, clean=False))
        self._marker_lease = lease

    def lease_stamp(self) -> str | None:
        """The state this client knows the repository to be in, in words the
        next lease holder can compare with its own (the released lease record
        carries it: doc/protocol.rst, "The hand-over stamp"); None when it
        knows none.

        The placeholder layout's: ``placeholder <repository id> <counter>
        <token>``, the clean change marker that :meth:`finish_changes` wrote
        at the end of this holder's changes, the last change it made. A
        holder that changed nothing leaves no stamp: a change made outside
        the protocol (by hand, or an operation that does not move the
        marker) could then hide behind the marker it read."""
        marker = self._left_marker
        return None if marker is None else _placeholder_stamp(self.identity, (marker.counter, marker.token))

    def quiet_probe(self) -> str | None:
        """A summary of what a reader of this layout lists, equal between two
        moments only if nothing a pass reads changed in between (see
        :mod:`escale.sync.quiet`); None when there is none to be had now.

        The placeholder layout's: the change marker, which must be clean
        and not below the highest counter seen here (a commit, a reclaim or
        a clean-up under the lease moves it; a writer at work or one that
        crashed leaves it not clean: no probe); every name, size and time
        in ``clients/`` (registrations); and the placeholders, payloads and
        acknowledgements. On a local-folder relay, whose folder times are
        finer than a second, the times of ``meta/``, ``data/`` and ``acks/``
        as :meth:`prepare` listed them stand for their content. Elsewhere
        ``meta/`` and ``data/`` are listed (names and sizes: placeholders
        replayed or removed behind the marker's back, a rollback by hand, are
        seen at once), and ``acks/`` too when ``data/`` holds a payload: with
        no payload on the relay an acknowledgement can neither reclaim nor
        deliver anything (a payload comes with a commit, which moves the
        marker), and every acknowledgement kept would cost one more name per
        file. Costs one read and one to four listings, no object opened but
        the marker; nothing is kept for :meth:`read_state`."""
        try:
            marker = ChangeMarker.decode(self.sealer.open(MARKER, self.relay.get_bytes(
                MARKER, limit=MAX_OBJECT_BYTES)))
        except (RelayNotFound, ProtocolError, CryptoError):
            return None
        if not marker.clean or marker.counter < _int_or_zero(self.meta_cache.get(_MARKER_HIGHEST)):
            return None
        digest = hashlib.sha256(f"placeholder {self.identity} {marker.counter} {marker.token}\n".encode("ascii"))

        def add(folder: str) -> int:
            """Digest the listing of ``folder`` (taken in name order, each
            entry let go once digested), then its temporaries; how many."""
            self._temporaries = []
            digest.update(f"{folder}/\n".encode("ascii"))
            count = 0
            listed = self._listing(folder)  # listed now: the temporaries are collected
            temporaries = sorted(self._temporaries, key=lambda e: e.name)
            for e in itertools.chain(listed, temporaries):
                digest.update(f"{e.name}\0{e.size}\0{e.mtime}\n".encode("utf-8", "surrogateescape"))
                count += 1
            return count

        add(layout.CLIENTS)
        if self._stamps_trusted() and self._acks_stamp is not None:
            digest.update(repr((self._folder_stamps, self._acks_stamp)).encode("ascii"))
        else:
            add(layout.META)
            if add(layout.DATA):
                add(layout.ACKS)
        self._temporaries = []
        return digest.hexdigest()

    def read_state_again(self, state: RelayState) -> RelayState:
        """Read the relay in full, as :meth:`read_state` does without the
        marker, into ``state`` itself (an earlier reading, which is replaced),
        and return it: the relay phase's reading under the lease.

        The containers ``state`` held are released before the relay is
        listed, and a placeholder listed under the same name as one ``state``
        held is that same object (placeholders are immutable, and served from
        ``meta_cache`` by name anyway): a pass never holds two readings of the
        relay. Whoever holds ``state`` sees the new reading (as in the index
        layout, whose :meth:`state_under_lease` keeps its state). When the
        reading raises, ``state`` is left empty: the pass stops there.
        """
        # the earlier reading's placeholders by key, in its own dict of versions (every key of
        # ``latest`` is listed there): no second dict of every key is made
        known: dict[str, object] = cast(dict[str, object], state.versions)
        for stored in cast("Iterable[StoredPlaceholder]", raw_values(state.latest)):
            known[stored.key] = stored
        _move_state(RelayState(), state)
        self._known_meta = known
        try:
            fresh = self.read_state()
        finally:
            self._known_meta = None
        _move_state(fresh, state)
        return state

    def _reused_meta(self, name: str) -> StoredPlaceholder | None:
        """The placeholder named ``name`` among :attr:`_known_meta` (as
        stored), if any."""
        ref = layout.parse_meta(name)
        known = self._known_meta.get(ref.key) if ref is not None and self._known_meta else None
        if isinstance(known, (Placeholder, PackedPlaceholder)) and ref is not None and known.version == ref.version:
            return known
        return None

    def state_under_lease(self, lease: Lease, state: RelayState) -> RelayState | None:
        """``state`` (read before ``lease`` was taken) made fit for the relay
        phase without reading the relay again, when the previous holder's
        stamp proves that nothing the lease guards changed since it was
        read; None otherwise (the caller confirms the layout and reads the
        state again).

        The placeholder layout's proof: ``state`` was read under a clean
        change marker, and the previous holder released its lease with the
        stamp of that very marker (:meth:`lease_stamp`). That holder wrote it
        after its last change, and every change under the lease moves the
        marker first, so the reading came after that holder's changes and
        nothing the lease guards changed since (a later holder would be the
        previous one). ``clients/`` and ``acks/``, written without the lease,
        are not read again: a registration or acknowledgement may arrive at
        any moment of a holder's work anyway, and an older view of them only
        reclaims less. This client's own acknowledgements written since the
        reading are counted: ``acks/`` is listed again when there are any
        (one listing; what was listed before stays, as only the lease holder
        removes acknowledgements)."""
        previous = lease.previous_stamp()
        if state.read_under is None or previous is None or previous != _placeholder_stamp(
                self.identity, state.read_under):
            log.debug("lease generation %d: the previous holder left %r, this client read under marker %r: "
                      "reading again", lease.generation, previous, state.read_under)
            return None
        if self._acked_since_read:
            self._read_acks(state)
        return state

    def finish_changes(self, lease: Lease) -> None:
        """After the last change under ``lease`` (before releasing it): mark
        the relay clean again, with a new counter and token, so that readers
        read it in full once and may then skip ``meta/`` and ``data/``. Does
        nothing when nothing was changed under ``lease``; a writer that
        crashed or lost its lease before this leaves the marker not clean,
        and readers read in full until the next writer finishes."""
        self._left_marker = None
        if self._marker_lease is not lease:
            return
        self._marker_lease = None
        marker = ChangeMarker.next(_int_or_zero(self.meta_cache.get(_MARKER_HIGHEST)), clean=True)
        self._write_marker(lease, marker)
        self._left_marker = marker

    def _write_marker(self, lease: Lease, marker: ChangeMarker) -> None:
        lease.check()
        self.relay.put_bytes(MARKER, self.sealer.seal(MARKER, marker.encode()))
        self.meta_cache[_MARKER_HIGHEST] = str(marker.counter).encode("ascii")
        self.step(f"marker {marker.counter}")

    def _data_entries(self) -> Iterator[tuple[str, int]]:
        """The payloads listed in ``data/`` with their sizes (listed at once,
        taken one by one: see :meth:`_listing`)."""
        return ((e.name, e.size) for e in self._listing(layout.DATA) if layout.parse_data(e.name))

    def fetch(self, placeholder: Placeholder, sink: BinaryIO) -> str | None:
        """Write the plaintext of ``placeholder``'s payload into ``sink``.

        Returns the checksum of what was written (``algorithm:hex``, or None
        when the placeholder has none). Raises RelayNotFound when the payload is
        gone (reclaimed or superseded meanwhile), IntegrityError when it fails
        authentication or its checksum or size differs. ``sink`` may hold a
        prefix when it raises: callers write into a temporary file.

        The same as :meth:`fetch_payload_on` on this repository's connection
        (which is how parallel transfers fetch a payload on theirs).
        """
        return self.fetch_payload_on(placeholder, sink, self.relay)

    def fetch_payload_on(self, placeholder: Placeholder, sink: BinaryIO, relay: Relay) -> str | None:
        """:meth:`fetch` through ``relay`` (this repository's connection, or
        another one to its relay): a payload of at most :data:`SMALL_PAYLOAD`
        plaintext bytes is read into memory (bounded by
        :data:`SMALL_PAYLOAD_SEALED`), a bigger one is opened, verified and
        hashed as it arrives, straight into ``sink``, without a spool file
        (:func:`~escale.protocol.streams.receive_opening`; a retried download
        starts ``sink`` again from where it stood). Through a spool file
        (:meth:`download_payload`, :meth:`open_payload`) only where the
        sealer has no ``open_writer`` or ``sink`` cannot tell where it
        stands. Touches no shared state: safe from a worker thread with its
        own ``relay``. Raises as :meth:`fetch`: nothing written into ``sink``
        counts before it returned."""
        algorithm = self._fetch_algorithm(placeholder)
        assert placeholder.payload is not None
        if placeholder.size <= SMALL_PAYLOAD:
            try:
                sealed = relay.get_bytes(placeholder.payload, limit=SMALL_PAYLOAD_SEALED)
            except ObjectTooLarge as exc:
                raise IntegrityError(f"relay object {placeholder.payload}: larger than a sealed "
                                     f"{placeholder.size}-byte file can be, for {placeholder.path}") from exc
            return self.open_payload(placeholder, io.BytesIO(sealed), sink)
        open_writer = getattr(self.sealer, "open_writer", None)
        start = start_of(sink) if open_writer is not None else None
        if open_writer is None or start is None:
            with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
                self.download_payload(placeholder, cast(BinaryIO, spool), relay)
                return self.open_payload(placeholder, cast(BinaryIO, spool), sink)
        try:
            pipeline, count = receive_opening(relay, placeholder.payload, sink, start, open_writer, algorithm,
                                              limit=received_bound(self.sealer, placeholder.size))
        except ObjectTooLarge as exc:
            raise IntegrityError(f"relay object {placeholder.payload}: larger than a sealed "
                                 f"{placeholder.size}-byte file can be, for {placeholder.path}") from exc
        return _verified(placeholder, count, pipeline.hasher, algorithm)

    # ----------------------------------------------------------- transfers on other connections

    def replaced_meanwhile(self, placeholder: Placeholder) -> bool:
        """Whether ``placeholder``'s version was removed from the relay since it
        was read, because a newer version superseded it (its placeholder is
        gone: removal takes the placeholder first, then the payload). One
        request. False when the placeholder is still there (the payload alone
        went: reclaimed, or lost) or cannot be checked."""
        try:
            return not self.relay.exists(layout.meta_name(placeholder.key, placeholder.version))
        except RelayError:
            return False

    def fetches_apart(self) -> bool:
        """Whether a payload may be fetched on another connection
        (:meth:`fetch_payload_on`), or fetched as stored in a group
        (:meth:`~escale.relay.Relay.get_many`) and opened later
        (:meth:`open_payload`). True for this layout; a layout that fetches its own way (it overrides
        :meth:`fetch`, as the index layout does) is fetched with :meth:`fetch`."""
        return type(self).fetch is Repository.fetch

    def fetchable_apart(self, placeholder: Placeholder) -> bool:
        """Whether ``placeholder``'s content may be fetched on another
        connection: with :meth:`download_payload` and :meth:`open_payload`
        where :meth:`fetches_apart`, else with :meth:`fetch_on` (the index
        layout's big objects). Called on the pass's thread."""
        return self.fetches_apart()

    def fetch_on(self, placeholder: Placeholder, sink: BinaryIO, relay: Relay) -> str | None:
        """As :meth:`fetch`, through ``relay`` (another connection to this
        repository's relay), for a placeholder :meth:`fetchable_apart`
        accepted (:meth:`fetch_payload_on` here). Touches no shared state:
        safe from a worker thread."""
        return self.fetch_payload_on(placeholder, sink, relay)

    def _fetch_algorithm(self, placeholder: Placeholder) -> str | None:
        """The checksum algorithm of ``placeholder`` (None: it has none);
        RelayNotFound when it has no payload, ProtocolError when its checksum
        is malformed (checked before anything is downloaded)."""
        if placeholder.payload is None:
            raise RelayNotFound(f"{placeholder.path} has no payload", name=placeholder.path)
        if placeholder.checksum and checksum_problem(placeholder.checksum) is not None:
            # decode() refuses these; a placeholder built elsewhere must not reach hashlib
            raise ProtocolError(f"{placeholder.path}: {checksum_problem(placeholder.checksum)}",
                                name=placeholder.path)
        return placeholder.checksum.partition(":")[0] if placeholder.checksum else None

    def download_payload(self, placeholder: Placeholder, spool: BinaryIO, relay: Relay | None = None) -> None:
        """Download ``placeholder``'s payload as stored (sealed, unchecked)
        into ``spool`` (a local temporary file), through ``relay`` (another
        connection to this repository's relay; default: this one's). Nothing
        is decrypted or verified here: :meth:`open_payload` does that. Raises
        as :meth:`fetch` (RelayNotFound, ProtocolError, relay errors), DiskFull
        or LocalError when ``spool`` cannot be written. Touches no shared
        state: safe from a worker thread with its own ``relay``."""
        self._fetch_algorithm(placeholder)
        assert placeholder.payload is not None
        # a write error here is the local disk's, not the relay's: the
        # wrapper reports it as such (backends would blame the relay object)
        (relay or self.relay).get(placeholder.payload, cast(BinaryIO, _LocalSpool(spool, placeholder.path)))

    def open_payload(self, placeholder: Placeholder, spool: BinaryIO, sink: BinaryIO) -> str | None:
        """Decrypt and verify what :meth:`download_payload` wrote into
        ``spool`` (read from its start) into ``sink``; returns and raises as
        :meth:`fetch`."""
        algorithm = self._fetch_algorithm(placeholder)
        assert placeholder.payload is not None
        hasher = hashlib.new(algorithm) if algorithm else None
        counting = HashingWriter(sink, hasher)
        spool.seek(0)
        self.sealer.open_stream(placeholder.payload, spool, cast(BinaryIO, counting))
        return _verified(placeholder, counting.count, hasher, algorithm)

    # ----------------------------------------------------------- receivers

    def expected_receivers(self, placeholder: Placeholder, state: RelayState) -> set[str]:
        """Clients that must acknowledge ``placeholder`` before its payload goes.

        The registered receivers, plus the receivers listed in the placeholder
        (a registration that is missing or unreadable does not release its
        client: absence is not a fact), minus the pusher and minus clients
        whose registration says ``forgotten`` (``escalectl clients forget``):
        only an explicit forget lets reclaim go on without a receiver.
        """
        forgotten = {c for c, r in state.clients.items() if r.forgotten}
        receivers = {c for c, r in state.clients.items() if r.receives and not r.forgotten}
        receivers |= set(placeholder.receivers) - forgotten
        receivers.discard(placeholder.pusher)
        return receivers

    def reclaimable(self, placeholder: Placeholder, state: RelayState) -> bool:
        """Whether every expected receiver acknowledged this version.

        With ``puller count`` set, that many acknowledgements suffice. Without
        it, every expected receiver (:meth:`expected_receivers`: registered and
        listed ones, never forgotten ones) must have acknowledged, and at least
        one must exist: a payload nobody can receive yet is kept for the
        clients still to come. A stale receiver (see ``stale receiver``) still
        counts: it is reported, never dropped on its own.
        """
        acks = state.acks_of(placeholder) - {placeholder.pusher}
        wanted = placeholder.puller_count or self.puller_count
        if wanted:
            return len(acks) >= wanted
        expected = self.expected_receivers(placeholder, state)
        return bool(expected) and expected <= acks

    def anything_reclaimable(self, state: RelayState) -> bool:
        """Whether some latest version of ``state`` has a payload that
        :meth:`reclaimable` would let go now (one placeholder built at a
        time, up to the first such version)."""
        latest = state.latest
        return any(state.stored_has_payload(stored) and self.reclaimable(placeholder_of(latest, stored), state)
                   for stored in raw_values(latest))

    def acknowledge(self, placeholder: Placeholder) -> None:
        """Record that this client is done with ``placeholder`` (idempotent)."""
        self.acknowledge_on(placeholder, self.relay)

    def acknowledges_apart(self) -> bool:
        """Whether an acknowledgement may be written on another connection
        (:meth:`acknowledge_on`), in any order with the others. True for this
        layout (one object per version and receiver); a layout that gathers
        its acknowledgements (it overrides :meth:`acknowledge`, as the index
        layout does) writes them with :meth:`acknowledge`."""
        return type(self).acknowledge is Repository.acknowledge

    def acknowledge_on(self, placeholder: Placeholder, relay: Relay) -> None:
        """As :meth:`acknowledge`, through ``relay`` (this repository's relay
        or another connection to it). Touches no shared state but the mark of
        :meth:`acknowledged`: safe from a worker thread with its own ``relay``."""
        relay.put_bytes(*self.ack_object(placeholder))
        self.acknowledged()

    def acknowledged(self) -> None:
        """Note that an acknowledgement of this client was written (by
        :meth:`acknowledge_on`, or in a group of :meth:`ack_object`'s objects):
        :meth:`state_under_lease` then counts it. Safe from any thread."""
        self._acked_since_read = True

    def ack_object(self, placeholder: Placeholder) -> tuple[str, bytes]:
        """The relay name and sealed content of this client's acknowledgement
        of ``placeholder``, as :meth:`acknowledge_on` writes it (for callers
        that write several in one group). Touches no shared state."""
        name = layout.ack_name(placeholder.key, placeholder.version, self.client_id)
        ack = Ack(self.client_id, placeholder.key, placeholder.version)
        return name, self.sealer.seal(name, ack.encode())

    # ----------------------------------------------------------- batching (the index layout's hooks)

    def flush_acks(self) -> None:
        """Write acknowledgements buffered so far: nothing here (each is
        written by :meth:`acknowledge`); the index layout writes its record."""

    def when_committed(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the commits made so far are on the relay:
        at once here (:meth:`commit_file` commits before it returns); the
        index layout runs it after :meth:`commit_pending`."""
        callback()

    def commit_pending(self, lease: Lease, state: RelayState) -> int:
        """Commit what :meth:`commit_file` and :meth:`commit_tombstone`
        buffered: nothing here; the index layout uploads its page and index
        delta. Returns how many versions were committed (their placeholders
        are then in ``state.latest``; no list of them is made)."""
        return 0

    def abandon_pending(self) -> None:
        """Forget what was buffered and not committed (the relay phase failed)."""

    # ----------------------------------------------------------- committing

    def _receivers_now(self, state: RelayState) -> tuple[str, ...]:
        return tuple(sorted(c for c, r in state.clients.items() if r.receives and c != self.client_id))

    def commit_file(
        self,
        lease: Lease,
        state: RelayState,
        local: LocalVersion,
        source: BinaryIO,
    ) -> Placeholder:
        """Push ``source`` (the local file's content) as the path's next version.

        The payload is sealed while its checksum is computed (or, when
        ``local`` carries the scan's identity and ``source`` keeps it from
        before the first read to after the last, taken from the scan:
        :meth:`_seal_into`), so the placeholder describes exactly the bytes
        sent: while it is uploaded, or into a spool file first
        (:meth:`send_file`); a file written to meanwhile raises ProtocolError. Raises
        RelayQuotaExceeded (transient) when ``disk quota`` would be exceeded,
        LeaseLost when the lease is no longer ours (usually nothing was
        committed then, at worst an orphan payload remains; if the lease was
        lost while the placeholder was being written, the placeholder may be
        there, possibly without its payload), ProtocolError when the path's
        version on the relay moved since ``state`` was read.

        The same as :meth:`send_file` and :meth:`commit_staged` in a row
        (which is how parallel transfers use it).
        """
        staged = self.send_file(lease, state, local, source)
        staged.close()
        return self.commit_staged(lease, state, staged)

    def pushes_apart(self) -> bool:
        """Whether payloads may be uploaded on other connections
        (:meth:`stage_file`, :meth:`upload_staged`, :meth:`commit_staged`).
        True for this layout; a layout that commits its own way (it overrides
        :meth:`commit_file`, as the index layout does) uses :meth:`commit_file`."""
        return type(self).commit_file is Repository.commit_file

    def pushes_big_apart(self, size: int) -> bool:
        """Whether a file of ``size`` bytes is uploaded as an object of its
        own on another connection, ahead of its commit (:meth:`reserve_big`
        on the pass's thread, :meth:`upload_big` on a worker,
        :meth:`commit_big` on the pass's thread) in a layout that does not
        :meth:`pushes_apart`. False here; the index layout's big files."""
        return False

    def reserve_big(self, lease: Lease, state: RelayState, local: LocalVersion) -> BigReservation:
        """Number ``local``'s next version and name its object (only where
        :meth:`pushes_big_apart`); nothing is sent. The caller hands the
        reservation to :meth:`upload_big`, or to :meth:`release_big`."""
        raise NotImplementedError(f"the {self.layout_name} layout pushes no big object apart")

    def upload_big(self, lease: Lease, reservation: BigReservation, source: BinaryIO, relay: Relay) -> BigUpload:
        """Upload ``source`` (the reserved file, opened and checked by the
        caller) as the reserved object through ``relay``; touches no shared
        state (safe from a worker thread). Raises LeaseLost, ProtocolError
        when the file changed while it was read, relay errors; what was
        stored is then an orphan that :meth:`collect_garbage` removes."""
        raise NotImplementedError(f"the {self.layout_name} layout pushes no big object apart")

    def commit_big(self, lease: Lease, state: RelayState, uploaded: BigUpload) -> Placeholder:
        """On the pass's thread, once :meth:`upload_big` returned: commit the
        version (the index layout buffers it until :meth:`commit_pending`,
        as :meth:`commit_file` does). Raises as :meth:`commit_file`."""
        raise NotImplementedError(f"the {self.layout_name} layout pushes no big object apart")

    def release_big(self, reservation: BigReservation) -> None:
        """Give back a reservation that is never committed (its upload failed
        or was abandoned)."""

    def _check_quota(self, state: RelayState, more: int, path: str) -> None:
        """RelayQuotaExceeded (transient: ``path`` waits for reclaim) when
        ``more`` stored bytes would take the relay past ``disk quota``."""
        if self.disk_quota is not None and state.stored_bytes() + more > self.disk_quota:
            raise RelayQuotaExceeded(f"disk quota of {self.disk_quota} bytes reached; {path} waits for reclaim",
                                     name=path)

    def stage_file(self, lease: Lease, state: RelayState, local: LocalVersion, source: BinaryIO) -> StagedPayload:
        """The first step of :meth:`commit_file`, on this thread: seal
        ``source`` into a spool file (hashing it), check ``disk quota`` and
        reserve the payload's room in ``state.payloads`` (so that payloads
        staged and not yet uploaded count against the quota), mark the relay
        as being changed (the change marker, before any payload goes up).
        Raises as :meth:`commit_file`; nothing is on the relay yet. The caller
        closes the result, and calls :meth:`release_staged` if it is never
        uploaded. Versions of one path are staged one at a time (the next is
        numbered above the last committed one)."""
        key = self.sealer.object_key(local.path)
        version = state.next_version(key, local.path)
        payload = layout.data_name(key, version)
        spool = self._payload_spool(local.size)
        try:
            stored, checksum = self._seal_into(payload, local, source, spool)
            self._check_quota(state, stored, local.path)
            spool.seek(0)
            self._touch(lease)
        except BaseException:
            spool.close()
            raise
        state.payloads[payload] = stored
        return StagedPayload(self._staged_placeholder(lease, state, local, key, version, payload, checksum),
                             spool, stored)

    def seals_while_sent(self, size: int) -> bool:
        """Whether the payload of a ``size``-byte file is sealed while it is
        uploaded, without a spool file (:meth:`send_file`,
        :meth:`send_reserved`): above :data:`SPOOL_IN_MEMORY`, with a sealer
        that announces the sealed size first and seals piece by piece
        (:func:`~escale.protocol.streams.sealing_parts`)."""
        return size > SPOOL_IN_MEMORY and sealing_parts(self.sealer) is not None

    def send_file(self, lease: Lease, state: RelayState, local: LocalVersion, source: BinaryIO,
                  relay: Relay | None = None) -> StagedPayload:
        """:meth:`stage_file` and :meth:`upload_staged` in one, on this
        thread, through ``relay`` (default: this repository's connection):
        the payload is on the relay when it returns, its placeholder is left
        to :meth:`commit_staged`. Where :meth:`seals_while_sent` (and
        ``source`` can be rewound), no spool file: ``disk quota`` is checked
        against the sealed size announced beforehand, the relay is marked as
        being changed, then the file is sealed while sent
        (:meth:`_send_sealing`); the staged payload's spool is then empty.
        Raises as :meth:`commit_file`; the room reserved is given back (a
        payload stored all the same is an orphan, which
        :meth:`collect_garbage` removes). The caller closes the result."""
        if not self.seals_while_sent(local.size) or start_of(source) is None:
            staged = self.stage_file(lease, state, local, source)
            try:
                self.upload_staged(lease, staged, relay)
            except BaseException:
                self.release_staged(state, staged)
                staged.close()
                raise
            return staged
        key = self.sealer.object_key(local.path)
        version = state.next_version(key, local.path)
        payload = layout.data_name(key, version)
        stored = self._sealed_size(local.size)
        self._check_quota(state, stored, local.path)
        self._touch(lease)
        state.payloads[payload] = stored
        try:
            checksum = self._send_sealing(lease, payload, local, source, relay or self.relay)
        except BaseException:
            state.payloads.pop(payload, None)
            raise
        return StagedPayload(self._staged_placeholder(lease, state, local, key, version, payload, checksum),
                             io.BytesIO(), stored)

    def send_reserved(self, lease: Lease, reserved: StagedPayload, local: LocalVersion, source: BinaryIO,
                      relay: Relay) -> StagedPayload:
        """:meth:`seal_reserved` and :meth:`upload_staged` in one, for a file
        that :meth:`seals_while_sent`, through ``relay``: ``source``
        (``local``'s content, opened and checked by the caller, rewindable)
        is sealed while it is sent (:meth:`_send_sealing`), no spool file.
        Returns the staged payload :meth:`seal_reserved` would have returned
        (its checksum and stored size; its spool stays empty), uploaded.
        Raises LeaseLost, ProtocolError when ``source`` changed meanwhile,
        the local file's read errors as such, relay errors; what was stored
        is then an orphan (:meth:`collect_garbage`). Touches no shared
        state: safe from a worker thread with its own ``relay``."""
        assert reserved.placeholder.payload is not None
        checksum = self._send_sealing(lease, reserved.placeholder.payload, local, source, relay)
        return StagedPayload(replace(reserved.placeholder, checksum=checksum), reserved.spool,
                             self._sealed_size(local.size))

    def _sealed_size(self, size: int) -> int:
        """The stored size of the payload of a ``size``-byte file (only where
        :meth:`seals_while_sent`)."""
        parts = sealing_parts(self.sealer)
        assert parts is not None
        return int(parts[1](size))

    def _send_sealing(self, lease: Lease, payload: str, local: LocalVersion, source: BinaryIO,
                      relay: Relay) -> str | None:
        """Upload ``source`` (``local``'s content, from where it stands) as
        ``payload`` through ``relay``, sealed while it is sent, once the lease
        is checked; returns the content's checksum, under the rules of
        :meth:`_seal_into` (the scan's, checked with
        :func:`~escale.protocol.identity.same_file` after the last read, or
        hashed while read). The relay reads exactly the sealed size of
        ``local.size`` bytes; a retried upload reads the file again from its
        first byte. ProtocolError when ``source`` is not ``local.size``
        long or changed while it was read (what was sent is an orphan)."""
        parts = sealing_parts(self.sealer)
        start = start_of(source)
        assert parts is not None and start is not None
        seal_pieces, sealed_size = parts
        trusted = trusted_checksum(local, source, self.checksum)
        hashing = self.checksum if trusted is None else None
        lease.check()
        reading, exact = send_sealing(relay, payload, int(sealed_size(local.size)), source, start, hashing,
                                      seal_pieces, _as_is)
        if not exact or reading.reader.count != local.size:
            raise ProtocolError(f"{local.path} changed while it was being sent", name=local.path)
        checksum = checksum_read(local, source, trusted, self.checksum, reading.hasher)
        self.step(f"payload uploaded {local.path}")
        return checksum

    def _payload_spool(self, size: int) -> BinaryIO:
        """Where a payload of a ``size``-byte file is sealed before its
        upload: memory up to :data:`SPOOL_IN_MEMORY` (at most ``transfers + 1``
        payloads are staged at once, so this stays bounded), else a nameless
        file in the spool folder."""
        if size <= SPOOL_IN_MEMORY:
            return io.BytesIO()
        return cast(BinaryIO, tempfile.TemporaryFile(dir=self.spool_dir))

    def _seal_into(self, payload: str, local: LocalVersion, source: BinaryIO,
                   spool: BinaryIO) -> tuple[int, str | None]:
        """Seal ``source`` (``local``'s content) as ``payload`` into ``spool``;
        returns its stored size and the content's checksum. ProtocolError when
        ``source`` is not ``local.size`` long, or was written to while it was
        read under the scan's checksum (it changed meanwhile). Touches no
        shared state.

        The content is read once: when ``source`` is the file the scan hashed,
        unchanged (:func:`~escale.protocol.identity.trusted_checksum` before
        the first read, :func:`~escale.protocol.identity.same_file` after the
        last), ``local.checksum`` is the checksum and nothing is hashed here;
        otherwise what is read is hashed, and that hash is the checksum."""
        trusted = trusted_checksum(local, source, self.checksum)
        hasher = hashlib.new(self.checksum) if self.checksum and trusted is None else None
        reader = HashingReader(source, hasher)
        self.sealer.seal_stream(payload, cast(BinaryIO, reader), cast(BinaryIO, _LocalSpool(spool, local.path)))
        if reader.count != local.size:
            raise ProtocolError(f"{local.path} changed while it was being sent", name=local.path)
        return spool.tell(), checksum_read(local, source, trusted, self.checksum, hasher)

    def _staged_placeholder(self, lease: Lease, state: RelayState, local: LocalVersion, key: str, version: int,
                            payload: str, checksum: str | None) -> Placeholder:
        return Placeholder(
            path=local.path, key=key, version=version, generation=lease.generation, kind="file",
            pusher=self.client_id, pusher_label=self.pusher_label, size=local.size,
            mtime_ns=local.mtime_ns, checksum=checksum, payload=payload,
            receivers=self._receivers_now(state), puller_count=self.puller_count,
        )

    def seals_apart(self, size: int) -> bool:
        """Whether the payload of a ``size``-byte file may be sealed on
        another thread (:meth:`reserve_stage`, then :meth:`seal_reserved` or
        :meth:`send_reserved`) rather than by :meth:`stage_file`: when
        payloads are pushed apart, and either no ``disk quota`` is set or the
        payload is sealed while sent (:meth:`seals_while_sent`: its sealed
        size is known beforehand, so :meth:`reserve_stage` checks the quota
        on the pass's thread; any other payload's is known once sealed)."""
        return self.pushes_apart() and (self.disk_quota is None or self.seals_while_sent(size))

    def reserve_stage(self, lease: Lease, state: RelayState, local: LocalVersion) -> StagedPayload:
        """:meth:`stage_file` without the sealing, on the pass's thread (only
        where :meth:`seals_apart`): number ``local``'s next version, mark the
        relay as being changed, and return a staged payload whose spool is
        still empty and whose placeholder has no checksum yet.
        :meth:`seal_reserved` completes it (or, for a file that
        :meth:`seals_while_sent`, :meth:`send_reserved`, which also uploads
        it: its spool is then in memory and stays empty); the caller closes it, and calls
        :meth:`release_staged` if it is never uploaded.

        With a ``disk quota`` (then the file :meth:`seals_while_sent`), its
        sealed size is checked against the quota first, as :meth:`stage_file`
        checks it (RelayQuotaExceeded, nothing reserved), then reserved in
        ``state.payloads`` (so that payloads staged and not yet uploaded count
        against the quota) and given as the stored size; otherwise the stored
        size is 0 until sealed."""
        key = self.sealer.object_key(local.path)
        version = state.next_version(key, local.path)
        payload = layout.data_name(key, version)
        stored = 0
        if self.disk_quota is not None:
            assert self.seals_while_sent(local.size)
            stored = self._sealed_size(local.size)
            self._check_quota(state, stored, local.path)
        self._touch(lease)
        if self.disk_quota is not None:
            state.payloads[payload] = stored
        # sealed while sent (send_reserved): its spool stays empty
        spool = io.BytesIO() if self.seals_while_sent(local.size) else self._payload_spool(local.size)
        placeholder = self._staged_placeholder(lease, state, local, key, version, payload, None)
        return StagedPayload(placeholder, spool, stored)

    def seal_reserved(self, reserved: StagedPayload, local: LocalVersion, source: BinaryIO) -> StagedPayload:
        """Seal ``source`` (``local``'s content, opened and checked by the
        caller) into ``reserved``'s spool: the staged payload
        :meth:`stage_file` would have returned (same spool, with its checksum
        and stored size). Raises ProtocolError when ``source`` changed
        meanwhile, DiskFull or LocalError when the spool cannot be written.
        Touches no shared state: safe from a worker thread. The caller records
        the stored size with :meth:`commit_staged` (which does it)."""
        assert reserved.placeholder.payload is not None
        stored, checksum = self._seal_into(reserved.placeholder.payload, local, source, reserved.spool)
        reserved.spool.seek(0)
        return StagedPayload(replace(reserved.placeholder, checksum=checksum), reserved.spool, stored)

    def upload_staged(self, lease: Lease, staged: StagedPayload, relay: Relay | None = None) -> None:
        """The second step: upload a staged payload through ``relay``
        (another connection to this repository's relay; default: this
        one's), once the lease is checked. A payload of up to
        :data:`FRESH_PUT_IN_MEMORY` sealed bytes goes straight under its
        fresh name (:meth:`Relay.put_fresh`: nothing reads it before its
        placeholder is committed), a bigger one by an atomic put from its
        spool file. Raises LeaseLost, relay errors (what was stored is then
        an orphan, which :meth:`collect_garbage` removes). Touches no shared
        state: safe from a worker thread with its own ``relay``."""
        assert staged.placeholder.payload is not None
        staged.spool.seek(0)
        lease.check()
        if staged.stored <= FRESH_PUT_IN_MEMORY:
            (relay or self.relay).put_fresh([(staged.placeholder.payload, staged.spool.read())])
        else:
            (relay or self.relay).put(staged.placeholder.payload, staged.spool)
        self.step(f"payload uploaded {staged.placeholder.path}")

    def uploads_in_groups(self, size: int) -> bool:
        """Whether the payload of a ``size``-byte file may go up in a group
        (:meth:`upload_staged_group`): it is sealed in memory
        (:data:`SPOOL_IN_MEMORY`) and the relay declares a group put cheap."""
        return size <= SPOOL_IN_MEMORY and self.relay.capabilities.group_put

    def upload_staged_group(self, lease: Lease, staged: Sequence[StagedPayload], relay: Relay) -> None:
        """:meth:`upload_staged` for several payloads of files accepted by
        :meth:`uploads_in_groups`, in one :meth:`Relay.put_fresh` through
        ``relay`` once the lease is checked. A payload's name is fresh (its
        random part is never reused, and nothing reads it before its
        placeholder is committed), so a name that already holds an object can
        only hold this group's own earlier attempt (a retried group) or an
        object planted by someone else: either way it is replaced. Raises
        LeaseLost, relay errors (any of the payloads may then be stored, whole
        or in part: orphans, which :meth:`collect_garbage` removes). Touches
        no shared state: safe from a worker thread with its own ``relay``."""
        items: list[tuple[str, bytes]] = []
        for one in staged:
            assert one.placeholder.payload is not None
            one.spool.seek(0)
            items.append((one.placeholder.payload, one.spool.read()))
        lease.check()
        relay.put_fresh(items)
        for one in staged:
            self.step(f"payload uploaded {one.placeholder.path}")

    def release_staged(self, state: RelayState, staged: StagedPayload) -> None:
        """Give back the room :meth:`stage_file` reserved for a payload that
        was not uploaded (if a failed upload stored it all the same, it is an
        orphan: :meth:`collect_garbage` of a later pass removes it)."""
        assert staged.placeholder.payload is not None
        state.payloads.pop(staged.placeholder.payload, None)

    def commit_staged(self, lease: Lease, state: RelayState, staged: StagedPayload) -> Placeholder:
        """The last step, on this thread, once :meth:`upload_staged` returned:
        commit the placeholder (exclusive, fenced by the lease before and
        after) and retire the superseded version. Raises as :meth:`commit_file`."""
        assert staged.placeholder.payload is not None
        state.payloads[staged.placeholder.payload] = staged.stored  # already there unless sealed apart
        self._commit(lease, state, staged.placeholder)
        return staged.placeholder

    def commit_tombstone(self, lease: Lease, state: RelayState, path: str, *,
                         deliberate: bool = False) -> Placeholder:
        """Record that ``path`` was deleted (its next version is a tombstone);
        ``deliberate``: a deletion allowed past the mass-deletion guard, which
        receivers do not hold (``Placeholder.deliberate``)."""
        key = self.sealer.object_key(path)
        placeholder = Placeholder(
            path=path, key=key, version=state.next_version(key, path), generation=lease.generation,
            kind="tombstone", pusher=self.client_id, pusher_label=self.pusher_label, size=0, mtime_ns=0,
            checksum=None, payload=None, receivers=(), puller_count=self.puller_count, deliberate=deliberate,
        )
        self._commit(lease, state, placeholder)
        return placeholder

    def _commit(self, lease: Lease, state: RelayState, placeholder: Placeholder) -> None:
        encoded = placeholder.encode()
        name, sealed = self._fence_commit(lease, placeholder, encoded)
        try:
            self.relay.put_bytes(name, sealed, exclusive=True)
        except RelayExists:
            self._check_own(name, sealed, placeholder)
        self._committed(lease, state, placeholder, name, encoded)

    def _fence_commit(self, lease: Lease, placeholder: Placeholder, encoded: bytes) -> tuple[str, bytes]:
        """Before a placeholder's exclusive put: its name and sealed bytes
        (``encoded``: ``placeholder.encode()``, made once by the caller, which
        caches the same bytes), the relay marked as being changed, the lease
        checked (LeaseLost)."""
        name = layout.meta_name(placeholder.key, placeholder.version)
        sealed = self.sealer.seal(name, encoded)
        self._touch(lease)
        lease.check()
        self.step(f"fenced {placeholder.path}")
        return name, sealed

    def _check_own(self, name: str, sealed: bytes, placeholder: Placeholder) -> None:
        """The exclusive put of ``name`` found it there: our own earlier
        attempt (retried after a dropped connection) is fine, another
        writer's version is a ProtocolError."""
        if self.relay.get_bytes(name, limit=MAX_OBJECT_BYTES) != sealed:
            raise ProtocolError(
                f"relay object {name}: version {placeholder.version} of {placeholder.path} "
                "was committed by another client", name=name,
            ) from None

    def _committed(self, lease: Lease, state: RelayState, placeholder: Placeholder, name: str,
                   encoded: bytes) -> None:
        """After a placeholder is on the relay (``encoded``: its
        ``placeholder.encode()``, cached as is): fence again, then record it
        in ``state`` and retire the version it supersedes."""
        self.meta_cache[name] = encoded
        self.step(f"placeholder committed {placeholder.path}")
        # The fence and the write are two steps: a process frozen between them
        # (SIGSTOP, suspend) or whose write lingered past the lease's expiry has
        # committed outside its lease, and the next holder may have removed its
        # payload as an orphan meanwhile. Fence again: such a commit is reported
        # (LeaseLost), not recorded as synced and retires nothing; the pusher's
        # next pass sends a version whose payload vanished again (SyncClient).
        lease.check()
        previous = state.latest.get(placeholder.path)
        state.latest[placeholder.path] = placeholder
        state.add_version(placeholder.key, placeholder.version)
        if previous is not None:
            self.retire(state, previous.key, previous.version)

    def commit_staged_group(self, lease: Lease, state: RelayState,
                            group: Sequence[StagedPayload]) -> list[Placeholder | ProtocolError]:
        """:meth:`commit_staged` for several uploaded payloads at once, in
        order: their placeholders go up in one :meth:`Relay.put_commits` (on
        a local folder, one durability barrier for the group instead of one
        per file). Each item's outcome is its placeholder, or the
        ProtocolError :meth:`commit_staged` would have raised for it (another
        writer committed that version). Raises LeaseLost (before the group:
        nothing committed; after it: the group may be on the relay, and is
        not recorded here), relay errors (any of the group may be on
        the relay, unrecorded: the next pass finds those versions as it would
        after a crash between a commit and its record)."""
        fenced = []
        encodings = []  # each placeholder encoded once: sealed for the relay, cached as is
        for staged in group:
            assert staged.placeholder.payload is not None
            state.payloads[staged.placeholder.payload] = staged.stored  # already there unless sealed apart
            encodings.append(staged.placeholder.encode())
            fenced.append(self._fence_commit(lease, staged.placeholder, encodings[-1]))
        created = self.relay.put_commits(fenced)
        lease.check()  # the second fence, for the whole group before any of it is recorded
        outcomes: list[Placeholder | ProtocolError] = []
        for staged, (name, sealed), encoded, new in zip(group, fenced, encodings, created, strict=True):
            try:
                if not new:
                    self._check_own(name, sealed, staged.placeholder)
            except ProtocolError as exc:
                outcomes.append(exc)
                continue
            self._committed(lease, state, staged.placeholder, name, encoded)
            outcomes.append(staged.placeholder)
        return outcomes

    def retire(self, state: RelayState, key: str, version: int) -> None:
        """Remove a superseded version: placeholder, then payload, then acks."""
        name = layout.meta_name(key, version)
        self._delete_quietly(name)
        self.meta_cache.pop(name, None)
        self.step(f"retired placeholder {key[:8]}.{version}")
        state.remove_version(key, version)
        prefix = f"{layout.DATA}/{key}.{version:010d}."
        for payload in [p for p in state.payloads if p.startswith(prefix)]:
            self._delete_quietly(payload)
            state.payloads.pop(payload, None)
            self.step(f"retired payload {key[:8]}.{version}")
        for ack in state.ack_names_of(key, version):
            self._delete_quietly(ack)
            self.step(f"retired acknowledgement {key[:8]}.{version}")
        state.forget_acks(key, version)

    def _delete_quietly(self, name: str) -> None:
        try:
            self.relay.delete(name)
        except RelayNotFound:
            pass

    # ----------------------------------------------------------- maintenance

    def reclaim(self, lease: Lease, state: RelayState) -> list[str]:
        """Delete the payloads every expected receiver acknowledged; the
        path of each version whose content went (its version is logged).

        Acknowledgements are opened and checked before they count, so a forged
        one (wrong key, wrong version) never reclaims anything.
        """
        done: list[str] = []
        latest = state.latest
        group: list[tuple[str, Placeholder]] = []
        for path in list(latest):  # (the paths alone: a pointer each)
            stored = dict.__getitem__(latest, path)
            if not state.stored_has_payload(stored):
                continue
            placeholder = placeholder_of(latest, stored)
            if self.reclaimable(placeholder, state):
                group.append((path, placeholder))
            if len(group) >= RECLAIM_GROUP:
                self._reclaim_group(lease, state, group, done)
                group = []
        self._reclaim_group(lease, state, group, done)
        return done

    def _reclaim_group(self, lease: Lease, state: RelayState, group: Sequence[tuple[str, Placeholder]],
                       done: list[str]) -> None:
        """Delete the payload of each version of ``group`` (reclaimable ones,
        with the key of ``latest`` each is found under) whose acknowledgements
        are authentic, read for the whole group at once; append each one's
        path to ``done``.

        The payloads go with :meth:`Relay.delete_many`, the whole group after
        one check of the lease where the relay deletes groups cheaply
        (``capabilities.group_delete``: a few round trips, well within the
        two thirds of the lease's timeout that a check leaves), else one at a
        time, each after its own check. A payload already gone counts as
        reclaimed; any other refusal is raised once the rest of its group is
        recorded (the next pass tries it again)."""
        if not group:
            return
        authentic = self._acks_authentic_many([placeholder for _, placeholder in group], state)
        chosen = [(path, placeholder) for (path, placeholder), ok in zip(group, authentic, strict=True) if ok]
        per_check = RECLAIM_GROUP if self.relay.capabilities.group_delete else 1
        for start in range(0, len(chosen), per_check):
            part = chosen[start:start + per_check]
            self._touch(lease)
            lease.check()
            outcomes = self.relay.delete_many([cast(str, placeholder.payload) for _, placeholder in part])
            refused: EscaleError | None = None
            for (path, placeholder), outcome in zip(part, outcomes, strict=True):
                if outcome is not None and not isinstance(outcome, RelayNotFound):
                    refused = refused or outcome
                    continue
                state.payloads.pop(cast(str, placeholder.payload), None)
                state.reclaimed.add(path)
                self.step(f"reclaimed payload {placeholder.path}")
                done.append(path)  # (the key of ``latest``: a string held anyway)
                log.info("reclaimed %s (version %d) from the relay", placeholder.path, placeholder.version)
            if refused is not None:
                raise refused

    def delivered(self, placeholder: Placeholder, state: RelayState) -> bool:
        """Whether every expected receiver has this version (as
        :meth:`reclaimable` counts), each acknowledgement opened and checked
        (:meth:`acks_authentic`): a forged one never makes a file delivered.
        Raises EscaleError when an acknowledgement cannot be read now.

        A version whose payload :meth:`reclaim` deleted on this reading of
        the relay (its path in ``state.reclaimed``, its payload gone from
        ``state``) passed these very checks then: it is delivered, and its
        acknowledgements are not read a second time."""
        if placeholder.path in state.reclaimed and placeholder.payload is not None \
                and placeholder.payload not in state.payloads:
            return True
        return self.reclaimable(placeholder, state) and self.acks_authentic(placeholder, state)

    def acks_authentic(self, placeholder: Placeholder, state: RelayState) -> bool:
        """Whether every acknowledgement listed for ``placeholder`` opens and
        names it (a forged one is dropped from ``state`` and logged); reads
        each acknowledgement object once."""
        return self._acks_authentic_many([placeholder], state)[0]

    def _acks_authentic_many(self, placeholders: Sequence[Placeholder], state: RelayState) -> list[bool]:
        """:meth:`acks_authentic` of each of ``placeholders``, their
        acknowledgements read with one :meth:`Relay.get_many` (a few round
        trips where the relay reads groups cheaply). A missing, oversized,
        unopenable or undecodable acknowledgement is dropped from ``state``
        and logged, and its version is not authentic; one that names another
        version or client is logged, and its version is not authentic.
        Raises what reading the group raises (a failed connection), and a
        refusal of one acknowledgement by the server other than its absence
        or its size (as one read would raise it)."""
        asked: list[list[str]] = [sorted(state.acks_of(p)) for p in placeholders]
        names = [layout.ack_name(p.key, p.version, client)
                 for p, clients in zip(placeholders, asked, strict=True) for client in clients]
        outcomes = iter(self.relay.get_many(names, limit=MAX_OBJECT_BYTES) if names else [])
        verdicts: list[bool] = []
        for placeholder, clients in zip(placeholders, asked, strict=True):
            mine = [next(outcomes) for _ in clients]  # this version's answers, in its clients' order
            verdicts.append(self._acks_match(placeholder, state, clients, mine))
        return verdicts

    def _acks_match(self, placeholder: Placeholder, state: RelayState, clients: list[str],
                    stored: list[bytes | EscaleError]) -> bool:
        """Whether each of ``placeholder``'s acknowledgements (by ``clients``,
        as ``stored`` on the relay) opens and names it; see
        :meth:`_acks_authentic_many`."""
        for client, data in zip(clients, stored, strict=True):
            name = layout.ack_name(placeholder.key, placeholder.version, client)
            try:
                if isinstance(data, EscaleError):
                    raise data
                ack = Ack.decode(self.sealer.open(name, data), name)
            except (RelayNotFound, ProtocolError, CryptoError) as exc:
                log.warning("ignoring acknowledgement %s: %s", name, exc)
                state.drop_ack(placeholder.key, placeholder.version, client)
                return False
            if (ack.key, ack.version) != (placeholder.key, placeholder.version) or ack.client != client:
                log.warning("ignoring acknowledgement %s: it does not match its name", name)
                return False
        return True

    def collect_garbage(self, lease: Lease, state: RelayState, *,
                        temporary_age: float = STALE_TEMPORARY_AGE) -> int:
        """Remove leftovers of interrupted operations; return how many objects.

        Under the lease nobody else commits, so a payload that no placeholder
        references is an orphan of a crashed push, and versions older than a
        path's latest readable version are leftovers of an interrupted retire
        (versions that do not open are reported by :meth:`read_state` and left
        alone; a later genuine commit goes above them and retires them).

        Temporaries (``.escale-tmp-*``, seen by :meth:`read_state` in
        ``clients/``, ``data/``, ``acks/`` and ``meta/``) are removed once
        stale, see :meth:`stale_temporaries`.
        """
        removed = 0
        unreferenced = state.unreferenced_payloads()
        for key, version in state.superseded():
            self._touch(lease)
            lease.check()
            self.retire(state, key, version)
            removed += 1
        for payload in [p for p in state.payloads if p in unreferenced]:
            if layout.parse_data(payload) is not None:
                self._touch(lease)
                lease.check()
                self._delete_quietly(payload)
                state.payloads.pop(payload, None)
                self.step("removed orphan payload")
                removed += 1
        # acknowledgements of a version other than its key's latest readable one: only a
        # key listed with another version than the acknowledged one can have them, and the
        # latest versions of those keys alone are collected (no dict of every key)
        others = [pair for pair in state.ack_pairs() if state.versions.get(pair[0]) != pair[1]]
        wanted = {key for key, _ in others}
        top = {p.key: p.version for p in (cast(Placeholder, s) for s in raw_values(state.latest))
               if p.key in wanted} if wanted else {}
        for pair in others:
            if top.get(pair[0], pair[1]) != pair[1]:  # a key of ``latest``, another version
                for name in state.ack_names_of(*pair):
                    self._delete_quietly(name)
                    removed += 1
                state.forget_acks(*pair)
        for entry in self.stale_temporaries(state, temporary_age):
            self._touch(lease)
            lease.check()
            try:
                self.relay.delete_temporary(entry.name)
            except RelayNotFound:
                pass
            state.temporaries.pop(entry.name, None)
            self.meta_cache.pop(_TEMP_SEEN + entry.name, None)
            self.step("removed stale temporary")
            log.info("removed stale temporary %s (%d bytes) from the relay", entry.name, entry.size)
            removed += 1
        if removed:
            log.info("removed %d leftover objects from the relay", removed)
        return removed

    def stale_temporaries(self, state: RelayState, age: float = STALE_TEMPORARY_AGE) -> list[Entry]:
        """The temporaries of ``state`` that no upload can still be writing.

        Only the lease holder uploads payloads and placeholders; other clients
        write acknowledgements and registrations (small, written in a moment).
        A temporary is stale once it is older than ``age`` seconds: by its
        relay mtime against this machine's clock when the relay reports one,
        else since this client first saw it with the same size (remembered in
        ``meta_cache`` across passes). ``age`` is far above any lease timeout,
        so an upload of a previous holder whose lease expired while it still
        wrote is over (or doomed: it can no longer commit) by then. Removing a
        temporary that is still being written only makes that one put fail;
        nothing refers to a temporary, so no data is ever lost by it.
        """
        now = time.time()
        stale = []
        for entry in state.temporaries.values():
            if entry.mtime is not None:
                if now - entry.mtime > age:
                    stale.append(entry)
                continue
            key = _TEMP_SEEN + entry.name
            seen = self.meta_cache.get(key, b"").decode("ascii", "replace").split()
            if len(seen) == 2 and seen[0] == str(entry.size):
                try:
                    first = float(seen[1])
                except ValueError:
                    first = now
                if now - first > age:
                    stale.append(entry)
                continue
            self.meta_cache[key] = f"{entry.size} {now}".encode("ascii")
        for key in _cache_keys(self.meta_cache, _TEMP_SEEN):
            if key[len(_TEMP_SEEN):] not in state.temporaries:
                del self.meta_cache[key]
        return stale


class _LocalSpool:
    """A spool file whose write errors are reported as local ones.

    The spool lives in the state folder. A full disk there (ENOSPC, EDQUOT, or
    EFBIG under a file size limit) raises DiskFull naming the synchronised
    path; other write errors LocalError. Seeking, telling and truncating pass
    through (the retry wrapper rewinds a sink between attempts).
    """

    def __init__(self, spool: BinaryIO, path: str) -> None:
        self.spool = spool
        self.path = path

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self.spool.write(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise DiskFull(f"local disk full while transferring {self.path} (spool in the state "
                               "folder); nothing was changed", path=self.path) from exc
            raise LocalError(f"cannot write the spool file while transferring {self.path}: "
                             f"{exc.strerror or exc}", path=self.path) from exc

    def flush(self) -> None:
        self.spool.flush()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.spool.seek(offset, whence)

    def tell(self) -> int:
        return self.spool.tell()

    def truncate(self, size: int | None = None) -> int:
        return self.spool.truncate(size)


def _write_pieces(out: SpooledValue, items: Iterator[str] | Iterator[tuple[str, int]], size: int = 4096) -> None:
    """Append to ``out`` the inside of a compact JSON array (strings) or
    object (pairs) of ``items``, as one piece per ``size`` items."""
    comma = b""
    while piece := list(itertools.islice(items, size)):
        whole: object = dict(cast(list[tuple[str, int]], piece)) if isinstance(piece[0], tuple) else piece
        out.append(comma + json.dumps(whole, separators=(",", ":"))[1:-1].encode("utf-8"))
        comma = b","


def _consumed(items: list[_T]) -> Iterator[_T]:
    """Each of ``items`` in order, each taken out of the list as it is given:
    the list ends empty, and an item is freed once the caller drops it."""
    items.reverse()
    while items:
        yield items.pop()


#: how many placeholders :meth:`Repository._read_meta` looks up in the cache at once
_CACHE_LOOKUPS = 900


def _cached_values(cache: MutableMapping[str, bytes], names: Sequence[str]) -> dict[str, bytes]:
    """What ``cache`` holds for each of ``names`` (absent: nothing): in few
    queries when ``cache`` is the state database's table, else one lookup
    each."""
    many = getattr(cache, "values_of", None)
    if many is not None:
        return cast(dict[str, bytes], many(names))
    return {name: value for name in names if (value := cache.get(name)) is not None}


def _cache_keys(cache: MutableMapping[str, bytes], prefix: str,
                wanted: Callable[[str], bool] = lambda name: True) -> list[str]:
    """The keys of ``cache`` that start with ``prefix`` and that ``wanted``
    takes: streamed from the state database's table when ``cache`` is one
    (no list of every key in memory), else from iterating ``cache``."""
    stream = getattr(cache, "keys_with_prefix", None)
    keys: Iterable[str] = stream(prefix) if stream is not None else (k for k in cache if k.startswith(prefix))
    return [k for k in keys if wanted(k)]


def _listed(state: RelayState, name: str) -> bool:
    """Whether placeholder ``name`` is among ``state.versions`` (as listed)."""
    ref = layout.parse_meta(name)
    return ref is not None and ref.version in state.versions_of(ref.key)


def _move_state(source: RelayState, target: RelayState) -> None:
    """Make ``target`` hold what ``source`` holds (its own containers, not copies)."""
    for item in fields(RelayState):
        setattr(target, item.name, getattr(source, item.name))


def _placeholder_stamp(identity: str, marker: tuple[int, str]) -> str:
    """The placeholder layout's hand-over stamp for a clean change marker
    (counter, token) of repository ``identity``."""
    return f"placeholder {identity or '-'} {marker[0]} {marker[1]}"


def _int_or_zero(data: bytes | None) -> int:
    try:
        return int(data) if data else 0
    except ValueError:
        return 0


def _cached_placeholder(data: bytes) -> Placeholder:
    """A placeholder from ``meta_cache``: it was checked whole (or written by
    this client) before it was cached, so only its JSON is parsed here; its
    strings shared as :func:`_shared_strings` shares them. Raises ValueError,
    KeyError or TypeError when the bytes do not fit."""
    doc = json.loads(data)
    if doc.pop("format") != 1 or doc.pop("type") != "placeholder":
        raise ValueError("not a cached placeholder")
    # shared strings, as _shared_strings makes them, without a second object
    for name in ("path", "key", "pusher", "pusher_label"):
        if (value := doc[name]) is not None:
            doc[name] = sys.intern(value)
    doc["receivers"] = _receiver_list(tuple(doc["receivers"]))
    return Placeholder(**doc)


#: receiver lists seen in placeholders, each one tuple (a handful per
#: repository; emptied when it grows past a bound, it is only a saving)
_RECEIVER_LISTS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared_strings(placeholder: Placeholder) -> Placeholder:
    """``placeholder`` with its strings shared: client ids, labels and receiver
    lists repeat across placeholders; the path and key are also held by the
    scan, the base, the versions listed and seen. One string each in memory
    (interned), one tuple per receiver list. The checksum and payload name
    are not interned: the scan and the base hold checksums packed
    (:mod:`escale.sync.records`) and packed placeholders hold no payload
    name (:mod:`escale.protocol.packed`), so the interpreter's table would
    only add a slot per file. Equal values: the placeholder is the same."""
    return replace(placeholder, path=sys.intern(placeholder.path), key=sys.intern(placeholder.key),
                   pusher=sys.intern(placeholder.pusher), pusher_label=sys.intern(placeholder.pusher_label),
                   receivers=_receiver_list(placeholder.receivers))


def _receiver_list(receivers: tuple[str, ...]) -> tuple[str, ...]:
    """The one shared tuple equal to ``receivers`` (client ids interned)."""
    shared = _RECEIVER_LISTS.get(receivers)
    if shared is None:
        if len(_RECEIVER_LISTS) >= 1024:
            _RECEIVER_LISTS.clear()
        shared = _RECEIVER_LISTS[receivers] = tuple(sys.intern(r) for r in receivers)
    return shared


def _no_step(name: str) -> None:
    """The default ``on_step`` hook: nothing."""


def _verified(placeholder: Placeholder, size: int, hasher: hashlib._Hash | None, algorithm: str | None) -> str | None:
    """Check what was opened of ``placeholder``'s payload (``size`` plaintext
    bytes, hashed by ``hasher`` with ``algorithm``) against the placeholder:
    its checksum (None without one), or IntegrityError."""
    if size != placeholder.size:
        raise IntegrityError(
            f"relay object {placeholder.payload}: size {size} differs from "
            f"placeholder ({placeholder.size}) for {placeholder.path}"
        )
    if hasher is not None and placeholder.checksum:
        got = f"{algorithm}:{hasher.hexdigest()}"
        if got != placeholder.checksum:
            raise IntegrityError(
                f"relay object {placeholder.payload}: checksum mismatch for {placeholder.path}"
            )
        return got
    return None


def _as_is(reader: HashingReader) -> HashingReader:
    """What a payload seals: the file as read (no layer)."""
    return reader
