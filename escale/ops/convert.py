"""``escalectl migrate --layout``: convert a repository between its two layouts, in place.

The conversion runs online: it holds the repository's lease (operation
``migrate``), so no client commits, reclaims or cleans up meanwhile; clients
may still read. It keeps the repository: same place, same header identity,
same encryption header (hence the same object names for every path), same
clients and leases. Every path keeps its version number, pusher, receivers
and acknowledgements, so no client sees a version go backwards and no file is
transferred again.

Order of work, and what a crash (or a failure) at each point leaves:

1. leftovers of the target layout from an earlier interrupted conversion are
   removed (the header still names the source layout: they are garbage);
2. the source is read with a reader that registers nothing; every live
   content is fetched, authenticated and hashed;
3. the target layout is written next to the source: content objects first
   (payloads, or pages and big objects), then its metadata (placeholders and
   acknowledgements, or one index checkpoint and one acknowledgement record
   per receiver), each under names the source layout never reads;
4. the target is read back from the relay by a fresh reader of the target
   layout and compared path by path (version, kind, size, checksum); every
   content is fetched again, authenticated and its SHA-256 compared with the
   source's. A difference raises OperationError before anything else;
5. the header is rewritten with the new layout (its other fields kept; a
   placeholder header also records the highest index generation ever used,
   ``index_generation``, so that a later conversion back starts above it);
6. the source layout's objects and folders are deleted.

Before step 5 the repository is the source, untouched apart from extra
objects in the other layout's names, which its clients never read and which
the next conversion removes (step 1). After step 5 it is the target; source
objects a crash left behind are removed by the next conversion, or by
``escalectl fix`` (see doc/operations.rst). Clients configured for the other
layout stop at their next pass with one line naming ``escalectl migrate``.

Index generations: a conversion to the index layout writes one checkpoint at
a generation above every generation the repository ever had (the header's
``index_generation``), so that a client that remembers generations of an
earlier index incarnation reads the new one as progress, never as a rollback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from escale.config.settings import ClientSettings
from escale.errors import CryptoError, EscaleError, OperationError, ProtocolError, RelayNotFound, UsageError
from escale.ops.common import Progress, escalectl_lease, existing_sealer, no_progress, open_relay
from escale.ops.readers import reader_for
from escale.protocol import layout
from escale.protocol.index import objects as io
from escale.protocol.index.objects import AckRecord, Checkpoint, IndexEntry, Location
from escale.protocol.index.pages import DeflatingReader, PageWriter, compress_member
from escale.protocol.index.repository import MAX_SMALL_FILE
from escale.protocol.lease import Lease
from escale.protocol.marker import MARKER, ChangeMarker
from escale.protocol.objects import MAX_OBJECT_BYTES, Ack, Placeholder
from escale.protocol.repository import RelayState, Repository
from escale.protocol.sealer import Sealer
from escale.relay import Relay

log = logging.getLogger(__name__)

LAYOUTS = ("placeholder", "index")
#: The header field recording the highest index generation the repository had.
INDEX_FLOOR = "index_generation"

#: Folders and per-layout objects. ``clients/`` and ``lease/`` are shared.
_PLACEHOLDER_FOLDERS = (layout.META, layout.DATA, layout.ACKS)
_INDEX_FOLDERS = (io.INDEX, io.PAGES, io.BIG)

Step = Callable[[str], None]


def _no_step(name: str) -> None:
    """The default step hook: nothing."""


@dataclass
class ConvertReport:
    """What a conversion did: the layouts, how many paths and content bytes
    were converted and verified, the first index generation written (index
    target) and how many source objects were removed afterwards."""

    section: str
    relay: str
    source_layout: str
    target_layout: str
    paths: int = 0
    contents: int = 0
    bytes: int = 0
    generation: int = 0
    removed: int = 0
    #: the repository was already in the target layout (only leftovers removed)
    already: bool = False


def header_document(relay: Relay) -> dict[str, Any]:
    """The repository header of ``relay`` as a JSON object (OperationError if absent)."""
    try:
        data = relay.get_bytes(layout.HEADER, limit=MAX_OBJECT_BYTES)
    except RelayNotFound:
        raise OperationError(f"relay {relay.describe()} holds no escale repository (no {layout.HEADER})") from None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or doc.get("layout") not in LAYOUTS:
        raise ProtocolError(f"relay object {layout.HEADER}: not a repository header", name=layout.HEADER)
    return doc


def index_floor(doc: dict[str, Any]) -> int:
    """The highest index generation a header records (0 when none)."""
    value = doc.get(INDEX_FLOOR)
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= io.MAX_GENERATION \
        else 0


def index_top(relay: Relay) -> int:
    """The highest generation named in ``index/`` (0 when none or no folder)."""
    try:
        names = [e.name for e in relay.list(io.INDEX) if not e.is_dir]
    except RelayNotFound:
        return 0
    return max((p[0] for n in names if (p := io.parse_index_name(n)) is not None), default=0)


def layout_objects(relay: Relay, layout_name: str) -> list[str]:
    """Every object only ``layout_name`` uses: its own folders' content, and
    (index) the acknowledgement records in ``clients/``."""
    found: list[str] = []
    for folder in _INDEX_FOLDERS if layout_name == "index" else _PLACEHOLDER_FOLDERS:
        with contextlib.suppress(RelayNotFound):
            found.extend(e.name for e in relay.walk(folder))
    if layout_name == "index":
        with contextlib.suppress(RelayNotFound):
            found.extend(e.name for e in relay.list(layout.CLIENTS)
                         if not e.is_dir and io.parse_ack_record_name(e.name) is not None)
    return found


def remove_layout(relay: Relay, layout_name: str, lease: Lease | None, step: Step = _no_step) -> int:
    """Delete every object and folder only ``layout_name`` uses; return the
    number of objects deleted. Metadata goes before content (index deltas and
    checkpoints before pages; placeholders before payloads)."""
    names = layout_objects(relay, layout_name)
    first = (io.INDEX, layout.META, layout.ACKS, layout.CLIENTS)
    names.sort(key=lambda n: (n.partition("/")[0] not in first, n))
    for name in names:
        if lease is not None:
            lease.check()
        with contextlib.suppress(RelayNotFound):
            relay.delete(name)
        step(f"removed {name}")
    for folder in _INDEX_FOLDERS if layout_name == "index" else _PLACEHOLDER_FOLDERS:
        with contextlib.suppress(RelayNotFound):
            for temporary in relay.list_temporaries(folder):
                with contextlib.suppress(RelayNotFound):
                    relay.delete_temporary(temporary.name)
        with contextlib.suppress(EscaleError):
            relay.rmdir(folder)  # a folder another client just wrote into stays (empty of ours)
    return len(names)


@dataclass
class _Content:
    """One path's converted content: SHA-256 and size of its plaintext."""

    sha256: str
    size: int


def _fetch_hashed(reader: Repository, ph: Placeholder, spool: BinaryIO) -> _Content:
    """Fetch ``ph``'s content into ``spool`` (rewound), authenticated and checked."""
    spool.seek(0)
    spool.truncate()
    reader.fetch(ph, spool)
    size = spool.tell()
    spool.seek(0)
    digest = hashlib.sha256()
    while chunk := spool.read(1 << 20):
        digest.update(chunk)
    spool.seek(0)
    return _Content(digest.hexdigest(), size)


def _acks_by_client(state: RelayState, pairs: set[tuple[str, int]]) -> dict[str, set[tuple[str, int]]]:
    acked: dict[str, set[tuple[str, int]]] = {}
    for pair, clients in state.acks.items():
        if pair in pairs:
            for client in clients:
                acked.setdefault(client, set()).add(pair)
    return acked


def _to_index(relay: Relay, sealer: Sealer, lease: Lease, source: RelayState, reader: Repository,
              doc: dict[str, Any], spool_dir: str, maxpagesize: int, report: ConvertReport,
              on_progress: Progress, step: Step) -> dict[str, _Content]:
    """Write the index layout for ``source``: pages and big objects, one
    acknowledgement record per receiver, then one checkpoint. Returns the
    content digests per path."""
    generation = max(index_floor(doc), index_top(relay)) + 1
    report.generation = generation
    for folder in _INDEX_FOLDERS:
        relay.mkdir(folder)
    big_threshold = min(MAX_SMALL_FILE, max(64 * 1024, maxpagesize) // 4)
    entries: list[IndexEntry] = []
    objects: dict[str, int] = {}
    contents: dict[str, _Content] = {}
    page: PageWriter | None = None
    placed: list[tuple[Placeholder, Location]] = []

    def flush_page() -> None:
        nonlocal page
        if page is None or not page.members:
            return
        name = io.page_name(generation)
        with tempfile.TemporaryFile(dir=spool_dir) as sealed:
            page.seal(sealer, name, generation, cast(BinaryIO, sealed))
            objects[name] = sealed.tell()
            sealed.seek(0)
            lease.check()
            relay.put(name, cast(BinaryIO, sealed))
        step(f"page written {name}")
        for ph, loc in placed:
            entries.append(_entry(ph, generation, Location(name, loc.offset, loc.length, loc.compression)))
        placed.clear()
        page.close()
        page = None

    latest = sorted(source.latest.values(), key=lambda p: p.path)
    on_progress(0, len(latest))
    with tempfile.TemporaryFile(dir=spool_dir) as plain:
        for done, ph in enumerate(latest, start=1):
            if ph.kind == "tombstone":
                entries.append(_entry(ph, generation, None))
            elif not source.has_payload(ph):
                # reclaimed: the entry names a content object that is not there
                entries.append(_entry(ph, generation, Location(io.big_name(ph.key, ph.version), 0, 0, "none")))
            else:
                content = _fetch_hashed(reader, ph, cast(BinaryIO, plain))
                contents[ph.path] = content
                report.contents += 1
                report.bytes += content.size
                if content.size <= big_threshold:
                    stored, compression = compress_member(plain.read())
                    if page is not None and page.members and page.size + len(stored) > maxpagesize:
                        flush_page()
                    if page is None:
                        page = PageWriter(spool_dir)
                    member = page.add_stored(ph.key, ph.version, stored, content.size, compression)
                    placed.append((ph, Location("", member.offset, member.length, compression)))
                else:
                    name = io.big_name(ph.key, ph.version)
                    deflating = DeflatingReader(cast(BinaryIO, plain))
                    with tempfile.TemporaryFile(dir=spool_dir) as sealed:
                        sealer.seal_stream(name, cast(BinaryIO, deflating), cast(BinaryIO, sealed))
                        objects[name] = sealed.tell()
                        sealed.seek(0)
                        lease.check()
                        relay.put(name, cast(BinaryIO, sealed))
                    step(f"big object written {name}")
                    entries.append(_entry(ph, generation, Location(name, 0, deflating.produced,
                                                                   deflating.compression)))
            on_progress(done, len(latest))
        flush_page()
    # acknowledgements: one record per client that acknowledged anything or receives
    files = {(e.key, e.version): e for e in entries if e.kind == "file"}
    acked = _acks_by_client(source, set(files))
    receivers = {c for c, r in source.clients.items() if r.receives} | set(acked)
    for client in sorted(receivers):
        missing = tuple(sorted(pair for pair, e in files.items()
                               if e.pusher != client and e.location is not None and e.location.object in objects
                               and pair not in acked.get(client, set())))
        name = io.ack_record_name(client, generation)
        lease.check()
        relay.put_bytes(name, sealer.seal(name, AckRecord(client, generation, missing).encode()))
        step(f"acknowledgement record written {client}")
    name = io.checkpoint_name(generation)
    lease.check()
    relay.put_bytes(name, sealer.seal(name, Checkpoint(generation, tuple(entries), objects).encode()),
                    exclusive=True)
    step("checkpoint written")
    return contents


def _entry(ph: Placeholder, generation: int, location: Location | None) -> IndexEntry:
    return IndexEntry(
        path=ph.path, key=ph.key, version=ph.version, generation=generation, lease=ph.generation, kind=ph.kind,
        pusher=ph.pusher, pusher_label=ph.pusher_label, size=ph.size, mtime_ns=ph.mtime_ns, checksum=ph.checksum,
        receivers=ph.receivers, puller_count=ph.puller_count, location=location, deliberate=ph.deliberate)


def _to_placeholder(relay: Relay, sealer: Sealer, lease: Lease, source: RelayState, reader: Repository,
                    spool_dir: str, report: ConvertReport, on_progress: Progress,
                    step: Step) -> dict[str, _Content]:
    """Write the placeholder layout for ``source``: payloads, placeholders,
    acknowledgements, then a change marker that makes every reader read in full."""
    for folder in _PLACEHOLDER_FOLDERS:
        relay.mkdir(folder)
    contents: dict[str, _Content] = {}
    latest = sorted(source.latest.values(), key=lambda p: p.path)
    on_progress(0, len(latest))
    with tempfile.TemporaryFile(dir=spool_dir) as plain:
        for done, ph in enumerate(latest, start=1):
            payload: str | None = None
            if ph.kind == "file":
                payload = layout.data_name(ph.key, ph.version)
                if source.has_payload(ph):
                    content = _fetch_hashed(reader, ph, cast(BinaryIO, plain))
                    contents[ph.path] = content
                    report.contents += 1
                    report.bytes += content.size
                    with tempfile.TemporaryFile(dir=spool_dir) as sealed:
                        sealer.seal_stream(payload, cast(BinaryIO, plain), cast(BinaryIO, sealed))
                        sealed.seek(0)
                        lease.check()
                        relay.put(payload, cast(BinaryIO, sealed))
                    step(f"payload written {payload}")
            converted = Placeholder(
                path=ph.path, key=ph.key, version=ph.version, generation=ph.generation, kind=ph.kind,
                pusher=ph.pusher, pusher_label=ph.pusher_label, size=ph.size, mtime_ns=ph.mtime_ns,
                checksum=ph.checksum, payload=payload, receivers=ph.receivers, puller_count=ph.puller_count,
                deliberate=ph.deliberate)
            name = layout.meta_name(ph.key, ph.version)
            lease.check()
            relay.put_bytes(name, sealer.seal(name, converted.encode()))
            step(f"placeholder written {name}")
            for client in sorted(source.acks_of(ph)):
                ack = layout.ack_name(ph.key, ph.version, client)
                relay.put_bytes(ack, sealer.seal(ack, Ack(client, ph.key, ph.version).encode()))
            on_progress(done, len(latest))
    counter = 0
    with contextlib.suppress(RelayNotFound, ProtocolError, CryptoError):
        counter = ChangeMarker.decode(sealer.open(MARKER, relay.get_bytes(MARKER, limit=MAX_OBJECT_BYTES))).counter
    lease.check()
    relay.put_bytes(MARKER, sealer.seal(MARKER, ChangeMarker.next(counter, clean=False).encode()))
    step("marker written")
    return contents


def _verify(target: RelayState, reader: Repository, source: RelayState, contents: dict[str, _Content],
            spool_dir: str) -> None:
    """Raise OperationError unless ``target`` (read back) shows every path of
    ``source`` with the same version, kind, size and checksum, and every
    converted content opens and hashes to the source's SHA-256."""
    if set(target.latest) != set(source.latest):
        extra = sorted(set(target.latest) ^ set(source.latest))
        raise OperationError(f"the converted repository lists other paths than the source (e.g. {extra[0]}); "
                             "the source layout is left in force")
    with tempfile.TemporaryFile(dir=spool_dir) as plain:
        for path, ph in source.latest.items():
            got = target.latest[path]
            if (got.version, got.kind, got.size, got.checksum) != (ph.version, ph.kind, ph.size, ph.checksum):
                raise OperationError(f"{path}: the converted repository shows version {got.version} "
                                     f"({got.kind}, {got.size} bytes) but the source has version {ph.version} "
                                     f"({ph.kind}, {ph.size} bytes); the source layout is left in force")
            expected = contents.get(path)
            if expected is None:
                continue
            if not target.has_payload(got):
                raise OperationError(f"{path}: its content is missing from the converted repository; the "
                                     "source layout is left in force")
            if _fetch_hashed(reader, got, cast(BinaryIO, plain)) != expected:
                raise OperationError(f"{path}: its content reads back differently from the converted "
                                     "repository; the source layout is left in force")


def _write_header(relay: Relay, doc: dict[str, Any], target: str, floor: int) -> None:
    new = dict(doc)
    new["layout"] = target
    if floor > 0:
        new[INDEX_FLOOR] = max(floor, index_floor(doc))
    relay.put_bytes(layout.HEADER, json.dumps(new, sort_keys=True).encode("utf-8"))


def convert_layout(
    settings: ClientSettings,
    target: str,
    *,
    lease_wait: float | None = None,
    on_progress: Progress = no_progress,
    on_step: Step = _no_step,
) -> ConvertReport:
    """Convert the repository of ``settings.relay`` to layout ``target`` in place.

    See the module docstring for the order of work. A repository already in
    ``target`` (a conversion interrupted after its switch) is not an error:
    the other layout's leftovers are removed and ``already`` is set. Raises
    UsageError for an unknown layout; OperationError when the relay holds no
    repository, when source objects do not open, or when the converted layout
    does not read back as the source (the source stays in force then);
    IntegrityError for a source content that fails authentication (nothing
    switched); LeaseBusy, LeaseLost, RelayError, WrongKeyError.
    ``on_step(name)`` is called after each relay mutation (fault tests stop
    the process there).
    """
    if target not in LAYOUTS:
        raise UsageError(f"unknown layout {target!r} (choose index or placeholder)")
    relay = open_relay(settings.relay)
    # spool files are nameless (tempfile.TemporaryFile): nothing of them is left
    # behind, even by a process killed midway, so no folder of their own is made
    spool_dir = tempfile.gettempdir()
    try:
        doc = header_document(relay)
        current = str(doc["layout"])
        report = ConvertReport(settings.name, relay.describe(), current, target)
        sealer = existing_sealer(relay, settings)
        if current == target:
            # already converted (e.g. by a run interrupted after the switch): finish its clean-up
            report.already = True
            with escalectl_lease(relay, settings, sealer, "migrate", lease_wait) as lease:
                report.removed = remove_layout(relay, _other(target), lease, on_step)
            log.info("[%s] the repository on %s is already in the %s layout; %d leftover objects removed",
                     settings.name, relay.describe(), target, report.removed)
            return report
        with escalectl_lease(relay, settings, sealer, "migrate", lease_wait) as lease:
            # 1. leftovers of an interrupted conversion (the header names the source: garbage)
            stale = remove_layout(relay, target, lease)
            if stale:
                log.info("removed %d objects of an interrupted conversion to the %s layout", stale, target)
            # 2. the source
            reader = reader_for(current, relay, sealer, spool_dir, maxpagesize=settings.maxpagesize)
            source = reader.read_state()
            refused = [n for n in source.rejected if n.partition("/")[0] in (layout.META, io.INDEX)]
            if refused:
                raise OperationError(f"relay objects do not open ({', '.join(refused[:3])}); nothing was "
                                     "converted: run `escalectl fix` first")
            for name in source.rejected:
                log.warning("relay object %s does not open: not converted", name)
            report.paths = len(source.latest)
            top = index_top(relay) if current == "index" else 0
            # 3. the target, content first
            if target == "index":
                contents = _to_index(relay, sealer, lease, source, reader, doc, spool_dir, settings.maxpagesize,
                                     report, on_progress, on_step)
            else:
                contents = _to_placeholder(relay, sealer, lease, source, reader, spool_dir, report, on_progress,
                                           on_step)
            # 4. read back and compare
            lease.check()
            check = reader_for(target, relay, sealer, spool_dir, maxpagesize=settings.maxpagesize)
            _verify(check.read_state(), check, source, contents, spool_dir)
            on_step("verified")
            # 5. the header: from now on the repository is in the target layout
            lease.check()
            _write_header(relay, doc, target, max(top, report.generation))
            on_step("header written")
            log.info("[%s] the repository on %s is now in the %s layout (%d paths, %d contents verified)",
                     settings.name, relay.describe(), target, report.paths, report.contents)
            # 6. the source layout's objects
            report.removed = remove_layout(relay, current, lease, on_step)
        return report
    finally:
        relay.close()


def leftover_layout_objects(relay: Relay, layout_name: str) -> list[str]:
    """Objects of the layout other than ``layout_name`` (the header's) left on
    ``relay`` by an interrupted conversion (for ``escalectl fix``)."""
    return layout_objects(relay, _other(layout_name))


def _other(layout_name: str) -> str:
    return "placeholder" if layout_name == "index" else "index"


__all__ = ["ConvertReport", "convert_layout", "header_document", "index_floor", "leftover_layout_objects",
           "remove_layout"]
