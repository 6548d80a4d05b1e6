"""The repository lease: one writer at a time, safe on weak servers.

Objects: ``lease/<generation>`` (see :mod:`escale.protocol.layout`), each a sealed
:class:`LeaseRecord`, and the claims ``lease/<generation>-<token>`` (rule 2),
each holding the record it announces. The current lease is the highest
generation listed, claims included.

Names: a generation is named by :func:`layout.lease_name` and read back by
:func:`layout.parse_lease` (any number of digits, canonical spelling, at most
``2**63 - 1``); a claim by :func:`layout.lease_claim_name` and
:func:`layout.parse_lease_claim`. Anything else listed in ``lease/`` (a
folder, a foreign or non-canonical name, a number beyond 63 bits) is ignored
with one warning; the next generation is still chosen above every generation
*name* listed, claims and folders included, so that it can be written, listed
and parsed.

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
2. Where the backend's exclusive put decides by itself (:func:`create_decides`:
   exclusive create *and* rewrites atomic), ``lease/<g+1>`` is created with an
   exclusive put, and a put that returns is the lease: nothing is read back (a
   put that failed with RelayExists is read back: it may be our own write,
   retried). Elsewhere (check-then-put servers, the rclone remotes, WebDAV
   whose rewrite is a delete and a move) a contender first **claims**
   ``g+1``: it puts ``lease/<g+1>-<token>`` (:func:`layout.lease_claim_name`),
   a name no other writer takes, with its record sealed in it, then lists
   ``lease/``. It goes on only if that listing shows its own claim and
   neither another claim of ``g+1`` or above nor a record of ``g+1`` or
   above; then it writes the record of ``g+1`` (exclusive put), reads it back
   to confirm, and holds the lease. Otherwise it deletes its claim and backs off (LeaseBusy). Every
   supported server lists every write that has returned, so of two
   contenders the second to list sees the first's claim: two can never both
   go on (both may back off: contenders in lock step try again later, after
   a pause with some jitter, :mod:`escale.protocol.lease_wait`). Nothing
   depends on timing, so a contender that stalls anywhere cannot overwrite a
   lease another took (the window of the former settle-and-read-back rule,
   seen on 2026-12-01). The holder's claim stays until the generation is
   pruned: on WebDAV the holder's record is missing for an instant while it
   is rewritten, and a contender listing then still finds the claim.
   A generation that has claims but no record (a contender between its claim
   and its record, one that died there, or a rewrite's instant) is held like
   a record: it is free when every claim is ours and over, or when this
   observer has seen the same set of claims for longer than ``lock
   timeout``; the next contender then claims the generation above it.
3. A contender that claimed and does not become the holder *withdraws*: it
   deletes its claim. One whose record write failed (the write may have
   landed, its answer lost) rewrites the record as released instead: it won
   the claims, so nobody else writes that generation. A contender that dies
   (or loses the relay) before withdrawing leaves a claim or a record that
   goes stale like a dead holder's.
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

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field, replace

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


#: Superseded lease generations (older than the previous one) are deleted,
#: with their claims, once this many are listed.
PRUNE_AFTER = 8

#: A generation with more claims than this and no record is not read to see
#: whether they are all ours (planted ones would cost a request each): it is
#: left to go stale.
MAX_CLAIMS_READ = 8

#: (relay, name) of lease names already reported as foreign by this process
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
    """What ``lease/`` lists: the generations that are records (sorted), the
    claims (generation to the tokens claiming it), and the highest generation
    *name* of anything listed (claims and folders included)."""

    generations: list[int]
    highest_name: int
    claims: dict[int, list[str]] = field(default_factory=dict)

    @property
    def current(self) -> int:
        """The highest generation that has a record; 0 when there is none."""
        return self.generations[-1] if self.generations else 0

    @property
    def newest(self) -> int:
        """The highest generation with a record or a claim; 0 when there is none."""
        return max(self.current, max(self.claims, default=0))

    def rivals(self, generation: int, token: str) -> list[str]:
        """The claims of ``generation`` or above other than ``token``'s."""
        return [layout.lease_claim_name(g, t) for g, tokens in self.claims.items() if g >= generation
                for t in tokens if t != token]


def list_leases(relay: Relay) -> LeaseListing:
    """List ``lease/`` on ``relay`` (needs no key); an absent folder is empty.

    Names that are neither generations nor claims (foreign, non-canonical,
    beyond 63 bits) and folders are left out and reported once each (WARNING,
    then DEBUG): a planted name never stops a pass.
    """
    try:
        entries = relay.list(layout.LEASES)
    except RelayNotFound:
        return LeaseListing([], 0)
    generations: list[int] = []
    claims: dict[int, list[str]] = {}
    highest_name = 0
    for entry in entries:
        generation = layout.parse_lease(entry.name)
        claim = layout.parse_lease_claim(entry.name) if generation is None else None
        number = generation if generation is not None else claim[0] if claim is not None else None
        if number is None:
            _report_foreign(relay, entry.name, "not a lease generation name")
            continue
        highest_name = max(highest_name, number)
        if entry.is_dir:
            _report_foreign(relay, entry.name, "a folder where a lease record belongs")
            continue
        if claim is not None:
            claims.setdefault(number, []).append(claim[1])
        else:
            generations.append(number)
    generations.sort()
    return LeaseListing(generations, highest_name, claims)


def highest_generation(relay: Relay) -> int:
    """The highest lease generation listed on ``relay``, records and claims
    (0 when none); needs no key."""
    return list_leases(relay).newest


def read_record(relay: Relay, sealer: Sealer, generation: int) -> LeaseRecord | None:
    """The record of lease ``generation`` on ``relay``; None when missing.

    Raises ProtocolError or CryptoError when the object does not open or
    decode (forged or foreign), or names another generation.
    """
    return _read_sealed(relay, sealer, layout.lease_name(generation), generation, None)


def read_claim(relay: Relay, sealer: Sealer, generation: int, token: str) -> LeaseRecord | None:
    """The record sealed in the claim of ``generation`` by ``token`` on
    ``relay``; None when missing. Raises ProtocolError or CryptoError when it
    does not open or decode, or names another generation or token."""
    return _read_sealed(relay, sealer, layout.lease_claim_name(generation, token), generation, token)


def _read_sealed(relay: Relay, sealer: Sealer, name: str, generation: int, token: str | None) -> LeaseRecord | None:
    """The record in object ``name``, which must be of ``generation`` (and of
    ``token`` when given); None when the object is missing."""
    try:
        sealed = relay.get_bytes(name, limit=MAX_OBJECT_BYTES)
    except RelayNotFound:
        return None
    record = LeaseRecord.decode(sealer.open(name, sealed), name)
    if record.generation != generation or (token is not None and record.token != token):
        raise ProtocolError(f"relay object {name}: lease record does not match its name", name=name)
    return record


def write_record(relay: Relay, sealer: Sealer, record: LeaseRecord, *, exclusive: bool = False) -> None:
    """Seal ``record`` and put it as lease ``record.generation`` on ``relay``
    (``exclusive``: RelayExists when that generation exists)."""
    name = layout.lease_name(record.generation)
    relay.put_bytes(name, sealer.seal(name, record.encode()), exclusive=exclusive)


def write_claim(relay: Relay, sealer: Sealer, record: LeaseRecord) -> str:
    """Seal ``record`` and put it as its writer's claim of generation
    ``record.generation`` on ``relay`` (a name no other writer takes);
    returns the claim's name."""
    name = layout.lease_claim_name(record.generation, record.token)
    relay.put_bytes(name, sealer.seal(name, record.encode()))
    return name


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
    overwritten an instant later: there contenders claim first (rule 2), as
    on servers whose exclusive create is a check, and the holder's claim,
    which is never rewritten, shows the generation taken meanwhile."""
    return relay.capabilities.exclusive_create and relay.capabilities.atomic_put


def token_is_live(token: str) -> bool:
    """Whether ``token`` belongs to a lease this process holds or is taking."""
    with _live_lock:
        return token in _live_tokens


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
        rewritten without being read first; elsewhere (claims keep others
        off it too, but a rewrite may not be atomic), or after a renewal
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
        claims: bool | None = None,
        clock: Callable[[], float] = boot_clock,
    ) -> None:
        self.relay = relay
        self.sealer = sealer
        self.client_id = client_id
        self.label = label
        self.timeout = timeout
        self.observations: MutableMapping[int, Observation] = (
            observations if observations is not None else {}
        )
        #: Whether a generation is claimed before its record is written (rule
        #: 2 of the module); None: wherever the exclusive put does not decide.
        self.fixed_claims = claims
        self.clock = clock
        self.host = socket.gethostname()
        self.boot = boot_id()

    @property
    def claims(self) -> bool:
        """Whether this manager claims a generation before writing its record:
        as given, else wherever the exclusive put does not decide by itself
        (:func:`create_decides`)."""
        return self.fixed_claims if self.fixed_claims is not None else not create_decides(self.relay)

    # ----------------------------------------------------------- relay I/O

    def highest(self, relay: Relay) -> int:
        """The highest lease generation on the relay, records and claims (0 when none)."""
        return highest_generation(relay)

    def read(self, relay: Relay, generation: int) -> LeaseRecord | None:
        """:func:`read_record` with this manager's sealer."""
        return read_record(relay, self.sealer, generation)

    def write(self, relay: Relay, record: LeaseRecord, *, exclusive: bool = False) -> None:
        """:func:`write_record` with this manager's sealer."""
        write_record(relay, self.sealer, record, exclusive=exclusive)

    def read_claim(self, generation: int, token: str) -> LeaseRecord | None:
        """:func:`read_claim` with this manager's relay and sealer."""
        return read_claim(self.relay, self.sealer, generation, token)

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
        return self._stale(generation, token, record.beat if record is not None else -1)

    def _claims_free(self, generation: int, tokens: list[str]) -> bool:
        """Whether ``generation``, which has the claims ``tokens`` and no
        record, may be superseded now (observing it if not): every claim is
        ours and over, or this same set of claims has been seen for longer
        than the timeout. A claim that does not open counts as another
        client's, and so does one that vanished since the listing (the next
        attempt lists again)."""
        if 0 < len(tokens) <= MAX_CLAIMS_READ and all(self._claim_is_ours_and_over(generation, token)
                                                      for token in tokens):
            return True
        claims = hashlib.sha256(" ".join(sorted(tokens)).encode("ascii")).hexdigest()[:32]
        return self._stale(generation, f"?claims {claims}", -1)

    def _claim_is_ours_and_over(self, generation: int, token: str) -> bool:
        """Whether the claim of ``generation`` by ``token`` is this client's,
        from an attempt that is over (:meth:`_is_ours_and_over`); False when
        it vanished or does not open."""
        try:
            claim = self.read_claim(generation, token)
        except (ProtocolError, CryptoError) as exc:
            log.warning("a claim of lease generation %d is not readable (%s)", generation, exc)
            return False
        return claim is not None and self._is_ours_and_over(generation, claim)

    def _stale(self, generation: int, token: str, beat: int) -> bool:
        """Whether ``generation`` has been seen as ``(token, beat)`` for longer
        than the timeout on this boot; a first sight (or a change) is noted."""
        now = self.clock()
        seen = self.observations.get(generation)
        if seen is None or seen.token != token or seen.beat != beat or seen.boot != self.boot:
            self.observations[generation] = Observation(token, beat, now, self.boot)
            return False
        return now - seen.first_seen > self.timeout

    def acquire(self, operation: str = "sync") -> Lease:
        """Take the lease for ``operation``; raise LeaseBusy when another holds
        it (or claims it, or claimed it at the same moment as we did).

        Raises ProtocolError when the generation names are exhausted (a planted
        ``lease/9223372036854775807`` that went stale: only deleting it helps),
        and relay errors as they come; after any failure this attempt has
        withdrawn its claim or record where it could (see the module's rule 3).
        """
        listing = list_leases(self.relay)
        current = listing.newest
        record: LeaseRecord | None = None
        if current and current not in listing.generations:
            if not self._claims_free(current, listing.claims[current]):
                raise LeaseBusy(f"relay lease generation {current} is being claimed by another client")
        elif current:
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
        mine = new_record(generation, holder=self.client_id, label=self.label, operation=operation)
        _hold_token(mine.token)
        started = self.clock()  # before the first write: no observer can see the record earlier
        try:
            lease = self._claim(mine, started, record) if self.claims else self._create(mine, started, record)
        except BaseException:
            _drop_token(mine.token)
            raise
        self._prune(mine.generation, listing)
        log.debug("took relay lease generation %d for %s", mine.generation, operation)
        return lease

    def _create(self, mine: LeaseRecord, started: float, previous: LeaseRecord | None) -> Lease:
        """Where the exclusive put decides: put ``mine`` exclusively; the put
        that returns is the lease (rule 2). A put refused as existing is read
        back (our own write, retried after a lost answer, is still ours); one
        that failed otherwise is withdrawn (rule 3)."""
        try:
            self.write(self.relay, mine, exclusive=True)
        except RelayExists:
            try:
                back = self.read(self.relay, mine.generation)
            except (ProtocolError, CryptoError):
                back = None
            if back is None or back.token != mine.token:
                raise LeaseBusy(f"another client took relay lease generation {mine.generation} first") from None
        except EscaleError:
            self._withdraw(mine)  # the put may have landed, its answer lost
            raise
        return Lease(self, mine, started, previous)

    def _withdraw(self, mine: LeaseRecord) -> None:
        """Mark our record released if it holds our token (best effort): a
        record that never became a lease must not block the others. Safe only
        where nobody else writes ``mine``'s generation once ours landed."""
        try:
            back = self.read(self.relay, mine.generation)
            if back is not None and back.token == mine.token and not back.released:
                write_released(self.relay, self.sealer, mine)
                log.debug("withdrew from relay lease generation %d", mine.generation)
        except EscaleError as exc:
            log.warning("could not withdraw from relay lease generation %d (others wait until it is stale): %s",
                        mine.generation, exc)

    def _claim(self, mine: LeaseRecord, started: float, previous: LeaseRecord | None) -> Lease:
        """Claim ``mine``'s generation, and write its record if no other
        claim or record of it (or above) is listed (rules 2 and 3)."""
        generation = mine.generation
        name = layout.lease_claim_name(generation, mine.token)
        try:
            write_claim(self.relay, self.sealer, mine)
            listing = list_leases(self.relay)
            if mine.token not in listing.claims.get(generation, []):
                log.warning("relay object %s: our lease claim is not listed right after it was written; "
                            "this relay's listings lag behind its writes, which the lease relies on", name)
                raise LeaseBusy(f"our claim of relay lease generation {generation} is not listed yet")
            rivals = listing.rivals(generation, mine.token)
            if rivals:
                raise LeaseBusy(f"another client claimed relay lease generation {generation} at the same time "
                                f"({rivals[0]})")
            if listing.current >= generation:
                raise LeaseBusy(f"relay lease generation {listing.current} appeared while claiming "
                                f"generation {generation}")
        except EscaleError:
            self._drop_claim(name)
            raise
        try:
            try:
                self.write(self.relay, mine, exclusive=True)
            except RelayExists:
                pass  # our own write retried after a lost answer, or a contender stalled past the timeout
            try:
                back = self.read(self.relay, generation)  # read back to confirm
            except (ProtocolError, CryptoError):
                back = None
        except EscaleError:
            # the record may have landed, its answer lost: mark it released
            # (we won the claims: nobody else writes this generation)
            try:
                write_released(self.relay, self.sealer, mine)
            except EscaleError as exc:
                log.warning("could not withdraw from relay lease generation %d (others wait until it is "
                            "stale): %s", generation, exc)
            raise
        if back is None or back.token != mine.token:
            raise LeaseBusy(f"relay lease generation {generation} does not read back as ours although we "
                            f"alone claimed it (a contender that stalled past the lock timeout?)")
        return Lease(self, mine, started, previous)

    def _drop_claim(self, name: str) -> None:
        """Delete our claim ``name`` (best effort): a claim that did not
        become a lease must not block the others until it is stale."""
        try:
            self.relay.delete(name)
            log.debug("withdrew claim %s", name)
        except RelayNotFound:
            pass
        except EscaleError as exc:
            log.warning("could not withdraw claim %s (others wait until it is stale): %s", name, exc)

    def _prune(self, generation: int, listing: LeaseListing) -> None:
        """Delete the records and claims of ``listing`` (as listed before ours
        was claimed: none older can appear since, generations only grow) that
        are older than ``generation - 1``, once :data:`PRUNE_AFTER` records
        are (best effort: one request per pass would otherwise go to it);
        folders and foreign names are left alone."""
        old_ones = [g for g in listing.generations if g < generation - 1]
        if len(old_ones) < PRUNE_AFTER:
            return
        old_claims = [layout.lease_claim_name(g, t) for g, tokens in listing.claims.items()
                      if g < generation - 1 for t in tokens]
        try:
            for old in old_ones:
                self.relay.delete(layout.lease_name(old))
                self.observations.pop(old, None)
            for claim in old_claims:
                self.relay.delete(claim)
        except EscaleError as exc:
            log.debug("pruning old leases: %s", exc)
