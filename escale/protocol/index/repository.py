"""The index-layout repository: many small files in a handful of relay requests.

:class:`IndexRepository` offers the interface the sync layer uses on the
placeholder layout's :class:`~escale.protocol.repository.Repository` (it is a
subclass: registration, receivers and temporaries are shared), over the
objects of :mod:`escale.protocol.index.objects`:

* Reading (:meth:`read_state`) lists ``clients/`` (registrations and
  acknowledgement records) and ``index/``, and fetches only the index deltas
  above the generation this client materialised in its state database (or the
  latest checkpoint, then the deltas after it). With nothing new that is two
  listings, whatever the number of files. The materialised index is kept
  with a SHA-256 digest of its encoded form: while the digest matches it is
  decoded without the field checks (run when its content came from the
  relay); otherwise with every check, and read again from the relay if it
  fails them.
* Pushing is buffered: :meth:`commit_file` packs small files into the pending
  archive page (big files are uploaded at once as their own objects; or, on
  several connections, ahead of their entry: :meth:`reserve_big`,
  :meth:`upload_big` on a worker, :meth:`commit_big`) and returns the
  planned placeholder; :meth:`commit_pending` uploads the page,
  then commits one index delta naming it, then runs the callbacks registered
  by :meth:`when_committed` (the sync layer records its bases there). A full
  page is committed on its own before the next file is packed.
* Acknowledgements are buffered too: :meth:`flush_acks` rewrites this
  client's one acknowledgement record.

Write order, and what a crash at each point leaves: content objects (page,
big objects) before the delta that names them (a crash leaves orphans, which
the next lease holder's :meth:`collect_garbage` removes); a delta that drops
objects (reclaim, clean-up, compaction) before their deletion (a crash leaves
unreferenced objects, removed likewise). A version is visible only once its
delta is on the relay, and then its content is there.

Knowledge only moves forward: the highest index generation seen is kept in
the state database; a relay listing a lower one, or missing a delta between
the materialised generation (or a checkpoint) and the head, is a rollback:
:meth:`read_state` raises ProtocolError and nothing is applied.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, BinaryIO, Protocol, TypeVar, cast, runtime_checkable

from escale.errors import (
    CryptoError,
    EscaleError,
    IntegrityError,
    ObjectTooLarge,
    ProtocolError,
    RelayExists,
    RelayNotFound,
    RelayQuotaExceeded,
)
from escale.protocol import spooled
from escale.protocol.identity import checksum_read, trusted_checksum
from escale.protocol.index import local_copy
from escale.protocol.index import objects as io
from escale.protocol.index.acked import Acknowledged
from escale.protocol.index.objects import (
    AckRecord,
    Checkpoint,
    IndexDelta,
    IndexEntry,
    Location,
    PackedIndex,
    StoredEntry,
    pack,
)
from escale.protocol.index.pages import (
    CHUNK,
    DeflatingReader,
    InflatingWriter,
    OpenedPage,
    PageWriter,
    compress_member,
    inflate_to,
    open_page,
)
from escale.protocol.index.state import IndexRelayState
from escale.protocol.layout import CLIENTS, parse_client
from escale.protocol.lease import Lease
from escale.protocol.objects import MAX_OBJECT_BYTES, ClientRecord, Placeholder, checksum_problem
from escale.protocol.repository import (
    STALE_TEMPORARY_AGE,
    BigReservation,
    BigUpload,
    LatestMap,
    LocalVersion,
    RelayState,
    Repository,
    _LocalSpool,
    _move_state,
)
from escale.protocol.sealer import Sealer
from escale.protocol.spooled import SpooledValue
from escale.protocol.streams import (
    HashingReader,
    HashingWriter,
    Reading,
    receive_opening,
    received_bound,
    sealing_parts,
    send_sealing,
    start_of,
)
from escale.relay import Entry, Relay

log = logging.getLogger(__name__)

#: A record decoded by :meth:`IndexRepository._open_cached`.
_Record = TypeVar("_Record")

#: Files up to this size share pages; bigger ones are objects of their own.
#: Also bounds the memory one file takes while packed or unpacked.
MAX_SMALL_FILE = 16 * 1024 * 1024
#: A checkpoint is written once this many deltas were committed since the last.
CHECKPOINT_EVERY = 64
#: A page is compacted when more than half of it is dead and at least this much.
COMPACT_MIN_DEAD = 256 * 1024
#: The largest checkpoint written (decoded): what every reader accepts.
CHECKPOINT_LIMIT = io.MAX_INDEX_BYTES
#: Bound of the decoded copy of the index kept in the state database: this
#: client's own data, with a digest, so the relay's bound does not apply (the
#: copy of an index too big for a checkpoint is still kept and read).
LOCAL_COPY_LIMIT = 16 * 1024 * 1024 * 1024
#: Opened pages kept per pass (in spool files) while receiving.
OPEN_PAGES = 2
#: Sealing overhead allowance for the quota check of a pending page.
SEAL_SLACK = 1.04
#: A delta is committed (with the page so far) before the decoded size of its
#: document could pass this bound (an estimate per entry, from above), far
#: below :data:`~escale.protocol.index.objects.MAX_INDEX_BYTES`: a push of a
#: million small files becomes several deltas every reader accepts.
DELTA_BUDGET = 64 * 1024 * 1024
#: A delta is also committed (with the page so far) once it holds this many
#: versions: what a push keeps per version until its commit (the packed entry,
#: the pushed file's key and checksum, what records it afterwards) is bounded
#: by this, not by the number of files pushed. 10,000 small files are 2
#: deltas and 2 pages.
DELTA_ENTRIES = 8192
#: ``pages/`` and ``big/`` are listed for orphans (content no generation names,
#: left by any client's interrupted push) when this many generations were
#: committed since the last such listing, and whenever this client has
#: unsettled objects of its own: not at every pass.
SWEEP_EVERY = 16

_MATERIALISED = "index@materialised"
_KNOWN = "index@known"
_MY_ACK = "index@my-ack"
_MY_ACK_SEQUENCE = "index@my-ack-sequence"
#: "<identity> <head>": the index at which this client, with no record yet,
#: found nothing for one to acknowledge
_SILENT_AT = "index@silent-at"
#: content objects this client uploaded or dropped and may have left behind
#: (a crash between the upload and its delta, or between a drop and the
#: deletion): they make clean-up due until a listing shows them gone
_UNSETTLED = "index@unsettled"
#: the generation at which this client last listed pages/ and big/
_SWEPT = "index@swept"
_ACK_CACHE = "index-ack@"
#: the local journal: the deltas applied since the local copy was written
#: whole, one key each (this prefix, then the generation in 12 digits); each
#: value is the SHA-256 (hex) of the copy it follows, a newline, then the
#: encoded delta in :func:`_sealed_copy`'s form (its own digest line first)
_JOURNAL = "index@journal:"
#: the local copy is written whole again once the journal would hold more
#: deltas than this, or more entries than the larger of
#: :data:`JOURNAL_MIN_ENTRIES` and the index's size over :data:`JOURNAL_SHARE`
JOURNAL_DELTAS = 32
JOURNAL_MIN_ENTRIES = 1024
JOURNAL_SHARE = 8
#: the start of the materialised index kept in the state database (then the
#: SHA-256 of the encoded checkpoint in hex, a newline, the checkpoint)
_COPY_MAGIC = b"escale-index-copy-1 sha256:"
#: the first line of the local copy in its packed form (:mod:`escale.protocol.index.local_copy`)
_PACKED_MAGIC = b"escale-index-copy-2 sha256:"


class IndexRepository(Repository):
    """One client's view of one relay repository in the index layout."""

    layout_name = "index"

    def __init__(self, relay: Relay, sealer: Sealer, *, maxpagesize: int = 1_000_000_000, **kwargs: Any) -> None:
        """As :class:`Repository`; ``maxpagesize`` bounds a page's plaintext."""
        super().__init__(relay, sealer, **kwargs)
        self.maxpagesize = max(64 * 1024, maxpagesize)
        self.big_threshold = min(MAX_SMALL_FILE, self.maxpagesize // 4)
        #: the materialised index, path to entry (kept packed: see :class:`PackedIndex`)
        self.entries: PackedIndex = PackedIndex()
        self.objects: dict[str, int] = {}
        self.head = 0
        self._loaded = False
        #: the SHA-256 (hex) of the local copy written whole, which every
        #: journal entry names (None: no copy, or one not written by this code)
        self._copy_digest: bytes | None = None
        #: the generation of that copy, the generations journaled after it,
        #: and how many entries and dropped objects they hold together
        self._copy_head = 0
        #: commits under the lease moved the index past the copy and its
        #: journal: the copy is written whole once, by :meth:`finish_changes`
        self._copy_stale = False
        self._journal: list[int] = []
        self._journal_size = 0
        self._records: dict[str, AckRecord] = {}
        self._my_ack: AckRecord | None = None
        self._ack_dirty = False
        self._my_sequence = 0
        #: this client's record names listed by the last read (older ones are deleted after a rewrite)
        self._my_listed: list[tuple[int, str]] = []
        #: versions this client is done with, not yet in its record: the index's
        #: own stored entry when it is the version acknowledged (a reference, no
        #: string or pair made per file), else the (key, version) pair
        self._acked_now = Acknowledged()
        self._page: PageWriter | None = None
        #: the entries packed and not yet committed, as the delta will record
        #: them (the page's name is chosen when the page is opened; see
        #: :meth:`commit_pending`), each in its compact form where it has one,
        #: with its path and key (the strings the placeholder returned for it
        #: holds, which the index and the relay state then key on)
        self._pending: list[tuple[str, str, StoredEntry]] = []
        #: the name the pending page will have, and the generation it was named for
        self._page_name = ""
        self._page_generation = 0
        #: the highest version packed so far per path key (the next is above it)
        self._pending_top: dict[str, int] = {}
        self._pending_big: dict[str, int] = {}
        #: versions given to big files uploading on other connections, per path key
        #: (:meth:`reserve_big`; the next version of that key is above it)
        self._reserved_top: dict[str, int] = {}
        #: an upper estimate of the pending delta's decoded document, bytes
        self._pending_doc = 0
        self._callbacks: list[Callable[[], None]] = []
        self._open_pages: dict[str, OpenedPage] = {}
        self._bad_pages: dict[str, EscaleError] = {}
        self._reclaim_cache: tuple[RelayState, int, set[str]] | None = None
        self._checkpoints: set[int] = set()
        self._deltas: set[int] = set()
        self._told_too_big = False
        #: listings made by :meth:`quiet_probe` for the next :meth:`read_state`
        #: (folder: its files, and the temporaries listed with them)
        self._prelisted: dict[str, tuple[list[Entry], list[Entry]]] = {}
        #: the objects the placeholders of the last filled relay state name (see _fill)
        self._present: set[str] = set()
        self._filled: LatestMap | None = None

    # ----------------------------------------------------------- setup

    def prepare(self) -> None:
        """Nothing to do: the layout's folders are not made ahead. Each
        appears with its first object (every backend's put makes the
        folders it needs) and every reader takes a missing folder as an
        empty one, so a client spends no request on folders."""

    def finish_changes(self, lease: Lease) -> None:
        """As :meth:`Repository.finish_changes`; also writes the local copy
        of the index whole when this lease's commits left it stale (see
        :meth:`_persist`)."""
        super().finish_changes(lease)
        if self._copy_stale:
            self._persist()

    def created_now(self) -> None:
        """Take ``clients/`` and ``index/`` as empty at the next
        :meth:`read_state` instead of listing them: this process has just
        created the repository, so they hold at most what other clients
        wrote in the moments since. Missing that is harmless: a
        registration read a pass later only delays what reclaim waits for
        (receivers are counted when reclaiming, not only from the entries),
        and a commit another client made since takes the lease first, so
        this client's lease shows a previous holder and the index is read
        again before any commit (:meth:`state_under_lease`)."""
        self._prelisted = {CLIENTS: ([], []), io.INDEX: ([], [])}

    # ----------------------------------------------------------- the materialised index

    def _load_materialised(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        data = self.meta_cache.get(_MATERIALISED)
        my_ack = self.meta_cache.get(_MY_ACK)
        try:
            self._my_sequence = int(self.meta_cache.get(_MY_ACK_SEQUENCE, b"0").decode("ascii"))
            if my_ack is not None and self._my_sequence > 0:
                self._my_ack = AckRecord.decode(my_ack, io.ack_record_name(self.client_id, self._my_sequence))
        except (ProtocolError, ValueError):
            self._my_ack = None
        if data is None:
            return
        what = "the local copy of the index"
        packed = _unsealed_copy(data, _PACKED_MAGIC)
        encoded = None if packed is not None else _unsealed_copy(data)
        # the entries go into the packed index as they are decoded (no list of them is made)
        entries = PackedIndex()
        try:
            if packed is not None:
                checkpoint = local_copy.read_packed_copy(packed, what, limit=LOCAL_COPY_LIMIT, into=entries)
                digest = data[len(_PACKED_MAGIC):len(_PACKED_MAGIC) + 64]
            elif encoded is not None:
                checkpoint = Checkpoint.decode_trusted(encoded, what, limit=LOCAL_COPY_LIMIT, into=entries)
                digest = data[len(_COPY_MAGIC):len(_COPY_MAGIC) + 64]
            else:
                # no digest, or one that does not match: checked field by field,
                # then kept with its digest (the next load is the quick one)
                checkpoint = Checkpoint.decode(data, what, expect_name=False, limit=LOCAL_COPY_LIMIT, into=entries)
                sealed = _sealed_copy(data)
                self.meta_cache[_MATERIALISED] = sealed
                digest = sealed[len(_COPY_MAGIC):len(_COPY_MAGIC) + 64]
        except ProtocolError as exc:
            log.warning("the local copy of the index is unreadable (%s): reading it again from the relay", exc)
            return
        self.head = self._copy_head = checkpoint.generation
        self.entries = entries
        self.objects = dict(checkpoint.objects)
        self._copy_digest = digest
        self._replay_journal()

    def _journal_items(self) -> Iterator[tuple[str, bytes]]:
        """The journal's keys and values, in key order (generation order)."""
        cache = self.meta_cache
        if isinstance(cache, _PrefixItems):
            return cache.items_with_prefix(_JOURNAL)
        return iter(sorted((k, v) for k, v in cache.items() if k.startswith(_JOURNAL)))

    def _replay_journal(self) -> None:
        """Apply the journal's deltas that follow the local copy, in order:
        those that name this copy's digest, from the generation after it,
        without a gap. An entry that names another copy (left by a crash
        between writing a copy whole and clearing the journal) or an older
        generation is skipped; one that does not decode or apply ends the
        replay there (the relay's deltas after it are read as after any
        copy: the index is never ahead of what was applied whole)."""
        found = list(self._journal_items())  # the query ends before anything is applied
        for key, value in found:
            copy, body = value[:64], value[65:]
            generation = _journal_generation(key)
            if copy != self._copy_digest or generation is None or generation <= self.head:
                continue
            if generation != self.head + 1:
                break
            name = io.delta_name(generation)
            try:
                encoded = _unsealed_copy(body)
                if encoded is None:
                    raise ProtocolError("its digest does not match", name=name)
                delta = IndexDelta.decode(bytes(encoded), name)
                self._apply(delta)
            except ProtocolError as exc:
                log.warning("the local journal of the index is unreadable at generation %d (%s): "
                            "reading the rest from the relay", generation, exc)
                break
            self._journal.append(generation)
            self._journal_size += _delta_size(delta)

    def _persist(self, applied: Sequence[tuple[IndexDelta, bytes]] = (), *, defer: bool = False) -> None:
        """Keep the index in the state database, after ``applied`` (the
        deltas just applied, each with its encoded form, in order; none: write
        the copy whole).

        While the journal has room (:data:`JOURNAL_DELTAS`,
        :data:`JOURNAL_MIN_ENTRIES`, :data:`JOURNAL_SHARE`) and the deltas
        follow the copy and the journal without a gap, each delta is added to
        the journal (one small write each, whatever the index's size). Else,
        with ``defer`` (a commit under the lease), nothing is written but the
        highest generation known: the copy is marked stale and written whole
        once by :meth:`finish_changes`, after the lease's last commit, so a
        push of many deltas does not rewrite the growing index at each one
        (a crash before that leaves an older copy, and the next pass reads
        the deltas after it from the relay, as after any older copy). Else
        the copy is written whole (:func:`_sealed_copy`'s form: compressed
        into a spool file as it is made, then stored from there a piece at a
        time, :mod:`escale.protocol.spooled`; never held in memory), and then
        the journal is cleared: a crash
        between the two leaves entries naming the old copy's digest, which
        the next load skips."""
        if applied and not self._copy_stale and self._journal_fits(applied):
            assert self._copy_digest is not None
            for delta, encoded in applied:
                self.meta_cache[_journal_key(delta.generation)] = self._copy_digest + b"\n" + _sealed_copy(encoded)
                self._journal.append(delta.generation)
                self._journal_size += _delta_size(delta)
        elif applied and defer:
            self._copy_stale = True
        else:
            hasher = hashlib.sha256()
            # the records as they are where every entry is one, else the checkpoint's JSON
            if local_copy.packs_whole(self.entries.stored_values()):
                pieces, magic = local_copy.packed_copy_pieces(self.head, self.objects, self._in_order()), _PACKED_MAGIC
            else:
                pieces, magic = io.checkpoint_pieces(self.head, self.objects, self._in_order()), _COPY_MAGIC
            with SpooledValue(self.spool_dir) as copy:
                for chunk in io.compress_stream(pieces, io.LOCAL_LEVEL):
                    hasher.update(chunk)
                    copy.append(chunk)
                digest = hasher.hexdigest().encode("ascii")
                spooled.store(self.meta_cache, _MATERIALISED, copy, head=_copy_head(digest, magic))
            self._copy_digest, self._copy_head = digest, self.head
            for key in [k for k, _ in self._journal_items()]:
                del self.meta_cache[key]
            self._journal, self._journal_size = [], 0
            self._copy_stale = False
        if self.head > self.known:
            self.meta_cache[_KNOWN] = str(self.head).encode("ascii")

    def _journal_fits(self, applied: Sequence[tuple[IndexDelta, bytes]]) -> bool:
        """Whether ``applied`` may go to the journal (see :meth:`_persist`)."""
        if self._copy_digest is None or len(self._journal) + len(applied) > JOURNAL_DELTAS:
            return False
        last = self._journal[-1] if self._journal else self._copy_head
        if [d.generation for d, _ in applied] != list(range(last + 1, last + 1 + len(applied))):
            return False
        size = self._journal_size + sum(_delta_size(d) for d, _ in applied)
        return size <= max(JOURNAL_MIN_ENTRIES, len(self.entries) // JOURNAL_SHARE)

    def _in_order(self) -> Iterator[StoredEntry]:
        """What the index keeps per path, in path order (a checkpoint's order)."""
        entries = self.entries
        for path in sorted(entries):
            stored = entries.stored(path)
            assert stored is not None
            yield stored

    @property
    def known(self) -> int:
        """The highest index generation this client ever saw or wrote."""
        try:
            return int(self.meta_cache.get(_KNOWN, b"0").decode("ascii"))
        except ValueError:
            return 0

    def _rollback(self, top: int, what: str) -> ProtocolError:
        return ProtocolError(
            f"relay {self.relay.describe()} rolled back its index: {what} (highest generation listed {top}, "
            f"generation {max(self.known, self.head)} known here); nothing was applied. Check the relay "
            "(a restored backup or a replayed folder?); run `escalectl fix` on an up-to-date client",
            name=io.INDEX)

    def _open_index(self, name: str) -> bytes:
        try:
            return self.sealer.open(name, self.relay.get_bytes(name, limit=io.MAX_INDEX_BYTES))
        except CryptoError as exc:
            raise IntegrityError(f"relay object {name}: {exc}; nothing was applied") from exc

    def _apply(self, delta: IndexDelta, names: Sequence[tuple[str, str, StoredEntry]] | None = None) -> None:
        """Apply one delta (checked against the index first: all or nothing).
        ``names``: the delta's entries with their paths, in their order
        (``(path, key, entry)``: the path string to key the index on, a
        pusher's own, which its scan holds)."""
        name = io.delta_name(delta.generation)
        for entry in delta.entries:
            if self.sealer.object_key(entry.path) != entry.key:
                raise ProtocolError(f"relay object {name}: path does not match its key", name=name)
            current = self.entries.stored(entry.path)
            if current is not None and entry.version < current.version:
                raise ProtocolError(f"relay object {name}: records version {entry.version} of {entry.path} "
                                    f"below version {current.version}", name=name)
        entries = self.entries
        if names is None:
            for entry in delta.entries:
                entries.put(entry)
        else:
            for path, _, entry in names:
                entries.store(path, pack(entry))
        self.objects.update(delta.added)
        for dropped in delta.dropped:
            self.objects.pop(dropped, None)
        self.head = delta.generation

    def _catch_up(self, listing: list[str]) -> None:
        deltas: set[int] = set()
        checkpoints: set[int] = set()
        for name in listing:
            parsed = io.parse_index_name(name)
            if parsed is None:
                continue
            (checkpoints if parsed[1] else deltas).add(parsed[0])
        self._deltas, self._checkpoints = deltas, checkpoints
        top = max(deltas | checkpoints, default=0)
        start_head = self.head
        if top < self.known or top < self.head:
            raise self._rollback(top, "its highest generation is below the one known here")
        if top == self.head:
            return
        needed = range(self.head + 1, top + 1)
        if not all(g in deltas for g in needed):
            candidates = [c for c in checkpoints if self.head < c <= top]
            if not candidates:
                raise self._rollback(top, f"deltas after generation {self.head} are missing")
            start = max(candidates)
            name = io.checkpoint_name(start)
            fresh = PackedIndex()
            checkpoint = Checkpoint.decode(self._open_index(name), name, into=fresh)
            for path, stored in fresh.stored_items():
                if self.sealer.object_key(path) != stored.key:
                    raise ProtocolError(f"relay object {name}: path does not match its key", name=name)
            self.entries = fresh
            self.objects = dict(checkpoint.objects)
            self.head = start
            needed = range(start + 1, top + 1)
            if not all(g in deltas for g in needed):
                raise self._rollback(top, f"deltas after checkpoint {start} are missing")
        # the deltas applied are kept (encoded) for the journal while they would fit in it
        applied: list[tuple[IndexDelta, bytes]] | None = [] if self.head == start_head else None
        for generation in needed:
            name = io.delta_name(generation)
            encoded = self._open_index(name)
            delta = IndexDelta.decode(encoded, name)
            self._apply(delta)
            if applied is not None:
                applied.append((delta, encoded))
                if not self._journal_fits(applied):
                    applied = None
        self._persist(applied or ())

    # ----------------------------------------------------------- reading

    def read_state(self, *, use_marker: bool = False) -> IndexRelayState:
        """List ``clients/`` and ``index/``; read what changed since the last read
        (``use_marker`` is the placeholder layout's: the index needs no marker).

        Raises ProtocolError (rollback, malformed or refused index object) or
        IntegrityError (an index object that does not open): the index is
        applied whole or not at all, so such a pass applies nothing.
        """
        self._load_materialised()
        state = IndexRelayState(self.entries)
        self._temporaries = []
        records: dict[str, AckRecord] = {}
        newest: dict[str, tuple[int, str]] = {}
        self._my_listed = []
        for entry in self._entries(CLIENTS):
            if (parsed := io.parse_ack_record_name(entry.name)) is not None:
                client, sequence = parsed
                if client == self.client_id:
                    self._my_listed.append((sequence, entry.name))
                elif sequence > newest.get(client, (0, ""))[0]:
                    newest[client] = (sequence, entry.name)
            elif (registered := parse_client(entry.name)) is not None:
                record_c = self._read_client(entry, registered, state)
                if record_c is not None:
                    state.clients[registered] = record_c
        for client, (_, name) in newest.items():
            record = self._read_ack(name, client, state)
            if record is not None:
                records[client] = record
        mine = max(self._my_listed, default=(0, ""))
        if self._my_ack is not None and mine[0] == self._my_sequence:
            records[self.client_id] = self._my_ack  # what this client wrote: not fetched again
        elif mine[0]:
            record = self._read_ack(mine[1], self.client_id, state)
            if record is not None:
                records[self.client_id] = record
        # the record this client last wrote is missing (a relay that lost it): written again
        self._ack_dirty = self._my_ack is not None and mine[0] != self._my_sequence
        listing = [e.name for e in self._entries(io.INDEX)]
        try:
            self._catch_up(listing)
        except RelayNotFound:
            # a delta pruned between the listing and the read: list once more
            self._catch_up([e.name for e in self._entries(io.INDEX)])
        self._records = records
        state.use_index(self.entries)  # a checkpoint read to catch up replaced the index
        state.use_records(records)
        self._fill(state)
        state.temporaries = {e.name: e for e in self._temporaries}
        self._register(state)
        return state

    def read_state_again(self, state: RelayState) -> RelayState:
        """As :meth:`Repository.read_state_again`: what changed in ``index/``
        since is applied, ``clients/`` read again, into ``state`` itself.
        When the reading raises, ``state`` is left empty."""
        try:
            fresh = self.read_state()
        except BaseException:
            _move_state(RelayState(), state)
            raise
        if isinstance(state, IndexRelayState):
            state.take(fresh)
        else:
            _move_state(fresh, state)
        return state

    def _entries(self, folder: str) -> list[Entry]:
        """As :meth:`Repository._entries`; a listing :meth:`quiet_probe` made
        is used once instead of listing again."""
        prelisted = self._prelisted.pop(folder, None)
        if prelisted is None:
            return super()._entries(folder)
        entries, temporaries = prelisted
        self._temporaries.extend(temporaries)
        return entries

    def quiet_probe(self) -> str | None:
        """List ``clients/`` and ``index/`` (kept for the next
        :meth:`read_state`) and return a SHA-256 of every name, size and time
        listed, with the repository's identity: every commit adds an
        ``index/`` name, every registration or acknowledgement record changes
        a ``clients/`` entry. A folder known without listing
        (:meth:`created_now`) is not listed."""
        digest = hashlib.sha256(f"index {self.identity}\n".encode("ascii"))
        known, self._prelisted = self._prelisted, {}
        for folder in (CLIENTS, io.INDEX):
            if folder in known:
                entries, temporaries = known[folder]
            else:
                self._temporaries = []  # what Repository._entries collects (read_state starts afresh)
                entries, temporaries = super()._entries(folder), self._temporaries
            self._prelisted[folder] = (entries, temporaries)
            for e in sorted(entries + temporaries, key=lambda e: e.name):
                digest.update(f"{e.name}\0{e.size}\0{e.mtime}\n".encode("utf-8", "surrogateescape"))
        self._temporaries = []
        return digest.hexdigest()

    def lease_stamp(self) -> str | None:
        """``index <identity> <head> <latest checkpoint>``: the generation
        this client's index is at and the checkpoint it knows of. Every
        change a lease guards (a delta, a checkpoint and the pruning after
        it) moves one of the two; deletions of content follow the delta that
        drops it, and orphans are objects no generation names."""
        return f"index {self.identity or '-'} {self.head} {max(self._checkpoints, default=0)}"

    def state_under_lease(self, lease: Lease, state: RelayState) -> RelayState | None:
        """``state`` as it is, when the previous holder released its lease
        with the stamp of the index this client read: every commit needs the
        lease, and that holder's was the last before ours, so ``index/`` and
        the header are as read (a conversion releases without a stamp). The
        same holds under the repository's first lease when this client read
        an empty ``index/``.
        ``clients/``, written without the lease, is not read again: a
        registration or acknowledgement may always arrive while a holder
        works, and an older view only reclaims less. This client's own
        acknowledgement record, written since the read, is applied."""
        stamp = self.lease_stamp()
        never_written = lease.first and self.head == 0 and not self._checkpoints and not self._deltas
        if lease.previous_stamp() != stamp and not never_written:
            log.debug("lease generation %d: the previous holder left %r, this client read %r: reading again",
                      lease.generation, lease.previous_stamp(), stamp)
            return None
        if self._my_ack is not None and self._records.get(self.client_id) is not self._my_ack:
            self._records[self.client_id] = self._my_ack
            if isinstance(state, IndexRelayState):
                state.use_records(self._records)  # the acknowledgements are read from them
            self._reclaim_cache = None
        return state

    def _open_cached(self, name: str, cache_key: str | None, limit: int,
                     decode: Callable[[bytes, str], _Record], state: RelayState) -> tuple[_Record, bytes] | None:
        """Relay object ``name`` opened and decoded, with its plaintext: read
        from the cache under ``cache_key`` when there (None: not cached), else
        from the relay (at most ``limit`` bytes). None when it is gone, or
        refused (logged, and listed in ``state.rejected``)."""
        try:
            data = self.meta_cache.get(cache_key) if cache_key is not None else None
            if data is None:
                data = self.sealer.open(name, self.relay.get_bytes(name, limit=limit))
            return decode(data, name), data
        except RelayNotFound:
            return None
        except (ProtocolError, CryptoError) as exc:
            log.warning("ignoring relay object %s: %s", name, exc)
            state.rejected.append(name)
            return None

    def _read_client(self, entry: Entry, client: str, state: RelayState) -> ClientRecord | None:
        name = entry.name
        cache_key = f"{name}@{entry.size}@{entry.mtime}"
        opened = self._open_cached(name, cache_key if entry.mtime is not None else None, MAX_OBJECT_BYTES,
                                   ClientRecord.decode, state)
        if opened is None:
            return None
        record, data = opened
        if record.client != client:
            return None
        if entry.mtime is not None and cache_key not in self.meta_cache:
            for old in [k for k in self.meta_cache if k.startswith(name + "@")]:
                del self.meta_cache[old]
            self.meta_cache[cache_key] = data
        return record

    def _read_ack(self, name: str, client: str, state: RelayState) -> AckRecord | None:
        """Record ``name`` (written once: cached by name)."""
        cache_key = f"{_ACK_CACHE}{name}"
        opened = self._open_cached(name, cache_key, io.MAX_INDEX_BYTES, AckRecord.decode, state)
        if opened is None:
            return None
        record, data = opened
        if record.client != client:
            return None
        if cache_key not in self.meta_cache:
            prefix = f"{_ACK_CACHE}{CLIENTS}/{client}."
            for old in [k for k in self.meta_cache if k.startswith(prefix)]:
                del self.meta_cache[old]
            self.meta_cache[cache_key] = data
        return record

    def _fill(self, state: RelayState) -> None:
        """The sync layer's view of the materialised index and the records."""
        # the placeholders are built from the entries when read (LatestMap: no second
        # copy of every version); the objects present now decide their payloads, as
        # they would have when built here (a reclaimed version no longer names its
        # object, which may linger)
        present = set(self.objects)  # grows with this client's commits (_commit_delta)
        latest = LatestMap(partial(_placeholder_of, present), partial(_payload_of, present))
        self._present, self._filled = present, latest
        state.latest = latest
        state.payloads = {**{name: 0 for name in self._unsettled()}, **self.objects}
        # what the index keeps per path is stored as is (no entry built); the
        # versions and acknowledgements are read from it when asked (IndexRelayState)
        dict.update(latest, self.entries.stored_items())

    # ----------------------------------------------------------- receiving

    def replaced_meanwhile(self, placeholder: Placeholder) -> bool:
        """Always False here: a page's member is never removed while the index
        still names it (a receiver that read an older index reads the new one
        at its next pass)."""
        return False

    def fetch(self, placeholder: Placeholder, sink: BinaryIO) -> str | None:
        """Write the content of ``placeholder`` into ``sink``; as
        :meth:`Repository.fetch`. A page is fetched and opened once per pass
        (kept in a spool file) for all its members."""
        entry, algorithm = self._content_entry(placeholder)
        assert entry.location is not None
        location = entry.location
        hasher = hashlib.new(algorithm) if algorithm else None
        counting = HashingWriter(sink, hasher)
        name = location.object
        if io.parse_big_name(name) is not None:
            counting, hasher = self._fetch_big(entry, sink, algorithm, self.relay)
        else:
            page = self._page_for(name)
            member = page.members.get((entry.key, entry.version))
            if member is None or (member.offset, member.length, member.compression, member.size) != (
                    location.offset, location.length, location.compression, entry.size):
                raise IntegrityError(f"relay object {name}: its page index does not list {entry.path} "
                                     "as the index does")
            inflate_to(page.stored(member), member.compression, counting, name)
        return _verified(entry, counting, hasher, algorithm)

    def _content_entry(self, placeholder: Placeholder) -> tuple[IndexEntry, str | None]:
        """The index entry of ``placeholder``'s version, with content on the
        relay, and its checksum algorithm; RelayNotFound or ProtocolError."""
        entry = self.entries.get(placeholder.path)
        if entry is None or entry.version != placeholder.version or entry.location is None \
                or entry.location.object not in self.objects:
            raise RelayNotFound(f"{placeholder.path} has no content on the relay", name=placeholder.path)
        if entry.checksum and checksum_problem(entry.checksum) is not None:
            raise ProtocolError(f"{entry.path}: {checksum_problem(entry.checksum)}", name=entry.path)
        return entry, entry.checksum.partition(":")[0] if entry.checksum else None

    def fetchable_apart(self, placeholder: Placeholder) -> bool:
        """True for a version stored as a big object of its own (fetched on
        another connection by :meth:`fetch_on`); a page's members are fetched
        here, with their page (opened once per pass)."""
        entry = self.entries.get(placeholder.path)
        return entry is not None and entry.version == placeholder.version and entry.location is not None \
            and entry.location.object in self.objects and io.parse_big_name(entry.location.object) is not None

    def fetch_on(self, placeholder: Placeholder, sink: BinaryIO, relay: Relay) -> str | None:
        """As :meth:`fetch` for a big object (:meth:`fetchable_apart`),
        through ``relay``: opened, inflated and verified as it arrives into
        ``sink``. Touches no shared state (reads the index, which does not
        change while a pass receives): safe from a worker thread."""
        entry, algorithm = self._content_entry(placeholder)
        assert entry.location is not None
        if io.parse_big_name(entry.location.object) is None:
            raise ProtocolError(f"{placeholder.path} is not a big object", name=placeholder.path)
        counting, hasher = self._fetch_big(entry, sink, algorithm, relay)
        return _verified(entry, counting, hasher, algorithm)

    def _fetch_big(self, entry: IndexEntry, sink: BinaryIO, algorithm: str | None,
                   relay: Relay) -> tuple[HashingWriter, hashlib._Hash | None]:
        """Download big object ``entry.location.object`` into ``sink``, opened,
        inflated and hashed as it arrives (no spool: ``sink`` is the caller's
        temporary file, which may hold a prefix when this raises); the
        writer that counted the plaintext and its hasher. Checks the stored
        length against the index. A sink that cannot be rewound (for the
        retry wrapper's next attempt), or a sealer without
        ``open_writer``, goes through a spool file as before. Through
        ``relay`` (this repository's or a worker's connection); touches no
        shared state."""
        assert entry.location is not None
        location, name = entry.location, entry.location.object
        open_writer = getattr(self.sealer, "open_writer", None)
        start = start_of(sink) if open_writer is not None else None
        if open_writer is None or start is None:
            hasher = hashlib.new(algorithm) if algorithm else None
            counting = HashingWriter(sink, hasher)
            inflating = InflatingWriter(counting, location.compression, name)
            with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
                relay.get(name, cast(BinaryIO, _LocalSpool(cast(BinaryIO, spool), entry.path)))
                spool.seek(0)
                self.sealer.open_stream(name, cast(BinaryIO, spool), cast(BinaryIO, inflating))
            received = _finish_inflating(inflating)
        else:
            # stored as is (no compression): no inflating layer, and its copy of each chunk
            inflate = (lambda out: InflatingWriter(out, "zlib", name)) if location.compression == "zlib" else None
            try:
                pipeline, received = receive_opening(relay, name, sink, start, open_writer, algorithm, inflate,
                                                     limit=received_bound(self.sealer, location.length))
            except ObjectTooLarge as exc:
                raise IntegrityError(f"relay object {name}: longer than the {location.length} stored bytes "
                                     "the index says, sealed") from exc
            counting, hasher = pipeline.counting, pipeline.hasher
        if received != location.length:
            raise IntegrityError(f"relay object {name}: {received} stored bytes, the index "
                                 f"says {location.length}")
        return counting, hasher

    def _page_for(self, name: str) -> OpenedPage:
        if name in self._bad_pages:
            raise self._bad_pages[name]
        page = self._open_pages.get(name)
        if page is not None:
            return page
        try:
            page = open_page(self.relay.get, self.sealer, name, self.spool_dir)
        except (IntegrityError, ProtocolError) as exc:
            self._bad_pages[name] = exc
            log.error("refusing relay object %s: %s", name, exc)
            raise
        while len(self._open_pages) >= OPEN_PAGES:
            self._open_pages.pop(next(iter(self._open_pages))).close()
        self._open_pages[name] = page
        return page

    def acknowledge(self, placeholder: Placeholder) -> None:
        """Buffer that this client is done with ``placeholder``; written by
        :meth:`flush_acks`."""
        stored = self.entries.stored(placeholder.path)
        if stored is not None and stored.brief()[:2] == (placeholder.key, placeholder.version):
            self._acked_now.add(stored)  # equal only to an entry of that very version
        else:
            self._acked_now.add((placeholder.key, placeholder.version))

    def flush_acks(self) -> None:
        """Rewrite this client's acknowledgement record if it changed.

        The record says: every version recorded at or below the index head
        this client read is processed, except those it still lacks (listed).
        A client that does not receive writes none; nor does one that never
        wrote one while the index it read holds no content of another
        client's versions (its record would speak of nothing on the relay).
        Also closes the pages opened for receiving.
        """
        for page in self._open_pages.values():
            page.close()
        self._open_pages.clear()
        self._bad_pages.clear()
        if not self.receives and not self._acked_now:
            return
        old = self._my_ack
        if old is not None and old.generation == self.head and not self._acked_now and not self._ack_dirty:
            return  # nothing new to acknowledge, nothing new missing: the record stands (no walk of the index)
        silent = f"{self.identity} {self.head}".encode("ascii")
        if old is None and not self._acked_now and self.meta_cache.get(_SILENT_AT) == silent:
            return  # no record yet, and the index at this head holds nothing for one to say (found before)
        old_generation = old.generation if old is not None else 0
        old_missing = set(old.missing) if old is not None else set()
        missing = []
        changed = old is None
        says_something = old is not None
        me, head, objects = self.client_id, self.head, self.objects
        for stored in self.entries.stored_values():
            key, version, generation, kind, pusher, obj, _ = stored.brief()
            if kind != "file" or pusher == me or generation > head:
                continue
            if obj is None or obj not in objects:
                continue
            says_something = True
            pair = (key, version)
            fresh = generation > old_generation
            if stored in self._acked_now or pair in self._acked_now:
                changed = changed or fresh or pair in old_missing
            elif fresh or pair in old_missing:
                missing.append(pair)
                changed = changed or fresh
        self._acked_now.clear()
        if not says_something:
            # a first record would say nothing of any content on the relay
            # (an empty index, only this client's own versions, or others'
            # whose content is gone): an absent record says as much for
            # reclaim, so none is written until one would say more
            self.meta_cache[_SILENT_AT] = silent
            return
        if not changed and not self._ack_dirty:
            # nothing this record says changed (the head moved by deltas that
            # concern other clients only, or dropped content): the old one stands
            return
        record = AckRecord(self.client_id, self.head, tuple(sorted(missing)))
        sequence = max([self._my_sequence, *(n for n, _ in self._my_listed)]) + 1
        name = io.ack_record_name(self.client_id, sequence)
        data = record.encode()
        self.relay.put_bytes(name, self.sealer.seal(name, data))
        self._my_ack, self._my_sequence = record, sequence
        self._ack_dirty = False
        self.meta_cache[_MY_ACK] = data
        self.meta_cache[_MY_ACK_SEQUENCE] = str(sequence).encode("ascii")
        self.step("acknowledgements written")
        for _, replaced in self._my_listed:  # the records this one replaces
            self._delete_quietly(replaced)
        self._my_listed = [(sequence, name)]

    # ----------------------------------------------------------- receivers

    def _reclaimable_objects(self, state: RelayState) -> set[str]:
        """Content objects all of whose live versions every receiver took."""
        cache = self._reclaim_cache
        if cache is not None and cache[0] is state and cache[1] == self.head:
            return cache[2]
        # one placeholder at a time (none is kept): an object is done unless one of its versions is not
        present: set[str] = set()
        kept: set[str] = set()
        for stored in self.entries.stored_values():
            if (obj := stored.object_name) is not None and obj in self.objects:
                present.add(obj)
                if obj not in kept and not Repository.reclaimable(self, stored.to_placeholder(), state):
                    kept.add(obj)
        done = present - kept
        self._reclaim_cache = (state, self.head, done)
        return done

    def anything_reclaimable(self, state: RelayState) -> bool:
        """As :meth:`Repository.anything_reclaimable`, from the objects that
        can go (:meth:`_reclaimable_objects`, kept for this state and head):
        an object is there only when a latest version with content names it,
        so that version's payload is reclaimable. No placeholder is built per
        version."""
        return bool(self._reclaimable_objects(state))

    def reclaimable(self, placeholder: Placeholder, state: RelayState) -> bool:
        """Whether the object holding ``placeholder`` can go: every live
        version in it is acknowledged as :meth:`Repository.reclaimable` says."""
        return placeholder.payload is not None and placeholder.payload in self._reclaimable_objects(state)

    def delivered(self, placeholder: Placeholder, state: RelayState) -> bool:
        """Whether every expected receiver acknowledged this version
        (:meth:`Repository.reclaimable` of the version itself, whatever its
        page's other members and whether its content was reclaimed since).
        The acknowledgements are those of the receivers' records, each opened
        and checked against its client when read: nothing more to open."""
        return Repository.reclaimable(self, placeholder, state)

    # ----------------------------------------------------------- committing

    def when_committed(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the commits made so far are on the relay."""
        if self._pending:
            self._callbacks.append(callback)
        else:
            callback()

    def _next_version(self, state: RelayState, key: str, path: str) -> int:
        version = state.next_version(key, path)
        packed = max(self._pending_top.get(key, 0), self._reserved_top.get(key, 0))
        return max(version, packed + 1)

    def _room_for(self, lease: Lease, state: RelayState, path: str) -> None:
        """Commit what is pending first when one more entry (for ``path``)
        could take the delta's document past :data:`DELTA_BUDGET`, or past
        :data:`DELTA_ENTRIES` entries."""
        if self._pending and (len(self._pending) >= DELTA_ENTRIES or
                              self._pending_doc + _entry_bound(path, len(state.clients)) > DELTA_BUDGET):
            self.commit_pending(lease, state)

    def _add_pending(self, entry: IndexEntry) -> None:
        self._pending_doc += _entry_bound(entry.path, len(entry.receivers))
        key, version = entry.key, entry.version
        self._pending.append((entry.path, key, pack(entry)))
        self._pending_top[key] = max(version, self._pending_top.get(key, 0))

    def _pending_bytes(self) -> int:
        page = self._page.size if self._page is not None else 0
        return int(page * SEAL_SLACK) + sum(self._pending_big.values())

    def _check_quota(self, state: RelayState, more: int, path: str) -> None:
        if self.disk_quota is not None and state.stored_bytes() + self._pending_bytes() + more > self.disk_quota:
            raise RelayQuotaExceeded(f"disk quota of {self.disk_quota} bytes reached; {path} waits for reclaim",
                                     name=path)

    def commit_file(self, lease: Lease, state: RelayState, local: LocalVersion, source: BinaryIO) -> Placeholder:
        """Pack ``source`` as the path's next version; returns the planned
        placeholder, committed by :meth:`commit_pending` (which runs here when
        the page is full). Raises as :meth:`Repository.commit_file`; a file
        that would exceed ``disk quota`` is refused (after the page so far is
        committed: a push cuts its pages to fit the space left)."""
        self._room_for(lease, state, local.path)
        key = self.sealer.object_key(local.path)
        version = self._next_version(state, key, local.path)
        hasher = hashlib.new(self.checksum) if self.checksum else None
        reader = HashingReader(source, hasher)
        if local.size <= self.big_threshold:
            parts = []
            # in pieces of at most CHUNK (a read of the whole threshold would
            # allocate that much for a file of a few bytes)
            while piece := reader.read(min(CHUNK, self.big_threshold + 1 - reader.count)):
                parts.append(piece)
                if reader.count > self.big_threshold:
                    break
            content = b"".join(parts)
            if reader.count != local.size:
                raise ProtocolError(f"{local.path} changed while it was being sent", name=local.path)
            stored, compression = compress_member(content)
            if self._page is not None and self._page.members and self._page.size + len(stored) > self.maxpagesize:
                self.commit_pending(lease, state)
            try:
                self._check_quota(state, int(len(stored) * SEAL_SLACK) + 4096, local.path)
            except RelayQuotaExceeded:
                self.commit_pending(lease, state)
                raise
            if self._page is None:
                self._page = PageWriter(self.spool_dir)
                self._page_generation = self.head + 1
                self._page_name = io.page_name(self._page_generation)
            member = self._page.add_stored(key, version, stored, len(content), compression)
            location = Location(self._page_name, member.offset, member.length, compression)
        else:
            name = io.big_name(key, version)
            self._unsettle([name])
            stored_size, deflating, checksum = self._put_big(lease, state, local, source, name, self.relay)
            self.step(f"big object uploaded {local.path}")
            reservation = BigReservation(local, key, version, name)
            return self._add_big(lease, state, BigUpload(reservation, stored_size, deflating.produced,
                                                         deflating.compression, checksum))
        checksum = f"{self.checksum}:{hasher.hexdigest()}" if hasher is not None else None
        if checksum is not None and checksum == local.checksum:
            checksum = local.checksum  # the scan's string: one object for both
        entry = IndexEntry(
            path=local.path, key=key, version=version, generation=self.head + 1, lease=lease.generation,
            kind="file", pusher=self.client_id, pusher_label=self.pusher_label, size=local.size,
            mtime_ns=local.mtime_ns, checksum=checksum, receivers=self._receivers_now(state),
            puller_count=self.puller_count, location=location)
        self._add_pending(entry)
        self.step(f"packed {local.path}")
        return entry.to_placeholder()

    # ----------------------------------------------------------- big objects on other connections

    def pushes_big_apart(self, size: int) -> bool:
        """True for a file above :attr:`big_threshold` when no ``disk quota``
        is set (the quota is checked against a big object's stored size
        before it is sent, with the pending page: on the pass's thread)."""
        return self.disk_quota is None and size > self.big_threshold

    def reserve_big(self, lease: Lease, state: RelayState, local: LocalVersion) -> BigReservation:
        """Number ``local``'s next version and name its big object, and
        remember the name as unsettled (an orphan until a delta names it:
        swept if the pass never commits it). On the pass's thread."""
        assert self.pushes_big_apart(local.size)
        key = self.sealer.object_key(local.path)
        version = self._next_version(state, key, local.path)
        self._reserved_top[key] = max(version, self._reserved_top.get(key, 0))
        name = io.big_name(key, version)
        self._unsettle([name])
        return BigReservation(local, key, version, name)

    def upload_big(self, lease: Lease, reservation: BigReservation, source: BinaryIO, relay: Relay) -> BigUpload:
        """Upload ``source`` as the reserved big object through ``relay``, as
        :meth:`commit_file` uploads a big file (sealed while sent, constant
        memory); the delta that names it is written later, by
        :meth:`commit_pending` after :meth:`commit_big`. Touches no shared
        state: safe from a worker thread with its own ``relay``."""
        local = reservation.local
        stored_size, deflating, checksum = self._put_big(lease, None, local, source, reservation.name, relay)
        self.step(f"big object uploaded {local.path}")
        return BigUpload(reservation, stored_size, deflating.produced, deflating.compression, checksum)

    def commit_big(self, lease: Lease, state: RelayState, uploaded: BigUpload) -> Placeholder:
        """Pack the index entry of a big object :meth:`upload_big` stored:
        committed by the next :meth:`commit_pending`, with the page."""
        self.release_big(uploaded.reservation)
        self._room_for(lease, state, uploaded.reservation.local.path)
        return self._add_big(lease, state, uploaded)

    def release_big(self, reservation: BigReservation) -> None:
        """Forget a reservation (committed, or never to be: its object, if
        stored, is an orphan the sweep removes)."""
        if self._reserved_top.get(reservation.key) == reservation.version:
            del self._reserved_top[reservation.key]

    def _add_big(self, lease: Lease, state: RelayState, uploaded: BigUpload) -> Placeholder:
        """The pending entry of an uploaded big object."""
        reservation = uploaded.reservation
        local = reservation.local
        self._pending_big[reservation.name] = uploaded.stored
        entry = IndexEntry(
            path=local.path, key=reservation.key, version=reservation.version, generation=self.head + 1,
            lease=lease.generation, kind="file", pusher=self.client_id, pusher_label=self.pusher_label,
            size=local.size, mtime_ns=local.mtime_ns, checksum=uploaded.checksum,
            receivers=self._receivers_now(state), puller_count=self.puller_count,
            location=Location(reservation.name, 0, uploaded.length,
                              "zlib" if uploaded.compression == "zlib" else "none"))
        self._add_pending(entry)
        self.step(f"packed {local.path}")
        return entry.to_placeholder()

    def _put_big(self, lease: Lease, state: RelayState | None, local: LocalVersion, source: BinaryIO,
                 name: str, relay: Relay) -> tuple[int, DeflatingReader, str | None]:
        """Upload ``source`` (``local``'s content, from where it stands) as big
        object ``name`` through ``relay``; its stored size, the reader that
        deflated it (or not) and the checksum of its content. Raises
        ProtocolError when the file changed while it was read (what was
        uploaded is then an orphan, as after a crash), as :meth:`commit_file`
        otherwise. The caller marked ``name`` unsettled. ``state`` None: on a
        worker thread (no ``disk quota`` then, nothing shared is touched).

        The content is read once: when ``source`` is the file the scan hashed,
        unchanged (:func:`~escale.protocol.identity.same_file`: the identity in ``local``, checked on
        the open file before the first read and after the last), the scan's
        checksum is the content's and nothing is hashed here; otherwise the
        content is hashed as it is read, and that hash is the checksum.

        Content stored as is (what does not deflate) is sealed while it is
        uploaded, by a thread (:func:`~escale.protocol.streams.send_sealing`): its sealed size is
        known beforehand (:meth:`Envelope.sealed_size`), so ``disk quota`` is
        checked before anything is sent, and no spool file is written. A
        retried upload starts again from the file's first byte. Deflated
        content, a source that cannot be rewound, or a sealer without
        ``seal_pieces``, is sealed into a spool file first, then uploaded."""
        start = start_of(source)
        trusted = trusted_checksum(local, source, self.checksum)
        hashing = self.checksum if trusted is None else None
        hasher = hashlib.new(hashing) if hashing else None
        reader = HashingReader(source, hasher)
        deflating = DeflatingReader(cast(BinaryIO, reader))
        parts = sealing_parts(self.sealer)
        if start is None or parts is None or deflating.compression != "none":
            with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
                self.sealer.seal_stream(name, cast(BinaryIO, deflating),
                                        cast(BinaryIO, _LocalSpool(cast(BinaryIO, spool), local.path)))
                stored_size = spool.tell()
                if reader.count != local.size:
                    raise ProtocolError(f"{local.path} changed while it was being sent", name=local.path)
                checksum = checksum_read(local, source, trusted, self.checksum, hasher)
                if state is not None:
                    self._check_quota(state, stored_size, local.path)
                spool.seek(0)
                lease.check()
                relay.put(name, cast(BinaryIO, spool))
            return stored_size, deflating, checksum
        seal_pieces, sealed_size = parts
        stored_size = int(sealed_size(local.size))
        if state is not None:
            self._check_quota(state, stored_size, local.path)
        lease.check()
        reading, exact = send_sealing(relay, name, stored_size, source, start, hashing, seal_pieces,
                                      lambda again: DeflatingReader(cast(BinaryIO, again)),
                                      first=Reading(reader, deflating, hasher))
        deflating = reading.layer
        if not exact or reading.reader.count != local.size or deflating.compression != "none":
            raise ProtocolError(f"{local.path} changed while it was being sent", name=local.path)
        return stored_size, deflating, checksum_read(local, source, trusted, self.checksum, reading.hasher)

    def commit_tombstone(self, lease: Lease, state: RelayState, path: str, *,
                         deliberate: bool = False) -> Placeholder:
        """Plan a tombstone for ``path`` (``deliberate``: see the base class);
        committed by :meth:`commit_pending`."""
        self._room_for(lease, state, path)
        key = self.sealer.object_key(path)
        entry = IndexEntry(
            path=path, key=key, version=self._next_version(state, key, path), generation=self.head + 1,
            lease=lease.generation, kind="tombstone", pusher=self.client_id, pusher_label=self.pusher_label,
            size=0, mtime_ns=0, checksum=None, receivers=(), puller_count=self.puller_count, location=None,
            deliberate=deliberate)
        self._add_pending(entry)
        return entry.to_placeholder()

    def commit_pending(self, lease: Lease, state: RelayState) -> int:
        """Upload the pending page, then commit one index delta for every
        pending version; then run the :meth:`when_committed` callbacks.
        Returns how many versions were committed (their placeholders are in
        ``state.latest``: no list of them is made). Raises LeaseLost (nothing more is
        recorded), ProtocolError when another writer took this generation."""
        if not self._pending:
            self._discard_page()
            return 0
        generation = self.head + 1
        added = dict(self._pending_big)
        page = None
        if self._page is not None and self._page.members:
            # named when opened; named again if the head moved meanwhile
            page = self._page_name if self._page_generation == generation else io.page_name(generation)
            with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
                self._page.seal(self.sealer, page, generation,
                                cast(BinaryIO, _LocalSpool(cast(BinaryIO, spool), page)))
                added[page] = spool.tell()
                spool.seek(0)
                lease.check()
                self._unsettle([page])
                self.relay.put(page, cast(BinaryIO, spool))
            self.step(f"page uploaded {generation}")
        names, entries = self._final_entries(generation, lease.generation, page)
        delta = IndexDelta(generation, lease.generation, self.client_id, entries, added, ())
        self._commit_delta(lease, state, delta, names)
        self._settle(added)
        self._pending.clear()
        self._pending_top.clear()
        self._pending_big.clear()
        self._pending_doc = 0
        self._discard_page()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        return len(entries)

    def _final_entries(self, generation: int, lease: int,
                       page: str | None) -> tuple[list[tuple[str, str, StoredEntry]], tuple[StoredEntry, ...]]:
        """The pending entries as delta ``generation`` records them, sorted
        by path, the last one packed for a path (each path once).

        Entries are packed with their final generation, lease and page name
        and are taken as they are (no copy); one packed under other values
        (the head moved, another lease) is rewritten. Returned with their
        paths and keys (the strings they were packed with), in the same order."""
        pending = self._pending
        pending.sort(key=_first)  # stable: the last packed of a path stays last
        entries: list[StoredEntry] = []
        names: list[tuple[str, str, StoredEntry]] = []  # the pending tuples themselves (no copy)
        planned = self._page_name
        for at, named in enumerate(pending):
            path, key, stored = named
            if at + 1 < len(pending) and pending[at + 1][0] == path:
                continue
            moved = page is not None and planned != page and stored.object_name == planned
            if moved or stored.generation != generation or stored.lease != lease:
                entry = stored.unpack()
                location = entry.location
                if moved and location is not None and page is not None:
                    entry = replace(entry, location=replace(location, object=page))
                stored = pack(replace(entry, generation=generation, lease=lease))
                named = (path, key, stored)
            entries.append(stored)
            names.append(named)
        return names, tuple(entries)

    def _discard_page(self) -> None:
        if self._page is not None:
            self._page.close()
            self._page = None

    def abandon_pending(self) -> None:
        """Forget what was packed and not committed (the pass failed)."""
        self._pending_doc = 0
        self._pending.clear()
        self._pending_top.clear()
        self._pending_big.clear()
        self._reserved_top.clear()
        self._callbacks.clear()
        self._discard_page()

    def _unsettled(self) -> list[str]:
        raw = self.meta_cache.get(_UNSETTLED, b"")
        return [n for n in raw.decode("ascii", "replace").split("\n") if io.is_page_name(n) or io.parse_big_name(n)]

    def _unsettle(self, names: Iterable[str]) -> None:
        """Remember ``names`` (about to be uploaded or dropped) until settled."""
        current = self._unsettled()
        self.meta_cache[_UNSETTLED] = "\n".join(sorted({*current, *names})).encode("ascii")

    def _settle(self, names: Iterable[str]) -> None:
        gone = set(names)
        self.meta_cache[_UNSETTLED] = "\n".join(n for n in self._unsettled() if n not in gone).encode("ascii")

    def _commit_delta(self, lease: Lease, state: RelayState, delta: IndexDelta,
                      names: Sequence[tuple[str, str, StoredEntry]] | None = None) -> None:
        """Write ``delta`` (fenced), then apply it. ``names``: the path and
        key of each entry, in order (the strings to key the index and the
        relay state on: see :meth:`_apply`), with the entry itself."""
        name = io.delta_name(delta.generation)
        encoded = delta.encode()
        sealed = self.sealer.seal(name, encoded)
        lease.check()
        self.step(f"fenced index {delta.generation}")
        try:
            self.relay.put_bytes(name, sealed, exclusive=True)
        except RelayExists:
            if self.relay.get_bytes(name, limit=io.MAX_INDEX_BYTES) != sealed:
                raise ProtocolError(f"relay object {name}: index generation {delta.generation} was committed "
                                    "by another client", name=name) from None
        del sealed  # not held while the index is persisted below (peak memory)
        self.step(f"index committed {delta.generation}")
        # fence again, as Repository._commit: a commit that landed after the
        # lease was lost is reported, not recorded (the next read applies it)
        lease.check()
        self._apply(delta, names)
        self._deltas.add(delta.generation)
        self._persist([(delta, encoded)], defer=True)
        del encoded
        filled = self._filled if state.latest is self._filled else None
        if filled is not None:
            self._present.update(delta.added)  # new objects only: never one a filled entry named
        named = names if names is not None else [(e.path, e.key, e) for e in delta.entries]
        for path, key, entry in named:
            if filled is not None and ((obj := entry.object_name) is None or obj in self._present):
                # what the index keeps (reads as entry.to_placeholder()): not a second copy
                filled.store(path, self.entries.stored(path) or entry)
            else:
                state.latest[path] = entry.to_placeholder()
            if not isinstance(state, IndexRelayState):
                state.versions[key] = entry.version  # one version per key (RelayState.versions)
        state.payloads = dict(self.objects)

    # ----------------------------------------------------------- maintenance

    def _drop(self, lease: Lease, state: RelayState, dropped: list[str],
              moved: tuple[IndexEntry, ...] = (), added: dict[str, int] | None = None) -> None:
        """Commit a delta dropping ``dropped`` (and moving ``moved`` into
        ``added``), then delete the dropped objects."""
        delta = IndexDelta(self.head + 1, lease.generation, self.client_id, moved, added or {},
                           tuple(sorted(set(dropped))))
        self._unsettle(delta.dropped)
        self._commit_delta(lease, state, delta)
        for name in delta.dropped:
            lease.check()
            self._delete_quietly(name)
            self.step(f"deleted {name}")
        self._settle(delta.dropped)

    def reclaim(self, lease: Lease, state: RelayState) -> list[str]:
        """Delete the objects all of whose live versions every expected
        receiver acknowledged (one delta drops them first); the path of each
        version whose content went (the entries' own strings: no placeholder
        or pair is built for them; the versions, logged, are kept in an
        array)."""
        gone = sorted(self._reclaimable_objects(state) & set(self.objects))
        if not gone:
            return []
        gone_set = set(gone)
        done: list[str] = []
        versions = array("q")  # (versions are at most MAX_VERSION: they fit)
        for path, stored in self.entries.stored_items():
            brief = stored.brief()
            if brief[5] in gone_set:
                done.append(path)
                versions.append(brief[1])
        self._drop(lease, state, gone)
        for path, version in zip(done, versions, strict=True):
            log.info("reclaimed %s (version %d) from the relay", path, version)
        return done

    def _live_bytes(self) -> dict[str, int]:
        live: dict[str, int] = {}
        for stored in self.entries.stored_values():
            _, _, _, _, _, obj, length = stored.brief()
            if obj is not None:
                live[obj] = live.get(obj, 0) + length
        return live

    def collect_garbage(self, lease: Lease, state: RelayState, *,
                        temporary_age: float = STALE_TEMPORARY_AGE) -> int:
        """Under the lease: drop objects no live version uses, compact pages
        more than half dead, remove orphans of interrupted pushes (objects no
        index generation names), write a checkpoint every
        :data:`CHECKPOINT_EVERY` generations (pruning deltas and checkpoints
        the previous checkpoint covers), remove stale temporaries."""
        removed = 0
        live = self._live_bytes()
        dead = [o for o in self.objects if o not in live]
        compact = [o for o, size in self.objects.items() if io.is_page_name(o) and o in live
                   and size - live[o] > max(size // 2, COMPACT_MIN_DEAD)]
        moved: tuple[IndexEntry, ...] = ()
        added: dict[str, int] = {}
        if compact:
            moved, added = self._compact(lease, compact)
        if dead or moved:
            self._drop(lease, state, dead + (compact if moved else []), moved, added)
            removed += len(dead) + (len(compact) if moved else 0)
        if self._sweep_due():
            removed += self._sweep(lease)
        if self.head - max(self._checkpoints, default=0) >= CHECKPOINT_EVERY:
            self._checkpoint(lease)
        for entry in self.stale_temporaries(state, temporary_age):
            lease.check()
            try:
                self.relay.delete_temporary(entry.name)
            except RelayNotFound:
                pass
            state.temporaries.pop(entry.name, None)
            self.step("removed stale temporary")
            removed += 1
        if removed:
            log.info("removed %d leftover objects from the relay", removed)
        return removed

    def _sweep_due(self) -> bool:
        """Whether to list ``pages/`` and ``big/`` for orphans now: this client
        has unsettled objects (its own interrupted push or drop), or
        :data:`SWEEP_EVERY` generations passed since it last did (orphans of
        other clients' interrupted pushes)."""
        if self._unsettled():
            return True
        try:
            swept = int(self.meta_cache.get(_SWEPT, b"0").decode("ascii"))
        except ValueError:
            swept = 0
        return not 0 <= self.head - swept < SWEEP_EVERY

    def _sweep(self, lease: Lease) -> int:
        """Delete listed content objects no generation names; settle what this
        client left unsettled. Returns how many objects were deleted."""
        removed = 0
        listed: set[str] = set()
        for folder in (io.PAGES, io.BIG):
            for entry in self._entries(folder):
                if (io.is_page_name(entry.name) or io.parse_big_name(entry.name)) and entry.name not in self.objects:
                    lease.check()
                    self._delete_quietly(entry.name)
                    self.step("removed orphan object")
                    removed += 1
                else:
                    listed.add(entry.name)
        # what this client left unsettled is settled once gone from the relay, or referenced
        self._settle([n for n in self._unsettled() if n not in listed or n in self.objects])
        self.meta_cache[_SWEPT] = str(self.head).encode("ascii")
        return removed

    def _compact(self, lease: Lease, pages: list[str]) -> tuple[tuple[IndexEntry, ...], dict[str, int]]:
        """Copy the live members of ``pages`` into one new page (uploaded
        here); return the moved entries and the new page."""
        generation = self.head + 1
        writer = PageWriter(self.spool_dir)
        moved = []
        try:
            for name in pages:
                try:
                    page = open_page(self.relay.get, self.sealer, name, self.spool_dir)
                except (IntegrityError, ProtocolError, RelayNotFound) as exc:
                    log.warning("not compacting %s: %s", name, exc)
                    continue
                try:
                    for stored in self.entries.stored_values():
                        if stored.object_name != name:
                            continue
                        e = stored.unpack()
                        loc = e.location
                        assert loc is not None
                        member = page.members.get((e.key, e.version))
                        if member is None or (member.offset, member.length) != (loc.offset, loc.length):
                            continue
                        new = writer.add_stored(e.key, e.version, page.stored(member), member.size,
                                                member.compression)
                        moved.append(replace(e, location=Location("", new.offset, new.length, loc.compression)))
                finally:
                    page.close()
            if not moved:
                return (), {}
            target = io.page_name(generation)
            with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
                writer.seal(self.sealer, target, generation, cast(BinaryIO, spool))
                size = spool.tell()
                spool.seek(0)
                lease.check()
                self._unsettle([target])
                self.relay.put(target, cast(BinaryIO, spool))
            self.step(f"compacted page uploaded {generation}")
            return tuple(_relocated(e, target) for e in moved), {target: size}
        finally:
            writer.close()

    def _checkpoint(self, lease: Lease) -> None:
        previous = max(self._checkpoints, default=0)
        name = io.checkpoint_name(self.head)
        compressed, length = io.compress_pieces(io.checkpoint_pieces(self.head, self.objects, self._in_order()))
        if length > CHECKPOINT_LIMIT:
            # readers refuse it: the deltas since the last checkpoint stay instead
            log.log(logging.WARNING if not self._told_too_big else logging.DEBUG,
                    "the index of %s holds %d paths: its checkpoint (%d bytes) would pass the %d-byte bound "
                    "of an index object; no checkpoint is written, the deltas are kept (readers read them all)",
                    self.relay.describe(), len(self.entries), length, CHECKPOINT_LIMIT)
            self._told_too_big = True
            return
        sealed = self.sealer.seal(name, compressed)
        lease.check()
        try:
            self.relay.put_bytes(name, sealed, exclusive=True)
        except RelayExists:
            return
        self.step(f"checkpoint written {self.head}")
        self._checkpoints.add(self.head)
        for generation in sorted(g for g in self._deltas if g <= previous):
            self._delete_quietly(io.delta_name(generation))
            self._deltas.discard(generation)
        for generation in sorted(g for g in self._checkpoints if g < previous):
            self._delete_quietly(io.checkpoint_name(generation))
            self._checkpoints.discard(generation)
        self.step("index pruned")


def _finish_inflating(inflating: InflatingWriter) -> int:
    """End ``inflating``; the stored (deflated) bytes it received."""
    inflating.finish()
    return inflating.received


def _verified(entry: IndexEntry, counting: HashingWriter, hasher: hashlib._Hash | None,
              algorithm: str | None) -> str | None:
    """Check what was written for ``entry`` (counted by ``counting``, hashed
    by ``hasher``) against the index: its checksum, or IntegrityError."""
    name = entry.location.object if entry.location is not None else entry.path
    if counting.count != entry.size:
        raise IntegrityError(f"relay object {name}: size {counting.count} differs from the index "
                             f"({entry.size}) for {entry.path}")
    if hasher is not None and entry.checksum:
        got = f"{algorithm}:{hasher.hexdigest()}"
        if got != entry.checksum:
            raise IntegrityError(f"relay object {name}: checksum mismatch for {entry.path}")
        return got
    return None


def _entry_bound(path: str, receivers: int) -> int:
    """An upper bound of one index entry's share of a delta's document:
    its path twice (escaped characters), fixed fields and ids, and a client
    id for each of ``receivers``."""
    return 2 * len(path.encode("utf-8", "surrogateescape")) + 512 + 40 * receivers


@runtime_checkable
class _PrefixItems(Protocol):
    """A ``meta_cache`` that streams the items under a key prefix
    (``StateDB.meta_cache`` does, in key order); others are filtered whole."""

    def items_with_prefix(self, prefix: str) -> Iterator[tuple[str, bytes]]: ...


def _journal_key(generation: int) -> str:
    return f"{_JOURNAL}{generation:012d}"


def _journal_generation(key: str) -> int | None:
    digits = key[len(_JOURNAL):]
    return int(digits) if len(digits) == 12 and digits.isdigit() else None


def _delta_size(delta: IndexDelta) -> int:
    """What a delta weighs in the journal: its entries and dropped objects."""
    return len(delta.entries) + len(delta.dropped) + 1


def _sealed_copy(encoded: bytes) -> bytes:
    """The materialised index as kept in the state database: a digest of the
    encoded checkpoint, then the checkpoint (see :func:`_unsealed_copy`)."""
    return _copy_head(hashlib.sha256(encoded).hexdigest().encode("ascii")) + encoded


def _copy_head(digest: bytes, magic: bytes = _COPY_MAGIC) -> bytes:
    """The line that starts the local copy: its form (``magic``: the
    encoded checkpoint, or :data:`_PACKED_MAGIC` for the packed form) and
    the SHA-256 (hex) of what follows it (see :func:`_unsealed_copy`)."""
    return magic + digest + b"\n"


def _unsealed_copy(stored: bytes, magic: bytes = _COPY_MAGIC) -> memoryview | None:
    """What follows the first line of a copy in the form ``magic`` names
    (:func:`_sealed_copy`'s, by default), when its digest matches; None for
    anything else (another form, an older copy without digest, or a copy
    damaged since it was written: decoded with every check instead, or read
    again from the relay). A view of ``stored``, not a copy."""
    if not stored.startswith(magic):
        return None
    start = len(magic)
    digest, encoded = stored[start:start + 64], memoryview(stored)[start + 65:]
    if stored[start + 64:start + 65] != b"\n" or hashlib.sha256(encoded).hexdigest().encode("ascii") != digest:
        return None
    return encoded


def _placeholder_of(present: set[str], stored: object) -> Placeholder:
    """The placeholder of ``stored`` (what the index keeps for a path: a
    record or an entry) for ``RelayState.latest`` (payload: its object, when
    that object is in ``present``)."""
    entry = cast(StoredEntry, stored)
    name = entry.object_name
    return entry.to_placeholder(name is not None and name in present)


def _payload_of(present: set[str], stored: object) -> str | None:
    """``_placeholder_of(present, stored).payload``, without building it."""
    name = cast(StoredEntry, stored).object_name
    return name if name is not None and name in present else None


def _first(pending: tuple[str, str, StoredEntry]) -> str:
    return pending[0]


def _relocated(entry: IndexEntry, target: str) -> IndexEntry:
    assert entry.location is not None
    return replace(entry, location=replace(entry.location, object=target))
