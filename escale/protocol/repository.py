"""The placeholder-layout repository: every protocol operation on one relay.

A :class:`Repository` wraps an open :class:`Relay` and a :class:`Sealer`. It
reads the relay into a :class:`RelayState` (no lease needed), fetches payloads,
writes acknowledgements, and, under a :class:`Lease`, commits new versions,
reclaims acknowledged payloads and removes garbage.

Write order (DESIGN.md §3.2), and what a crash at each point leaves:

* commit: payload ``data/…`` first, then placeholder ``meta/…`` (exclusive), then
  removal of the superseded version: its placeholder, then its payload, then its
  acknowledgements. A crash before the placeholder leaves an orphan payload
  (removed by :meth:`collect_garbage`); after it, leftovers of the old version
  (removed likewise). The new version is visible only once whole.
* reclaim: only the payload is deleted; the placeholder stays, so every client
  still knows the file's last state.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import BinaryIO, cast

from escale.errors import (
    CryptoError,
    DiskFull,
    IntegrityError,
    LocalError,
    ProtocolError,
    RelayExists,
    RelayNotFound,
    RelayQuotaExceeded,
)
from escale.protocol import layout
from escale.protocol.envelope import Sealer
from escale.protocol.lease import Lease
from escale.protocol.objects import Ack, ClientRecord, Placeholder
from escale.relay import Entry, Relay

log = logging.getLogger(__name__)


@dataclass
class RelayState:
    """What the relay holds, as read at one moment.

    ``latest``: the newest decodable placeholder per path. ``versions``: every
    placeholder version listed per key. ``acks``: client ids per (key, version).
    ``payloads``: payload names present with their stored sizes. ``rejected``:
    relay objects that failed to open or decode (reported, never acted upon).
    """

    latest: dict[str, Placeholder] = field(default_factory=dict)
    versions: dict[str, list[int]] = field(default_factory=dict)
    acks: dict[tuple[str, int], set[str]] = field(default_factory=dict)
    ack_names: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    payloads: dict[str, int] = field(default_factory=dict)
    clients: dict[str, ClientRecord] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)

    def latest_version(self, key: str) -> int:
        """The highest version number listed for ``key``, readable or not (the
        next commit goes above it, so it never collides with any object)."""
        return max(self.versions.get(key, []), default=0)

    def superseded(self) -> list[tuple[str, int]]:
        """Listed versions older than their key's latest *readable* version.

        Only those are leftovers: a version above the latest readable one does
        not open (forged, corrupted, foreign key) and proves nothing, so it
        never makes a genuine version look superseded.
        """
        top = {p.key: p.version for p in self.latest.values()}
        return [(key, v) for key, versions in self.versions.items() if key in top
                for v in versions if v < top[key]]

    def has_payload(self, placeholder: Placeholder) -> bool:
        return placeholder.payload is not None and placeholder.payload in self.payloads

    def stored_bytes(self) -> int:
        """Bytes of payloads on the relay (what ``disk quota`` limits)."""
        return sum(self.payloads.values())


@dataclass(frozen=True)
class LocalVersion:
    """What a pusher knows of the local file it commits."""

    path: str
    size: int
    mtime_ns: int
    checksum: str | None


class Repository:
    """One client's view of one relay repository (placeholder layout)."""

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
    ) -> None:
        self.relay = relay
        self.sealer = sealer
        self.client_id = client_id
        self.label = label
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

    # ----------------------------------------------------------- setup

    def prepare(self) -> None:
        """Create the layout's missing folders (idempotent; one listing when
        they all exist). Registration happens in :meth:`read_state`."""
        present = {e.basename for e in self.relay.list() if e.is_dir}
        for folder in layout.FOLDERS:
            if folder not in present:
                self.relay.mkdir(folder)

    def _register(self, state: RelayState) -> None:
        """Write this client's registration if it is missing or out of date."""
        record = ClientRecord(self.client_id, self.label, self.receives, self.mode)
        if state.clients.get(self.client_id) != record:
            name = layout.client_name(self.client_id)
            self.relay.put_bytes(name, self.sealer.seal(name, record.encode()))
            self.meta_cache.pop(name, None)
            state.clients[self.client_id] = record
            log.info("registered client %s (%s) on %s", self.label, self.client_id, self.relay.describe())

    # ----------------------------------------------------------- reading

    def _entries(self, folder: str) -> list[Entry]:
        try:
            return [e for e in self.relay.list(folder) if not e.is_dir]
        except RelayNotFound:
            return []

    def _list(self, folder: str) -> list[str]:
        return [e.name for e in self._entries(folder)]

    def _open_meta(self, name: str) -> Placeholder:
        cached = self.meta_cache.get(name)
        if cached is None:
            cached = self.sealer.open(name, self.relay.get_bytes(name))
        placeholder = Placeholder.decode(cached, name)
        ref = layout.parse_meta(name)
        if ref is None or placeholder.key != ref.key or placeholder.version != ref.version:
            raise ProtocolError(f"relay object {name}: placeholder does not match its name", name=name)
        if self.sealer.object_key(placeholder.path) != placeholder.key:
            raise ProtocolError(f"relay object {name}: path does not match its key", name=name)
        self.meta_cache[name] = cached
        return placeholder

    def read_state(self) -> RelayState:
        """List the relay and decode what changed since the last read.

        Placeholders are immutable (a new version is a new object), so each is
        fetched once and then served from ``meta_cache``. Objects that fail to
        open or decode are listed in ``rejected`` and otherwise ignored.
        """
        state = RelayState()
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
                    data = self.sealer.open(name, self.relay.get_bytes(name))
                record = ClientRecord.decode(data, name)
            except RelayNotFound:
                continue
            except (ProtocolError, CryptoError) as exc:
                log.warning("ignoring relay object %s: %s", name, exc)
                state.rejected.append(name)
                continue
            if record.client == client:
                state.clients[client] = record
                if cache_key not in self.meta_cache:
                    for old in [k for k in self.meta_cache if k.startswith(name + "@")]:
                        del self.meta_cache[old]
                    self.meta_cache[cache_key] = data
        for payload_name, stored in self._data_entries():
            state.payloads[payload_name] = stored
        for name in self._list(layout.ACKS):
            ref = layout.parse_ack(name)
            if ref is not None:
                state.acks.setdefault((ref.key, ref.version), set()).add(ref.suffix)
                state.ack_names.setdefault((ref.key, ref.version), []).append(name)
        metas = [ref for name in self._list(layout.META) if (ref := layout.parse_meta(name))]
        for ref in metas:
            state.versions.setdefault(ref.key, []).append(ref.version)
        for key, versions in state.versions.items():
            versions.sort()
            for version in reversed(versions):
                name = layout.meta_name(key, version)
                try:
                    placeholder = self._open_meta(name)
                except RelayNotFound:
                    continue
                except (ProtocolError, CryptoError) as exc:
                    log.warning("ignoring relay object %s: %s", name, exc)
                    state.rejected.append(name)
                    continue
                known = state.latest.get(placeholder.path)
                if known is None or known.version < placeholder.version:
                    state.latest[placeholder.path] = placeholder
                break
        live = {layout.meta_name(k, v) for k, vs in state.versions.items() for v in vs}
        for stale in [n for n in self.meta_cache if n.startswith(layout.META + "/") and n not in live]:
            del self.meta_cache[stale]
        self._register(state)
        return state

    def _data_entries(self) -> Iterable[tuple[str, int]]:
        return [(e.name, e.size) for e in self._entries(layout.DATA) if layout.parse_data(e.name)]

    def fetch(self, placeholder: Placeholder, sink: BinaryIO) -> str | None:
        """Write the plaintext of ``placeholder``'s payload into ``sink``.

        Returns the checksum of what was written (``algorithm:hex``, or None
        when the placeholder has none). Raises RelayNotFound when the payload is
        gone (reclaimed or superseded meanwhile), IntegrityError when it fails
        authentication or its checksum or size differs. ``sink`` may hold a
        prefix when it raises: callers write into a temporary file.
        """
        if placeholder.payload is None:
            raise RelayNotFound(f"{placeholder.path} has no payload", name=placeholder.path)
        algorithm = placeholder.checksum.partition(":")[0] if placeholder.checksum else None
        hasher = hashlib.new(algorithm) if algorithm else None
        counting = _HashingWriter(sink, hasher)
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            # a write error here is the local disk's, not the relay's: the
            # wrapper reports it as such (backends would blame the relay object)
            self.relay.get(placeholder.payload, cast(BinaryIO, _LocalSpool(spool, placeholder.path)))
            spool.seek(0)
            self.sealer.open_stream(placeholder.payload, spool, cast(BinaryIO, counting))
        if counting.count != placeholder.size:
            raise IntegrityError(
                f"relay object {placeholder.payload}: size {counting.count} differs from "
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

    # ----------------------------------------------------------- receivers

    def expected_receivers(self, placeholder: Placeholder, state: RelayState) -> set[str]:
        """Clients that must acknowledge ``placeholder`` before its payload goes."""
        receivers = {c for c, r in state.clients.items() if r.receives}
        receivers |= set(placeholder.receivers)
        receivers.discard(placeholder.pusher)
        return receivers

    def reclaimable(self, placeholder: Placeholder, state: RelayState) -> bool:
        """Whether every expected receiver acknowledged this version.

        With ``puller count`` set, that many acknowledgements suffice. Without
        it, every registered receiving client (except the pusher) must have
        acknowledged, and at least one must exist: a payload nobody can receive
        yet is kept for the clients still to come.
        """
        acks = state.acks.get((placeholder.key, placeholder.version), set())
        acks = acks - {placeholder.pusher}
        wanted = placeholder.puller_count or self.puller_count
        if wanted:
            return len(acks) >= wanted
        expected = self.expected_receivers(placeholder, state)
        return bool(expected) and expected <= acks

    def acknowledge(self, placeholder: Placeholder) -> None:
        """Record that this client is done with ``placeholder`` (idempotent)."""
        name = layout.ack_name(placeholder.key, placeholder.version, self.client_id)
        ack = Ack(self.client_id, placeholder.key, placeholder.version)
        self.relay.put_bytes(name, self.sealer.seal(name, ack.encode()))

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

        The payload is sealed into a spool file while its checksum is computed,
        so the placeholder describes exactly the bytes sent. Raises
        RelayQuotaExceeded (transient) when ``disk quota`` would be exceeded,
        LeaseLost when the lease is no longer ours (usually nothing was
        committed then, at worst an orphan payload remains; if the lease was
        lost while the placeholder was being written, the placeholder may be
        there, possibly without its payload), ProtocolError when the path's
        version on the relay moved since ``state`` was read.
        """
        key = self.sealer.object_key(local.path)
        version = state.latest_version(key) + 1
        hasher = hashlib.new(self.checksum) if self.checksum else None
        payload = layout.data_name(key, version)
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            reader = _HashingReader(source, hasher)
            self.sealer.seal_stream(payload, cast(BinaryIO, reader),
                                    cast(BinaryIO, _LocalSpool(spool, local.path)))
            stored = spool.tell()
            if reader.count != local.size:
                raise ProtocolError(f"{local.path} changed while it was being sent", name=local.path)
            if self.disk_quota is not None and state.stored_bytes() + stored > self.disk_quota:
                raise RelayQuotaExceeded(
                    f"disk quota of {self.disk_quota} bytes reached; {local.path} waits for reclaim",
                    name=local.path,
                )
            spool.seek(0)
            lease.check()
            self.relay.put(payload, spool)
        state.payloads[payload] = stored
        self.step(f"payload uploaded {local.path}")
        checksum = f"{self.checksum}:{hasher.hexdigest()}" if hasher is not None else None
        placeholder = Placeholder(
            path=local.path, key=key, version=version, generation=lease.generation, kind="file",
            pusher=self.client_id, pusher_label=self.label, size=local.size,
            mtime_ns=local.mtime_ns, checksum=checksum, payload=payload,
            receivers=self._receivers_now(state), puller_count=self.puller_count,
        )
        self._commit(lease, state, placeholder)
        return placeholder

    def commit_tombstone(self, lease: Lease, state: RelayState, path: str) -> Placeholder:
        """Record that ``path`` was deleted (its next version is a tombstone)."""
        key = self.sealer.object_key(path)
        placeholder = Placeholder(
            path=path, key=key, version=state.latest_version(key) + 1, generation=lease.generation,
            kind="tombstone", pusher=self.client_id, pusher_label=self.label, size=0, mtime_ns=0,
            checksum=None, payload=None, receivers=(), puller_count=self.puller_count,
        )
        self._commit(lease, state, placeholder)
        return placeholder

    def _commit(self, lease: Lease, state: RelayState, placeholder: Placeholder) -> None:
        name = layout.meta_name(placeholder.key, placeholder.version)
        sealed = self.sealer.seal(name, placeholder.encode())
        lease.check()
        self.step(f"fenced {placeholder.path}")
        try:
            self.relay.put_bytes(name, sealed, exclusive=True)
        except RelayExists:
            # our own earlier attempt (retried after a dropped connection) or another writer
            if self.relay.get_bytes(name) != sealed:
                raise ProtocolError(
                    f"relay object {name}: version {placeholder.version} of {placeholder.path} "
                    "was committed by another client", name=name,
                ) from None
        self.meta_cache[name] = placeholder.encode()
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
        state.versions.setdefault(placeholder.key, []).append(placeholder.version)
        if previous is not None:
            self.retire(state, previous.key, previous.version)

    def retire(self, state: RelayState, key: str, version: int) -> None:
        """Remove a superseded version: placeholder, then payload, then acks."""
        name = layout.meta_name(key, version)
        self._delete_quietly(name)
        self.meta_cache.pop(name, None)
        self.step(f"retired placeholder {key[:8]}.{version}")
        if version in state.versions.get(key, []):
            state.versions[key].remove(version)
        prefix = f"{layout.DATA}/{key}.{version:010d}."
        for payload in [p for p in state.payloads if p.startswith(prefix)]:
            self._delete_quietly(payload)
            state.payloads.pop(payload, None)
            self.step(f"retired payload {key[:8]}.{version}")
        for ack in state.ack_names.pop((key, version), []):
            self._delete_quietly(ack)
            self.step(f"retired acknowledgement {key[:8]}.{version}")
        state.acks.pop((key, version), None)

    def _delete_quietly(self, name: str) -> None:
        try:
            self.relay.delete(name)
        except RelayNotFound:
            pass

    # ----------------------------------------------------------- maintenance

    def reclaim(self, lease: Lease, state: RelayState) -> list[Placeholder]:
        """Delete the payloads every expected receiver acknowledged.

        Acknowledgements are opened and checked before they count, so a forged
        one (wrong key, wrong version) never reclaims anything.
        """
        done = []
        for placeholder in list(state.latest.values()):
            if not state.has_payload(placeholder) or not self.reclaimable(placeholder, state):
                continue
            if not self._acks_authentic(placeholder, state):
                continue
            assert placeholder.payload is not None
            lease.check()
            self._delete_quietly(placeholder.payload)
            state.payloads.pop(placeholder.payload, None)
            self.step(f"reclaimed payload {placeholder.path}")
            done.append(placeholder)
            log.info("reclaimed %s (version %d) from the relay", placeholder.path, placeholder.version)
        return done

    def _acks_authentic(self, placeholder: Placeholder, state: RelayState) -> bool:
        names = state.ack_names.get((placeholder.key, placeholder.version), [])
        for name in names:
            try:
                ack = Ack.decode(self.sealer.open(name, self.relay.get_bytes(name)), name)
            except (RelayNotFound, ProtocolError, CryptoError) as exc:
                log.warning("ignoring acknowledgement %s: %s", name, exc)
                state.acks.get((placeholder.key, placeholder.version), set()).discard(
                    name.rpartition(".")[2]
                )
                return False
            owner = name.rpartition(".")[2]
            if (ack.key, ack.version) != (placeholder.key, placeholder.version) or ack.client != owner:
                log.warning("ignoring acknowledgement %s: it does not match its name", name)
                return False
        return True

    def collect_garbage(self, lease: Lease, state: RelayState) -> int:
        """Remove leftovers of interrupted operations; return how many objects.

        Under the lease nobody else commits, so a payload that no placeholder
        references is an orphan of a crashed push, and versions older than a
        path's latest readable version are leftovers of an interrupted retire
        (versions that do not open are reported by :meth:`read_state` and left
        alone; a later genuine commit goes above them and retires them).
        """
        removed = 0
        referenced = {p.payload for p in state.latest.values() if p.payload}
        for key, version in state.superseded():
            lease.check()
            self.retire(state, key, version)
            removed += 1
        for payload in [p for p in state.payloads if p not in referenced]:
            if layout.parse_data(payload) is not None:
                lease.check()
                self._delete_quietly(payload)
                state.payloads.pop(payload, None)
                self.step("removed orphan payload")
                removed += 1
        current = {(p.key, p.version) for p in state.latest.values()}
        for pair, names in list(state.ack_names.items()):
            if pair not in current and pair[0] in {p.key for p in state.latest.values()}:
                for name in names:
                    self._delete_quietly(name)
                    removed += 1
                state.ack_names.pop(pair, None)
                state.acks.pop(pair, None)
        if removed:
            log.info("removed %d leftover objects from the relay", removed)
        return removed


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


def _no_step(name: str) -> None:
    """The default ``on_step`` hook: nothing."""


class _HashingReader:
    """Reads from ``source``, hashing and counting what passes."""

    def __init__(self, source: BinaryIO, hasher: hashlib._Hash | None) -> None:
        self.source = source
        self.hasher = hasher
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.count += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _HashingWriter:
    """Writes to ``sink``, hashing and counting what passes."""

    def __init__(self, sink: BinaryIO, hasher: hashlib._Hash | None) -> None:
        self.sink = sink
        self.hasher = hasher
        self.count = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.count += len(data)
        if self.hasher is not None:
            self.hasher.update(data)
        written = self.sink.write(data)
        return written if written is not None else len(data)

    def flush(self) -> None:
        self.sink.flush()
