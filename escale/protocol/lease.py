"""The repository lease: one writer at a time, safe on weak servers.

Objects: ``lease/<generation>`` (see :mod:`escale.protocol.layout`), each a sealed
:class:`LeaseRecord`. The current lease is the highest generation listed.

Names: a generation is named by :func:`layout.lease_name` and read back by
:func:`layout.parse_lease` (any number of digits, canonical spelling, at most
``2**63 - 1``). Anything else listed in ``lease/`` (a folder, a foreign or
non-canonical name, a number beyond 63 bits) is ignored with one warning; the
next generation is still chosen above every generation *name* listed, folders
included, so that it can be written, listed and parsed.

Taking the lease (generation ``g+1`` after ``g``):

1. The current record must be released, stale, or ours from an attempt that
   is over: ours means our client id on our host; over means its process is
   gone, or it is this very process and its token is not one a live
   :class:`Lease` (or an acquisition in progress) of this process holds (a
   pass that failed while the relay dropped, its release lost with it). A
   record of our client from another *live* process is held like anyone's.
   *Stale*: the observer has seen the same ``(token, beat)`` for longer than
   ``lock timeout`` on its own boot-time clock. Remote clocks are never read.
   An unreadable record (forged, wrong key) counts as held by an unknown
   client and goes stale the same way: an outsider can delay a client, not
   fool it.
2. ``lease/<g+1>`` is created with an exclusive put. Where the backend's exclusive
   create is atomic, exactly one contender wins generation ``g+1``, and a put
   that returns is the lease (nothing is read back; a put that failed with
   RelayExists is read back: it may be our own write, retried). Where it is
   not (check-then-put servers), contenders may overwrite each other; every
   writer waits ``settle`` seconds, then reads the record back and lists the
   folder. **Rule**: the contender whose token the record holds wins, unless a
   generation above ``g+1`` is listed. The record holds one token at a time,
   and the last writer always reads back its own: when every contender runs
   in lock step, the last to write wins (a write that becomes visible later
   than ``settle`` remains the one window of this weakest server).
   An atomic exclusive create decides alone only where rewriting a record is
   atomic too (:func:`create_decides`). On WebDAV a rewrite (the holder's
   renewal or release) is a delete followed by a move: a contender listing
   in between finds no record of the holder's generation, claims that very
   generation, and its exclusive put succeeds before the move lands over it.
   There claims settle and read back as above, so that contender finds the
   holder's record and stands back.

   The settle is measured, not fixed (:meth:`LeaseManager.settle_for`). A
   competitor can overwrite our record only if its existence check ran before
   our record was visible, that is before our exclusive put returned; its own
   record is then visible at most one *claim window* (check, upload, move:
   the whole exclusive put, as timed by the writer) after that check. So
   waiting one competitor's claim window after our put returns is enough. The
   competitor's window is not known; ours, timed on this relay and this
   machine at this moment, stands for it with a margin:
   ``SETTLE_FACTOR`` times the longest of our recent windows (this one
   included), at least ``SETTLE_FLOOR`` (scheduling noise) and at most the old
   fixed bound, a tenth of the lock timeout and 2 s. Where exclusive create is
   atomic the settle is 0: the put itself decides.
3. A contender that wrote a record and does not become the holder (a higher
   generation appeared, or its attempt failed with a relay error after the
   write) *withdraws*: if the record still holds its token it rewrites it as
   released. It withdraws only once settled: a put that failed may still have
   landed, so it waits the settle first (reading, then rewriting, is not
   atomic: a competitor's write landing in between, already read back by its
   writer as its lease, would be marked released). So a record that never
   became a lease does not block the others until it goes stale; only a
   contender that dies (or loses the relay) between write and withdrawal
   leaves one, which then goes stale like a dead holder's.
4. The holder renews (rewrites its record with ``beat + 1``) every third of the
   timeout, from a heartbeat thread on its own connection, and verifies the
   record is still its own each time. A renewal whose write failed may have
   left the record missing or replaced (a non-atomic rewrite cut in the
   middle): nothing is committed until a renewal has verified it again, and
   a release then rewrites it only if it still holds our token.

Hand-over: a holder may release its record with a *stamp* (the state it left,
in its layout's words); the next holder gets the record it superseded as
:attr:`Lease.previous` and may skip reading the relay again when the stamp is
that of what it read (doc/protocol.rst, "The hand-over stamp").

Fencing: :meth:`Lease.check` runs before every commit. It fails with LeaseLost
when the lease was taken over, or when the holder's own clock says its last
successful renewal is older than 90% of the timeout: a client suspended
(SIGSTOP, laptop sleep; the boot-time clock counts suspended time) past its
expiry can never commit, even if nobody took the lease meanwhile. Every
placeholder also records the generation it was committed under. The holder's
own clock counts from the instant *before* each write of its record, so its
expiry always comes before any observer's staleness of that record.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Protocol

from escale.errors import (
    CryptoError,
    EscaleError,
    LeaseBusy,
    LeaseLost,
    ProtocolError,
    RelayExists,
    RelayNotFound,
)
from escale.processes import pid_alive
from escale.protocol import layout
from escale.protocol.objects import MAX_OBJECT_BYTES, LeaseRecord
from escale.protocol.sealer import Sealer
from escale.relay import Relay

log = logging.getLogger(__name__)


def boot_clock() -> float:
    """Seconds on a clock that never goes back and counts system suspend."""
    try:
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):  # not Linux
        return time.monotonic()


def boot_id() -> str:
    """Identifies this boot, so persisted clock readings are only reused within it."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return f"pid-namespace-{os.getpid()}"  # never matches a later process


@dataclass(frozen=True)
class Observation:
    """When this observer first saw a lease record in a given state."""

    token: str
    beat: int
    first_seen: float
    boot: str


#: (relay, name) of lease names already reported as foreign by this process
#: The settle, where exclusive create is not atomic, is this many times the
#: longest claim window measured (see rule 2 of the module) ...
SETTLE_FACTOR = 4.0
#: ... and never shorter than this (seconds: the scheduling noise of a busy host) ...
SETTLE_FLOOR = 0.2
#: ... nor longer than this, or a tenth of the lock timeout (the former fixed settle).
SETTLE_CEILING = 2.0
#: How many recent claim windows the settle remembers.
SETTLE_HISTORY = 8
#: Superseded lease generations (older than the previous one) are deleted
#: once this many are listed.
PRUNE_AFTER = 8

_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _report_foreign(relay: Relay, name: str, what: str) -> None:
    """Log a foreign name in ``lease/``: WARNING the first time, then DEBUG."""
    key = (relay.describe(), name)
    with _reported_lock:
        first = key not in _reported
        _reported.add(key)
    log.log(logging.WARNING if first else logging.DEBUG, "relay object %s: %s; ignored", name, what)


@dataclass(frozen=True)
class LeaseListing:
    """What ``lease/`` lists: the generations that are objects (sorted), and the
    highest generation *name* of anything listed (folders included)."""

    generations: list[int]
    highest_name: int

    @property
    def current(self) -> int:
        """The current (highest) generation; 0 when there is none."""
        return self.generations[-1] if self.generations else 0


def list_leases(relay: Relay) -> LeaseListing:
    """List ``lease/`` on ``relay`` (needs no key); an absent folder is empty.

    Names that are not generations (foreign, non-canonical, beyond 63 bits) and
    folders are left out of ``generations`` and reported once each (WARNING,
    then DEBUG): a planted name never stops a pass.
    """
    try:
        entries = relay.list(layout.LEASES)
    except RelayNotFound:
        return LeaseListing([], 0)
    generations: list[int] = []
    highest_name = 0
    for entry in entries:
        generation = layout.parse_lease(entry.name)
        if generation is None:
            _report_foreign(relay, entry.name, "not a lease generation name")
            continue
        highest_name = max(highest_name, generation)
        if entry.is_dir:
            _report_foreign(relay, entry.name, "a folder where a lease record belongs")
            continue
        generations.append(generation)
    generations.sort()
    return LeaseListing(generations, highest_name)


def highest_generation(relay: Relay) -> int:
    """The highest lease generation listed on ``relay`` (0 when none); needs no key."""
    return list_leases(relay).current


def read_record(relay: Relay, sealer: Sealer, generation: int) -> LeaseRecord | None:
    """The record of lease ``generation`` on ``relay``; None when missing.

    Raises ProtocolError or CryptoError when the object does not open or
    decode (forged or foreign), or names another generation.
    """
    name = layout.lease_name(generation)
    try:
        sealed = relay.get_bytes(name, limit=MAX_OBJECT_BYTES)
    except RelayNotFound:
        return None
    record = LeaseRecord.decode(sealer.open(name, sealed), name)
    if record.generation != generation:
        raise ProtocolError(f"relay object {name}: lease generation mismatch", name=name)
    return record


def write_record(relay: Relay, sealer: Sealer, record: LeaseRecord, *, exclusive: bool = False) -> None:
    """Seal ``record`` and put it as lease ``record.generation`` on ``relay``
    (``exclusive``: RelayExists when that generation exists)."""
    name = layout.lease_name(record.generation)
    relay.put_bytes(name, sealer.seal(name, record.encode()), exclusive=exclusive)


def new_record(generation: int, *, holder: str, label: str, operation: str) -> LeaseRecord:
    """A new record of lease ``generation`` written by this process: this host
    and pid, a fresh token, no renewal yet, not released."""
    return LeaseRecord(generation=generation, holder=holder, label=label, host=socket.gethostname(),
                       pid=os.getpid(), operation=operation, token=secrets.token_hex(16), beat=0)


def write_released(
    relay: Relay, sealer: Sealer, record: LeaseRecord, *, reissue: bool = False, exclusive: bool = False
) -> LeaseRecord:
    """Write ``record`` marked *released* on ``relay``; return what was written.

    This is how every lease record ends: a record is never deleted to free the
    lease (generations only grow), it is rewritten released, and the next client
    may take generation ``record.generation + 1`` at once. Uses:

    * the holder giving its lease back, or a contender withdrawing a record that
      never became a lease: ``record`` is its own, token kept;
    * a record written on behalf of no live lease (``escalectl leases --break``,
      a restore or migration continuing the generation numbers): pass a
      :func:`new_record`, or ``reissue=True`` to copy another record's fields
      with a fresh token and this process's host and pid, so that the written
      record is never taken for the one it copies.

    ``exclusive``: only where the generation does not exist yet (RelayExists
    otherwise). Relay errors propagate; nothing is retried here.
    """
    released = replace(record, released=True)
    if reissue:
        released = replace(released, token=secrets.token_hex(16), host=socket.gethostname(), pid=os.getpid())
    write_record(relay, sealer, released, exclusive=exclusive)
    return released


#: tokens of the leases this process holds or is taking: a record of ours
#: (client, host, pid) with any other token is left from an attempt that is over
_live_tokens: set[str] = set()
_live_lock = threading.Lock()


def _hold_token(token: str) -> None:
    with _live_lock:
        _live_tokens.add(token)


def _drop_token(token: str) -> None:
    with _live_lock:
        _live_tokens.discard(token)


def create_decides(relay: Relay) -> bool:
    """Whether an exclusive put of a lease record that returns is the lease
    by itself (rule 2): exclusive create is atomic *and* a record being
    rewritten (a renewal, a release) never goes missing meanwhile (atomic
    put). Where a rewrite is a delete followed by a move (WebDAV's ``MOVE``
    onto an existing target), a contender listing in between sees no record
    of that generation, takes it, and its exclusive put succeeds, only to be
    overwritten an instant later: there the claim settles and reads back,
    as on servers whose exclusive create is a check."""
    return relay.capabilities.exclusive_create and relay.capabilities.atomic_put


def token_is_live(token: str) -> bool:
    """Whether ``token`` belongs to a lease this process holds or is taking."""
    with _live_lock:
        return token in _live_tokens


class Fence(Protocol):
    """What writes to the relay are fenced by: a :class:`Lease`, or a
    :class:`PendingLease` while the claim settles."""

    def check(self) -> None:
        """Raise LeaseLost unless writing is still allowed."""


class PendingLease:
    """Stands for the lease while a claim settles (see
    :meth:`LeaseManager.acquire`'s ``settling``), for writes that are
    harmless whether or not the claim wins: objects that nothing names
    until a commit under the confirmed lease (an orphan otherwise, removed
    by a later sweep). Until :meth:`confirm`, :meth:`check` lets such writes
    start (the caller stops them when the claim is lost); once confirmed, it
    is the lease's own :meth:`Lease.check`. Never enough for a commit: a
    commit takes the :class:`Lease`."""

    def __init__(self) -> None:
        self.lease: Lease | None = None

    def confirm(self, lease: Lease) -> None:
        """The claim won: ``lease`` fences from now on."""
        self.lease = lease

    def check(self) -> None:
        if self.lease is not None:
            self.lease.check()


class Lease:
    """A held lease. Use :meth:`check` before each commit; :meth:`release` at the end."""

    def __init__(self, manager: LeaseManager, record: LeaseRecord, acquired_at: float,
                 previous: LeaseRecord | None = None) -> None:
        self._manager = manager
        self.record = record
        #: the record of the generation this lease superseded, as read when
        #: taking it (None: there was none, or it was not readable)
        self.previous = previous
        self._renewed_at = acquired_at
        self._lost: str | None = None
        #: a renewal's write failed: the record may not be ours any more (where a
        #: rewrite is a delete and a move, a contender's may have landed between
        #: the two): the next commit verifies it first (:meth:`check`)
        self._unverified = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def generation(self) -> int:
        return self.record.generation

    def _age(self) -> float:
        return self._manager.clock() - self._renewed_at

    def _expired(self) -> bool:
        return self._age() > self._manager.timeout * 0.9

    def renew(self, relay: Relay | None = None) -> None:
        """Verify the record is still ours and rewrite it with ``beat + 1``.

        Raises LeaseLost (and the lease stays lost) when our last renewal is too
        old, the record changed hands, or a higher generation exists. A transient
        relay error propagates without losing the lease; the caller retries.
        """
        relay = relay or self._manager.relay
        with self._lock:
            if self._lost:
                raise LeaseLost(self._lost)
            if self._expired():
                self._lose(f"lease generation {self.generation} expired while this client was not renewing it")
            current = self._manager.read(relay, self.generation)
            if current is None or current.token != self.record.token:
                self._lose(f"lease generation {self.generation} was taken over by another client")
            if self._manager.highest(relay) > self.generation:
                self._lose(f"a newer lease generation than {self.generation} exists")
            renewed = replace(self.record, beat=self.record.beat + 1)
            before = self._manager.clock()  # observers cannot see the new beat earlier
            self._unverified = True  # until the write is known to have landed
            self._manager.write(relay, renewed)
            self.record = renewed
            self._renewed_at = before
            self._unverified = False

    def _lose(self, reason: str) -> None:
        self._lost = reason
        _drop_token(self.record.token)
        log.error("%s", reason)
        raise LeaseLost(reason)

    def check(self) -> None:
        """Fence before a commit: raise LeaseLost unless we surely still hold it.

        Renews synchronously when the last renewal is older than a third of the
        timeout (so commits keep the lease alive even without the heartbeat),
        or when the last renewal's write failed (the record is verified to be
        still ours before anything is committed under it).
        """
        if self._lost:
            raise LeaseLost(self._lost)
        if self._expired():
            with self._lock:
                if not self._lost:
                    self._lost = f"lease generation {self.generation} expired before commit"
                    _drop_token(self.record.token)
            raise LeaseLost(self._lost or "lease lost")
        if self._unverified or self._age() > self._manager.timeout / 3:
            self.renew()

    def start_heartbeat(self, relay: Relay) -> None:
        """Renew from a thread using ``relay`` (a connection of its own)."""
        interval = max(0.05, self._manager.timeout / 3)

        def beat() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew(relay)
                except LeaseLost:
                    return
                except EscaleError as exc:
                    log.warning("lease renewal failed, will retry: %s", exc)

        self._thread = threading.Thread(target=beat, name="escale-lease", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def first(self) -> bool:
        """Whether this is the repository's first lease: generation 1, and no
        record was listed before it (no lease was ever taken, so nothing a
        lease guards was ever written)."""
        return self.generation == 1 and self.previous is None

    def previous_stamp(self) -> str | None:
        """The stamp the previous holder left, when its record was released
        with one (see :class:`~escale.protocol.objects.LeaseRecord`); else None."""
        previous = self.previous
        return previous.stamp if previous is not None and previous.released else None

    def release(self, stamp: str | None = None) -> None:
        """Give the lease back (best effort): mark our record released, with
        ``stamp`` (the state this holder leaves, for the next one).

        Where the exclusive put decides (:func:`create_decides`) nobody else
        writes our generation (a contender's put fails), so the record is
        rewritten without being read first; elsewhere, or after a renewal
        whose write failed, it is rewritten only if it still holds our token.
        Never raises: a failed release only means other clients wait for
        staleness; this process itself takes the record over at its next
        attempt (the token is no longer live). The lease is over either way.
        """
        self.stop_heartbeat()
        if self._lost:
            return
        relay = self._manager.relay
        try:
            with self._lock:
                ours = create_decides(relay) and not self._unverified
                if not ours:
                    current = self._manager.read(relay, self.generation)
                    ours = current is not None and current.token == self.record.token
                if ours:
                    write_released(relay, self._manager.sealer, replace(self.record, stamp=stamp))
        except EscaleError as exc:
            log.warning("could not release lease generation %d: %s", self.generation, exc)
        finally:
            self._lost = "lease released"
            _drop_token(self.record.token)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class LeaseManager:
    """Takes the lease of one repository for one client."""

    def __init__(
        self,
        relay: Relay,
        sealer: Sealer,
        *,
        client_id: str,
        label: str,
        timeout: float,
        observations: MutableMapping[int, Observation] | None = None,
        settle: float | None = None,
        clock: Callable[[], float] = boot_clock,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.relay = relay
        self.sealer = sealer
        self.client_id = client_id
        self.label = label
        self.timeout = timeout
        self.observations: MutableMapping[int, Observation] = (
            observations if observations is not None else {}
        )
        #: A fixed settle given by the caller; None: measured (see :attr:`settle`).
        self.fixed_settle = settle
        self._windows: list[float] = []  # recent claim windows, seconds
        self.clock = clock
        self.sleep = sleep
        self.host = socket.gethostname()
        self.boot = boot_id()

    @property
    def settle(self) -> float:
        """Seconds a claim waits before reading its record back: the fixed
        settle when one was given, else 0 where the exclusive put decides
        (:func:`create_decides`), else :meth:`settle_for` of the longest
        recent claim window (the ceiling before any claim was timed)."""
        if self.fixed_settle is not None:
            return self.fixed_settle
        if create_decides(self.relay):
            return 0.0
        return self.settle_for(max(self._windows, default=float("inf")))

    def settle_for(self, window: float) -> float:
        """The settle for a claim window of ``window`` seconds (rule 2 of the
        module): ``SETTLE_FACTOR * window`` within ``[SETTLE_FLOOR, ceiling]``,
        the ceiling being ``min(SETTLE_CEILING, timeout / 10)``."""
        ceiling = min(SETTLE_CEILING, self.timeout / 10)
        return max(min(SETTLE_FLOOR, ceiling), min(ceiling, SETTLE_FACTOR * window))

    def _timed_claim(self, window: float) -> None:
        """Remember one claim window (the exclusive put of a record, timed)."""
        self._windows.append(window)
        del self._windows[:-SETTLE_HISTORY]

    # ----------------------------------------------------------- relay I/O

    def highest(self, relay: Relay) -> int:
        """The highest lease generation on the relay (0 when none)."""
        return highest_generation(relay)

    def read(self, relay: Relay, generation: int) -> LeaseRecord | None:
        """:func:`read_record` with this manager's sealer."""
        return read_record(relay, self.sealer, generation)

    def write(self, relay: Relay, record: LeaseRecord, *, exclusive: bool = False) -> None:
        """:func:`write_record` with this manager's sealer."""
        write_record(relay, self.sealer, record, exclusive=exclusive)

    # ----------------------------------------------------------- taking

    def _is_ours_and_over(self, generation: int, record: LeaseRecord) -> bool:
        """Whether ``record`` is this client's, on this host, from an attempt
        that is over: its process is gone, or it is this process and the token
        is not live here. Our client in another live process still holds it."""
        if record.holder != self.client_id or record.host != self.host:
            return False
        if record.pid == os.getpid():
            if token_is_live(record.token):
                return False  # a Lease of this very process holds it
            log.info("taking over lease generation %d left by an earlier attempt of this process "
                     "(its release did not reach the relay)", generation)
            return True
        if not pid_alive(record.pid):
            log.info("taking over lease generation %d left by our own dead process %d", generation, record.pid)
            return True
        return False

    def _is_free(self, generation: int, record: LeaseRecord | None, unreadable: bool) -> bool:
        """Whether lease ``generation`` may be superseded now (observing it if not)."""
        if record is not None and record.released:
            return True
        if record is not None and self._is_ours_and_over(generation, record):
            return True
        token = record.token if record is not None else ("?unreadable" if unreadable else "?missing")
        beat = record.beat if record is not None else -1
        now = self.clock()
        seen = self.observations.get(generation)
        if seen is None or seen.token != token or seen.beat != beat or seen.boot != self.boot:
            self.observations[generation] = Observation(token, beat, now, self.boot)
            return False
        return now - seen.first_seen > self.timeout

    def acquire(self, operation: str = "sync", *,
                settling: Callable[[int, float], None] | None = None) -> Lease:
        """Take the lease for ``operation``; raise LeaseBusy when another holds it.

        Raises ProtocolError when the generation names are exhausted (a planted
        ``lease/9223372036854775807`` that went stale: only deleting it helps),
        and relay errors as they come; after any failure this attempt has
        withdrawn its record where it could (see the module's rule 3).

        ``settling(generation, seconds)`` is called on this thread when a
        claim this call wrote starts its settle (rule 2; never where the
        exclusive put decides), with the generation claimed and the settle's
        length: the caller may start work that is harmless if the claim is
        lost (see :class:`PendingLease`), and must keep it only for a lease of
        that generation. The settle
        still lasts that long from its start, whatever ``settling`` took. It
        must not raise.
        """
        listing = list_leases(self.relay)
        current = listing.current
        record: LeaseRecord | None = None
        if current:
            unreadable = False
            try:
                record = self.read(self.relay, current)
            except (ProtocolError, CryptoError) as exc:
                log.warning("lease generation %d is not readable (%s); waiting for it to go stale", current, exc)
                record, unreadable = None, True
            if not self._is_free(current, record, unreadable):
                holder = f"{record.label} on {record.host}" if record else "an unknown client"
                raise LeaseBusy(f"relay lease generation {current} is held by {holder}")
        generation = max(current, listing.highest_name) + 1
        if generation > layout.MAX_LEASE_GENERATION:
            name = layout.lease_name(generation - 1)
            raise ProtocolError(f"relay object {name}: no lease generation is left after it (a planted name?); "
                                f"delete it from the relay to let clients take the lease", name=name)
        mine = LeaseRecord(
            generation=generation,
            holder=self.client_id,
            label=self.label,
            host=self.host,
            pid=os.getpid(),
            operation=operation,
            token=secrets.token_hex(16),
            beat=0,
        )
        _hold_token(mine.token)
        started = self.clock()  # before the write: no observer can see the record earlier
        try:
            lease = self._claim(mine, started, record, settling)
        except BaseException:
            _drop_token(mine.token)
            raise
        self._prune(mine.generation, listing.generations)
        log.debug("took relay lease generation %d for %s", mine.generation, operation)
        return lease

    def _claim(self, mine: LeaseRecord, started: float, previous: LeaseRecord | None,
               settling: Callable[[int, float], None] | None = None) -> Lease:
        """Write ``mine`` exclusively and confirm it (rules 2 and 3 of the
        module); ``previous``: the record it supersedes, kept on the lease;
        ``settling``: as in :meth:`acquire`."""
        settled = False  # whether every write that can overwrite ours has landed (rule 2)
        try:
            began = time.monotonic()
            wrote = False
            try:
                self.write(self.relay, mine, exclusive=True)
            except RelayExists:
                pass  # lost the race, or our own write retried after success: read back below
            else:
                wrote = True
                if create_decides(self.relay) and self.fixed_settle is None:
                    # atomic: the put that returned is the lease (nobody who listed
                    # before it can create this generation, nobody who lists after
                    # it may supersede a fresh record); nothing to read back
                    return Lease(self, mine, started, previous)
            # a write that failed otherwise may still have landed: withdrawn below
            self._timed_claim(time.monotonic() - began)
            settle = self.settle
            if settle:
                log.debug("settling %.3fs after claiming lease generation %d", settle, mine.generation)
                if wrote and settling is not None:
                    until = time.monotonic() + settle
                    settling(mine.generation, settle)
                    settle = until - time.monotonic()
                if settle > 0:
                    self.sleep(settle)
            settled = True
            try:
                back = self.read(self.relay, mine.generation)
            except (ProtocolError, CryptoError):
                back = None
            if back is None or back.token != mine.token:
                raise LeaseBusy(f"another client took relay lease generation {mine.generation} first")
            newer = self.highest(self.relay)
            if newer > mine.generation:
                self._withdraw(mine)
                raise LeaseBusy(f"relay lease generation {newer} appeared while taking generation "
                                f"{mine.generation}")
        except EscaleError as exc:
            if not isinstance(exc, LeaseBusy):
                if not settled and self.settle:
                    # our put failed, yet may have landed (its answer lost): a
                    # competitor that checked before it may still overwrite it
                    # up to a settle later; withdrawing sooner could mark *its*
                    # record released after it read it back as its own lease
                    log.debug("settling %.3fs before withdrawing from lease generation %d",
                              self.settle, mine.generation)
                    self.sleep(self.settle)
                self._withdraw(mine)
            raise
        return Lease(self, mine, started, previous)

    def _withdraw(self, mine: LeaseRecord) -> None:
        """Mark our record released if it still holds our token (best effort):
        a record that never became a lease must not block the others."""
        try:
            back = self.read(self.relay, mine.generation)
            if back is not None and back.token == mine.token and not back.released:
                write_released(self.relay, self.sealer, mine)
                log.debug("withdrew from relay lease generation %d", mine.generation)
        except EscaleError as exc:
            log.warning("could not withdraw from relay lease generation %d (others wait until it is stale): %s",
                        mine.generation, exc)

    def _prune(self, generation: int, listed: list[int]) -> None:
        """Delete the generations of ``listed`` (as listed before ours was
        claimed: none older can appear since, generations only grow) that are
        older than ``generation - 1``, once there are :data:`PRUNE_AFTER` of
        them (best effort: one request per pass would otherwise go to it);
        folders and foreign names are left alone."""
        old_ones = [g for g in listed if g < generation - 1]
        if len(old_ones) < PRUNE_AFTER:
            return
        try:
            for old in old_ones:
                self.relay.delete(layout.lease_name(old))
                self.observations.pop(old, None)
        except EscaleError as exc:
            log.debug("pruning old leases: %s", exc)
