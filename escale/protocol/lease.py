"""The repository lease: one writer at a time, safe on weak servers.

Objects: ``lease/<generation>`` (see :mod:`escale.protocol.layout`), each a sealed
:class:`LeaseRecord`. The current lease is the highest generation listed.

Taking the lease (generation ``g+1`` after ``g``):

1. The current record must be released, ours from a process that is gone, or
   *stale*: the observer has seen the same ``(token, beat)`` for longer than
   ``lock timeout`` on its own boot-time clock. Remote clocks are never read. An
   unreadable record (forged, wrong key) counts as held by an unknown client and
   goes stale the same way: an outsider can delay a client, not fool it.
2. ``lease/<g+1>`` is created with an exclusive put. Where the backend's exclusive
   create is atomic, exactly one contender wins generation ``g+1``. Where it is
   not (check-then-put servers), the winner waits ``settle`` seconds, then reads
   its record back and lists the folder: it holds the lease only if its token is
   still there and no higher generation appeared.
3. The holder renews (rewrites its record with ``beat + 1``) every third of the
   timeout, from a heartbeat thread on its own connection, and verifies the
   record is still its own each time.

Fencing: :meth:`Lease.check` runs before every commit. It fails with LeaseLost
when the lease was taken over, or when the holder's own clock says its last
successful renewal is older than 90% of the timeout: a client suspended
(SIGSTOP, laptop sleep; the boot-time clock counts suspended time) past its
expiry can never commit, even if nobody took the lease meanwhile. Every
placeholder also records the generation it was committed under.
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

from escale.errors import (
    CryptoError,
    EscaleError,
    LeaseBusy,
    LeaseLost,
    ProtocolError,
    RelayExists,
    RelayNotFound,
)
from escale.protocol import layout
from escale.protocol.envelope import Sealer
from escale.protocol.objects import LeaseRecord
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def highest_generation(relay: Relay) -> int:
    """The highest lease generation listed on ``relay`` (0 when none); needs no key."""
    try:
        entries = relay.list(layout.LEASES)
    except RelayNotFound:
        return 0
    return max((g for e in entries if (g := layout.parse_lease(e.name)) is not None), default=0)


class Lease:
    """A held lease. Use :meth:`check` before each commit; :meth:`release` at the end."""

    def __init__(self, manager: LeaseManager, record: LeaseRecord, acquired_at: float) -> None:
        self._manager = manager
        self.record = record
        self._renewed_at = acquired_at
        self._lost: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def generation(self) -> int:
        return self.record.generation

    @property
    def lost(self) -> bool:
        return self._lost is not None

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
            self._manager.write(relay, renewed)
            self.record = renewed
            self._renewed_at = self._manager.clock()

    def _lose(self, reason: str) -> None:
        self._lost = reason
        log.error("%s", reason)
        raise LeaseLost(reason)

    def check(self) -> None:
        """Fence before a commit: raise LeaseLost unless we surely still hold it.

        Renews synchronously when the last renewal is older than a third of the
        timeout (so commits keep the lease alive even without the heartbeat).
        """
        if self._lost:
            raise LeaseLost(self._lost)
        if self._expired():
            with self._lock:
                if not self._lost:
                    self._lost = f"lease generation {self.generation} expired before commit"
            raise LeaseLost(self._lost or "lease lost")
        if self._age() > self._manager.timeout / 3:
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

    def release(self) -> None:
        """Give the lease back (best effort): mark our record released.

        Never raises: a failed release only means others wait for staleness.
        """
        self.stop_heartbeat()
        if self._lost:
            return
        try:
            with self._lock:
                current = self._manager.read(self._manager.relay, self.generation)
                if current is not None and current.token == self.record.token:
                    self._manager.write(self._manager.relay, replace(self.record, released=True))
                self._lost = "lease released"
        except EscaleError as exc:
            log.warning("could not release lease generation %d: %s", self.generation, exc)

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
        if settle is None:
            settle = 0.0 if relay.capabilities.exclusive_create else min(2.0, timeout / 10)
        self.settle = settle
        self.clock = clock
        self.sleep = sleep
        self.host = socket.gethostname()
        self.boot = boot_id()

    # ----------------------------------------------------------- relay I/O

    def highest(self, relay: Relay) -> int:
        """The highest lease generation on the relay (0 when none)."""
        return highest_generation(relay)

    def read(self, relay: Relay, generation: int) -> LeaseRecord | None:
        """The record of ``generation``; None when missing.

        Raises ProtocolError or CryptoError when the object does not open or
        decode (forged or foreign).
        """
        name = layout.lease_name(generation)
        try:
            sealed = relay.get_bytes(name)
        except RelayNotFound:
            return None
        record = LeaseRecord.decode(self.sealer.open(name, sealed), name)
        if record.generation != generation:
            raise ProtocolError(f"relay object {name}: lease generation mismatch", name=name)
        return record

    def write(self, relay: Relay, record: LeaseRecord, *, exclusive: bool = False) -> None:
        name = layout.lease_name(record.generation)
        relay.put_bytes(name, self.sealer.seal(name, record.encode()), exclusive=exclusive)

    # ----------------------------------------------------------- taking

    def _is_free(self, generation: int, record: LeaseRecord | None, unreadable: bool) -> bool:
        """Whether lease ``generation`` may be superseded now (observing it if not)."""
        if record is not None and record.released:
            return True
        if (
            record is not None
            and record.holder == self.client_id
            and record.host == self.host
            and record.pid != os.getpid()
            and not _pid_alive(record.pid)
        ):
            log.info("taking over lease generation %d left by our own dead process %d", generation, record.pid)
            return True
        token = record.token if record is not None else ("?unreadable" if unreadable else "?missing")
        beat = record.beat if record is not None else -1
        now = self.clock()
        seen = self.observations.get(generation)
        if seen is None or seen.token != token or seen.beat != beat or seen.boot != self.boot:
            self.observations[generation] = Observation(token, beat, now, self.boot)
            return False
        return now - seen.first_seen > self.timeout

    def acquire(self, operation: str = "sync") -> Lease:
        """Take the lease for ``operation``; raise LeaseBusy when another holds it."""
        current = self.highest(self.relay)
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
        token = secrets.token_hex(16)
        mine = LeaseRecord(
            generation=current + 1,
            holder=self.client_id,
            label=self.label,
            host=self.host,
            pid=os.getpid(),
            operation=operation,
            token=token,
            beat=0,
        )
        try:
            self.write(self.relay, mine, exclusive=True)
        except RelayExists:
            pass  # lost the race, or our own write retried after success: read back below
        if self.settle:
            self.sleep(self.settle)
        try:
            back = self.read(self.relay, mine.generation)
        except (ProtocolError, CryptoError):
            back = None
        if back is None or back.token != token or self.highest(self.relay) != mine.generation:
            raise LeaseBusy(f"another client took relay lease generation {mine.generation} first")
        lease = Lease(self, mine, self.clock())
        self._prune(mine.generation)
        log.debug("took relay lease generation %d for %s", mine.generation, operation)
        return lease

    def _prune(self, generation: int) -> None:
        """Delete lease generations older than ``generation - 1`` (best effort)."""
        try:
            for entry in self.relay.list(layout.LEASES):
                old = layout.parse_lease(entry.name)
                if old is not None and old < generation - 1:
                    self.relay.delete(entry.name)
                    self.observations.pop(old, None)
        except EscaleError as exc:
            log.debug("pruning old leases: %s", exc)
