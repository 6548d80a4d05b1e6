"""Several transfers at once: payloads moved on up to ``transfers`` connections.

A pass moves payloads one at a time on its main connection unless the relay
is a network one and ``transfers`` is above 1 (:func:`transfer_connections`).
Then:

* **downloads** (:class:`Downloads`) run ahead of the pass's local actions:
  up to ``transfers`` worker threads, each with its own connection (opened
  from the client's relay factory on its first job, closed at the end),
  download payloads and decrypt and verify each as it arrives, into a
  nameless plaintext file of the state folder
  (:func:`escale.sync.localfs.new_prepared`; :meth:`Repository.fetch_payload_on`:
  no spool file for the sealed payload, a small one is read into memory
  first): the CPU work of a download runs on the workers too. The executor still applies every action
  in the plan's order on its own thread: it takes each verified file when it
  reaches its action, re-checks the user's file and links the prepared file
  into place (:func:`escale.sync.localfs.install_prepared`: a hard link when
  the state folder is on the local folder's file system, else a copy), with
  the guarantees of a serial pass's atomic write. A payload that fails
  verification is refused before the local folder is touched. Workers never
  touch the local folder, the state database or the relay state.
* **uploads** (:class:`Uploads`) run under the pass's lease: the executor
  checks each pushed file on its own thread (the plan, the relay version, the
  file as scanned, on the opened file), then a worker seals the opened file
  while it uploads it, without a spool file (:meth:`Repository.send_reserved`,
  for a file above :data:`~escale.protocol.repository.SPOOL_IN_MEMORY`), or
  seals it in memory first (:meth:`Repository.seal_reserved`); with a ``disk
  quota``, the executor checks the quota against the sealed size announced
  beforehand and reserves it (:meth:`Repository.reserve_stage`), and seals a
  small file itself (its sealed size is known once sealed). The
  executor commits each placeholder on the main connection, in the plan's
  order, only once its payload upload has returned: data before the
  metadata that points to it, fenced by the lease as before.

* in the index layout, **big objects** go the same way while the pass packs
  the small files into pages: :class:`BigUploads` uploads each big file the
  executor checked and opened (sealed while sent, no spool) and the executor
  packs its entry once the upload returned, so the index delta naming it
  follows its data; :class:`Downloads` fetches big objects ahead, each opened
  and verified by its worker as it arrives (:meth:`Repository.fetch_on`),
  while pages are still fetched by the pass.

Memory does not grow with file sizes or counts: content goes through in
chunks, and at most ``transfers + 1`` payloads are staged or downloaded
ahead at any time (so the state folder holds at most that many prepared
files); where small payloads go up in
groups (:class:`Uploads`), at most ``transfers + 1`` groups of them, each
payload of at most 64 KiB sealed in memory.
A worker's failure is raised, as the very exception the serial path raises,
when the executor reaches that action; on the way out every job still queued
is dropped, a transfer in progress stops at its next chunk, and every worker
connection is closed (:meth:`TransferPool.close`).
"""

from __future__ import annotations

import collections
import errno
import io
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import BinaryIO, Generic, TypeVar, cast

from escale.errors import DiskFull, EscaleError, IntegrityError, LocalError, ObjectTooLarge
from escale.protocol.lease import Lease
from escale.protocol.objects import Placeholder
from escale.protocol.repository import (
    SMALL_PAYLOAD,
    SMALL_PAYLOAD_SEALED,
    BigReservation,
    BigUpload,
    LocalVersion,
    RelayState,
    Repository,
    StagedPayload,
)
from escale.relay import Relay
from escale.sync import localfs

log = logging.getLogger(__name__)

T = TypeVar("T")
#: what an upload job gives: per member, its sealed payload or what sealing it raised
_Sealed = list[StagedPayload | BaseException]

#: Relay schemes on which transfers run one at a time whatever ``transfers``
#: says: a local or mounted folder gains nothing from several at once (see
#: doc/performance.rst, "Transfers at once").
SERIAL_SCHEMES = frozenset({"file"})

#: Small payloads go up this many at a time where the relay declares a group
#: put cheap (see :class:`Uploads`).
PAYLOAD_GROUP = 32

#: Small payloads fetched by one group read (see :class:`Downloads`) hold at
#: most this many plaintext bytes together (and at most :data:`PAYLOAD_GROUP`
#: of them), so that a worker holds about this much sealed data in memory.
FETCH_GROUP_BYTES = 1 << 20

#: a pool's list of submitted jobs is pruned of finished ones once it holds
#: this many, then at twice what was left (so each submit costs O(1) on average)
PRUNE_MIN = 64


def transfer_connections(transfers: int, relay: Relay) -> int:
    """How many transfers a pass on ``relay`` runs at once: ``transfers``
    (the client's setting) on network relays, 1 on :data:`SERIAL_SCHEMES`."""
    if relay.scheme in SERIAL_SCHEMES:
        return 1
    return max(1, transfers)


class Abandoned(Exception):
    """Raised inside a worker's transfer whose result is no longer wanted
    (the pass stops or failed): it ends that transfer at its next chunk.
    Never leaves this module's pool."""


class Job(Generic[T]):
    """One unit of work for the pool and its outcome."""

    def __init__(self, work: Callable[[Relay, threading.Event], T]) -> None:
        self.work = work
        self.future: Future[T] = Future()
        #: set when the result is no longer wanted: the work stops at its next chunk
        self.abandoned = threading.Event()


class TransferPool:
    """Up to ``count`` worker threads, each with its own relay connection.

    ``open_relay`` makes a new, unopened connection to the same relay (the
    client's relay factory: retry and bandwidth limit included). A worker
    opens it on its first job and keeps it for the next ones; after a job
    that raised, it drops it (the next job reconnects). A worker that cannot
    connect while another worker holds a connection (a server that limits
    connections per client) hands its job back and ends: the others carry on
    with fewer transfers at once; when none is connected, the job fails with
    the connection's error. Jobs start in the order submitted. :meth:`close`
    must be called (it joins every worker).
    """

    def __init__(self, open_relay: Callable[[], Relay], count: int, *, name: str = "transfer") -> None:
        self._open_relay = open_relay
        self._count = max(1, count)
        self._name = name
        self._jobs: queue.SimpleQueue[Job[object] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        #: the jobs submitted, finished ones pruned now and then (see submit); close abandons them
        self._pending: list[Job[object]] = []
        self._prune_at = PRUNE_MIN
        #: the jobs submitted and not finished (what decides whether another worker starts)
        self._unfinished = 0
        self._closed = False
        self._lock = threading.Lock()
        #: workers holding an open connection, and workers that gave up connecting
        self._connected = 0
        self._retired = 0

    def submit(self, work: Callable[[Relay, threading.Event], T]) -> Job[T]:
        """Queue ``work(relay, abandoned)``; it runs on a worker's connection.
        ``abandoned`` is set when the result is no longer wanted: long work
        checks it between chunks and raises :class:`Abandoned`."""
        if self._closed:
            raise RuntimeError("transfer pool used after close")
        job: Job[T] = Job(work)
        with self._lock:
            if len(self._pending) >= self._prune_at:  # amortised: not a walk of every job per submit
                self._pending = [j for j in self._pending if not j.future.done()]
                self._prune_at = max(PRUNE_MIN, 2 * len(self._pending))
            self._pending.append(cast(Job[object], job))
            self._unfinished += 1
            spawn = len(self._threads) < self._count and self._unfinished > len(self._threads) - self._retired
        # outside the lock: the callback runs at once if the job is already done
        cast(Job[object], job).future.add_done_callback(self._finished)
        if spawn:
            self._spawn(connect_first=False)
        self._jobs.put(cast(Job[object], job))
        return job

    def connect_ahead(self) -> None:
        """Start every worker now, each opening its connection at once
        instead of on its first job. A worker that cannot connect then tries
        again on its first job, which goes on as the class says (handed back
        to a connected worker, or failed with that second attempt's error)."""
        if self._closed:
            raise RuntimeError("transfer pool used after close")
        while len(self._threads) < self._count:
            self._spawn(connect_first=True)

    def _spawn(self, *, connect_first: bool) -> None:
        """Start one more worker (see :meth:`_work`)."""
        thread = threading.Thread(target=self._work, args=(connect_first,),
                                  name=f"escale-{self._name}-{len(self._threads) + 1}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _work(self, connect_first: bool = False) -> None:
        relay: Relay | None = None
        if connect_first:
            try:
                relay = self._connect()
            except Exception as exc:  # noqa: BLE001 - tried again, and reported, by the first job
                log.debug("%s: connection not opened ahead: %s", self._name, exc)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if not job.future.set_running_or_notify_cancel():
                    continue
                if job.abandoned.is_set():
                    job.future.set_exception(Abandoned())
                    continue
                if relay is None:
                    try:
                        relay = self._connect()
                    except BaseException as exc:  # noqa: BLE001 - handed back, or to the waiting thread
                        if self._hand_back(job, exc):
                            return
                        job.future.set_exception(exc)
                        continue
                try:
                    result = job.work(relay, job.abandoned)
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread as is
                    job.future.set_exception(exc)
                    # a connection whose transfer failed (or was cut short) may be out of step
                    self._disconnect(relay)
                    relay = None
                else:
                    job.future.set_result(result)
        finally:
            if relay is not None:
                self._disconnect(relay)

    def _finished(self, _: Future[object]) -> None:
        with self._lock:
            self._unfinished -= 1

    def _hand_back(self, job: Job[object], exc: BaseException) -> bool:
        """After ``job``'s worker failed to connect: if another worker is
        connected, queue ``job`` again for it and retire this worker (True)."""
        with self._lock:
            if self._connected == 0:
                return False
            self._retired += 1
            left = self._connected
        log.warning("%s: could not open another connection (%s); going on with %d transfer(s) at once",
                    self._name, exc, left)
        # the future is RUNNING: a fresh job carries the same work, and hands its outcome over
        again: Job[object] = Job(job.work)
        again.abandoned = job.abandoned

        def relay_outcome(done: Future[object]) -> None:
            if job.future.done():
                return
            if done.cancelled():
                job.future.set_exception(Abandoned())
            elif done.exception() is not None:
                job.future.set_exception(cast(BaseException, done.exception()))
            else:
                job.future.set_result(done.result())

        again.future.add_done_callback(relay_outcome)
        with self._lock:
            self._pending.append(again)
        self._jobs.put(again)
        return True

    def _disconnect(self, relay: Relay) -> None:
        relay.close()
        with self._lock:
            self._connected -= 1

    def _connect(self) -> Relay:
        relay = self._open_relay()
        try:
            relay.open()
        except BaseException:
            relay.close()
            raise
        with self._lock:
            self._connected += 1
        return relay

    def close(self) -> None:
        """Drop the jobs not started, stop those running at their next chunk,
        wait for every worker and close its connection. Idempotent; results
        of finished jobs stay readable."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            jobs = list(self._pending)
        for job in jobs:
            job.abandoned.set()
            job.future.cancel()
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        with self._lock:
            jobs = list(self._pending)
        for job in jobs:  # handed back after the workers left: never run
            if not job.future.done() and not job.future.cancel():
                job.future.set_exception(Abandoned())


class _Watched:
    """A spool file whose reads and writes stop once ``abandoned`` is set."""

    def __init__(self, inner: BinaryIO, abandoned: threading.Event) -> None:
        self._inner = inner
        self._abandoned = abandoned

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._abandoned.is_set():
            raise Abandoned()
        return self._inner.write(data)

    def read(self, size: int = -1) -> bytes:
        if self._abandoned.is_set():
            raise Abandoned()
        return self._inner.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def flush(self) -> None:
        self._inner.flush()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def truncate(self, size: int | None = None) -> int:
        return self._inner.truncate(size)

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True


class _WatchedLocal(_Watched):
    """A pushed local file, watched: also gives its descriptor, on which the
    repository checks that it is still the file the scan hashed (the
    placeholder layout's payloads in :class:`Uploads`, the index layout's big
    objects in :class:`BigUploads`). Never handed to a backend (which would
    take the descriptor's file for the body)."""

    def fileno(self) -> int:
        return self._inner.fileno()


def _spool_error(exc: OSError, path: str) -> LocalError:
    """A write error on a spool file of the state folder, as a local error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"local disk full while transferring {path} (spool in the state folder); nothing was "
                        "changed", path=path)
    return LocalError(f"cannot write the spool file while transferring {path}: {exc.strerror or exc}", path=path)


class _Slot:
    """Where one download's outcome will be: the job fetching it and, for a
    job that fetches a group, its place in the group's list (None: a job of
    its own, whose result is the prepared file)."""

    __slots__ = ("job", "position")

    def __init__(self, job: Job[object], position: int | None) -> None:
        self.job = job
        self.position = position

    def result(self) -> BinaryIO:
        """The prepared file, waiting for it; raises what fetching it raised
        (CancelledError: the job never ran)."""
        got = self.job.future.result()
        if self.position is None:
            return cast(BinaryIO, got)
        outcome = cast(list[BinaryIO | BaseException], got)[self.position]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def discard(self, *, stop: bool) -> None:
        """Close this download's prepared file once it exists. ``stop``: the
        job's result is no longer wanted at all (it stops at its next chunk);
        a group job is not stopped for one member it fetches for others."""
        if self.position is None or stop:
            self.job.abandoned.set()
        position = self.position

        def drop(future: Future[object]) -> None:
            if future.cancelled() or future.exception() is not None:
                return
            got = future.result()
            outcome = got if position is None else cast(list[object], got)[position]
            if not isinstance(outcome, BaseException):
                cast(BinaryIO, outcome).close()

        self.job.future.add_done_callback(drop)


class Downloads:
    """The payloads of a pass's downloads, fetched ahead on other connections.

    ``placeholders`` are the versions the pass's local actions download, in
    the plan's order. At most ``ahead + 1`` of them are downloading or
    downloaded and not yet taken. :meth:`take` is called in the same order
    (a version whose action was skipped is simply never taken).

    Where the relay reads a group cheaply (``capabilities.group_get``), runs
    of small payloads next to each other in the plan (each of at most
    :data:`SMALL_PAYLOAD` plaintext bytes; at most :data:`PAYLOAD_GROUP` of
    them and :data:`FETCH_GROUP_BYTES` together) are fetched by one job
    with one :meth:`~escale.relay.Relay.get_many` (each sealed payload at
    most :data:`SMALL_PAYLOAD_SEALED` bytes, held in memory), then opened
    one by one into their own prepared files, and ``ahead`` counts such
    groups. Each placeholder still has its own outcome: a payload missing,
    refused or failing verification fails its own action only; a group
    whose read fails (the connection) fails for all its members.
    """

    def __init__(self, repo: Repository, placeholders: Sequence[Placeholder], pool: TransferPool, *,
                 ahead: int, spool_dir: str | None) -> None:
        self._repo = repo
        self._order = [p for p in placeholders if p.payload is not None]
        self._where: dict[str, list[int]] = {}
        for index, placeholder in enumerate(self._order):
            assert placeholder.payload is not None
            self._where.setdefault(placeholder.payload, []).append(index)
        self._pool = pool
        self._ahead = max(1, ahead)
        self._spool_dir = spool_dir
        #: the jobs in the plan's order, each the indexes (in ``_order``) it fetches
        self._units = self._group(repo.fetches_apart() and repo.relay.capabilities.group_get)
        self._unit_of: list[int] = [0] * len(self._order)
        for number, unit in enumerate(self._units):
            for index in unit:
                self._unit_of[index] = number
        self._slots: dict[int, _Slot] = {}
        self._submitted = 0  # units
        self._taken = 0  # indexes
        self._fill(self._ahead)

    def _group(self, grouped: bool) -> list[list[int]]:
        """The plan's downloads cut into jobs: one each, or, when ``grouped``,
        runs of small payloads together (see the class)."""
        units: list[list[int]] = []
        run: list[int] = []
        run_bytes = 0
        for index, placeholder in enumerate(self._order):
            small = grouped and placeholder.size <= SMALL_PAYLOAD
            if run and (not small or len(run) >= PAYLOAD_GROUP or run_bytes + placeholder.size > FETCH_GROUP_BYTES):
                units.append(run)
                run, run_bytes = [], 0
            if small:
                run.append(index)
                run_bytes += placeholder.size
            else:
                units.append([index])
        if run:
            units.append(run)
        return units

    def _fill(self, upto: int) -> None:
        """Start the jobs of units up to number ``upto`` (excluded)."""
        while self._submitted < min(upto, len(self._units)):
            unit = self._units[self._submitted]
            if len(unit) == 1:
                job = cast(Job[object], self._pool.submit(self._download_job(self._order[unit[0]])))
                self._slots[unit[0]] = _Slot(job, None)
            else:
                job = cast(Job[object], self._pool.submit(self._group_job([self._order[i] for i in unit])))
                for position, index in enumerate(unit):
                    self._slots[index] = _Slot(job, position)
            self._submitted += 1

    def _download_job(self, placeholder: Placeholder) -> Callable[[Relay, threading.Event], BinaryIO]:
        repo = self._repo
        # the index layout's big objects, or a payload: opened and verified as
        # it arrives, straight into the prepared file (a small payload is read
        # into memory first)
        fetch = repo.fetch_payload_on if repo.fetches_apart() else repo.fetch_on

        def download(relay: Relay, plain: BinaryIO, abandoned: threading.Event) -> None:
            fetch(placeholder, plain, relay)

        # a big file is flushed on its own by the executor: most of it here, while the others go on
        durable = not repo.fetches_apart() or placeholder.size >= localfs.FLUSH_ALONE_MIN
        return self._into_prepared(placeholder, download, durable=durable)

    def _group_job(self, placeholders: list[Placeholder]) -> Callable[[Relay, threading.Event],
                                                                      list[BinaryIO | BaseException]]:
        """The job that fetches the sealed payloads of ``placeholders`` (small
        ones) with one :meth:`~escale.relay.Relay.get_many`, then opens each
        into its own prepared file: per member, that file or what fetching or
        opening that one raised, as the serial fetch raises it
        (:meth:`Repository.fetch_payload_on`: RelayNotFound, IntegrityError
        for an object too large to be its payload, ...). What the group read
        raises (the connection) fails the job."""
        repo = self._repo

        def opened(placeholder: Placeholder, sealed: bytes | EscaleError) -> Callable[[Relay, threading.Event],
                                                                                     BinaryIO]:
            def write(relay: Relay, plain: BinaryIO, abandoned: threading.Event) -> None:
                if isinstance(sealed, ObjectTooLarge):
                    raise IntegrityError(f"relay object {placeholder.payload}: larger than a sealed "
                                         f"{placeholder.size}-byte file can be, for {placeholder.path}") from sealed
                if isinstance(sealed, BaseException):
                    raise sealed
                repo.open_payload(placeholder, io.BytesIO(sealed), plain)

            return self._into_prepared(placeholder, write)

        def work(relay: Relay, abandoned: threading.Event) -> list[BinaryIO | BaseException]:
            names = [cast(str, placeholder.payload) for placeholder in placeholders]
            found = relay.get_many(names, limit=SMALL_PAYLOAD_SEALED)
            outcomes: list[BinaryIO | BaseException] = []
            try:
                for placeholder, sealed in zip(placeholders, found, strict=True):
                    if abandoned.is_set():
                        raise Abandoned()
                    try:
                        outcomes.append(opened(placeholder, sealed)(relay, abandoned))
                    except Abandoned:
                        raise
                    except Exception as exc:  # noqa: BLE001 - this member's own failure, raised by take()
                        outcomes.append(exc)
            except BaseException:
                for outcome in outcomes:
                    if not isinstance(outcome, BaseException):
                        outcome.close()
                raise
            return outcomes

        return work

    def _into_prepared(self, placeholder: Placeholder,
                       write: Callable[[Relay, BinaryIO, threading.Event], None], *, durable: bool = False,
                       ) -> Callable[[Relay, threading.Event], BinaryIO]:
        """The job that runs ``write(relay, sink, abandoned)`` into a new prepared file
        (:func:`escale.sync.localfs.new_prepared`) and returns it: closed
        again if ``write`` raises; its own OSError (the local spool's, not
        the relay's) raised as the local error it is; the sink stops at its
        next write once the job is abandoned. ``durable`` (big files): the
        worker also flushes the content to disk (``fsync``), while the other
        transfers go on, so that the executor's own flush of the file when
        it installs it (:data:`escale.sync.localfs.FLUSH_ALONE_MIN`) finds
        little left to write."""
        spool_dir = self._spool_dir

        def work(relay: Relay, abandoned: threading.Event) -> BinaryIO:
            plain = localfs.new_prepared(spool_dir) if spool_dir else tempfile.TemporaryFile()  # noqa: SIM115
            try:
                try:
                    write(relay, cast(BinaryIO, _Watched(plain, abandoned)), abandoned)
                    plain.flush()
                    if durable:
                        os.fsync(plain.fileno())
                except OSError as exc:  # the prepared file's, not the relay's
                    raise _spool_error(exc, placeholder.path) from exc
            except BaseException:
                plain.close()
                raise
            return plain

        return work

    def take(self, placeholder: Placeholder) -> BinaryIO | None:
        """A file holding ``placeholder``'s content, decrypted and verified
        (made by :func:`escale.sync.localfs.new_prepared`: the caller installs
        it with :func:`escale.sync.localfs.install_prepared` and closes it),
        waiting for its download; None when it was not scheduled here (the
        caller fetches it itself). Raises what its download, or its opening
        (IntegrityError: refused, nothing written), raised. Payloads scheduled
        before it and never taken are discarded."""
        indexes = self._where.get(placeholder.payload or "", [])
        index = next((i for i in indexes if i >= self._taken), None)
        if index is None:
            return None
        for skipped in range(self._taken, index):
            slot = self._slots.pop(skipped, None)
            if slot is not None:
                slot.discard(stop=False)
        self._taken = index + 1
        self._fill(self._unit_of[index] + 1 + self._ahead)
        slot = self._slots.pop(index)
        try:
            return slot.result()
        except CancelledError:  # only after close(): the serial path then fetches it
            return None

    def close(self) -> None:
        """Stop what runs, close the pool's connections, remove every spool
        file not taken."""
        for slot in self._slots.values():
            slot.discard(stop=True)
        self._slots.clear()
        self._pool.close()


class Acknowledgements:
    """Acknowledgements written on the connections of ``pool``, as they are
    handed over, while the pass goes on with its next files.

    The caller hands an acknowledgement over (:meth:`send`) only once what it
    vouches for is durable (the executor's settle barrier): writing it later
    than the serial path would is always safe. :meth:`finish` waits for every
    one and raises the first failure, as the serial path would have raised
    it; :meth:`close` drops those not started (the next pass writes them: the
    received files are recorded, their acknowledgements are planned again).
    ``on_written(path)`` runs on the worker's thread after each one is on
    the relay. At most ``window`` are in flight; :meth:`send` waits for the
    oldest beyond that (and raises its failure).

    Where the relay puts a group cheaply (``capabilities.group_put``), they go
    up ``group`` at a time in one :meth:`Relay.put_many` (the rest at
    :meth:`finish`): a name that already holds an object (this client's
    acknowledgement written by an interrupted pass, or anything else) is
    replaced, as one acknowledgement at a time would replace it."""

    def __init__(self, repo: Repository, pool: TransferPool, *, window: int = 256, group: int = 64,
                 on_written: Callable[[str], None] | None = None) -> None:
        self._repo = repo
        self._pool = pool
        self._window = max(1, window)
        self._group = max(1, min(group, self._window)) if repo.relay.capabilities.group_put else 1
        self._on_written = on_written
        #: each job with the number of acknowledgements it writes
        self._jobs: collections.deque[tuple[Job[None], int]] = collections.deque()
        self._in_flight = 0
        self._gathered: list[tuple[Placeholder, str]] = []

    def send(self, placeholder: Placeholder, path: str) -> None:
        """Write the acknowledgement of ``placeholder`` (received at ``path``)."""
        self._gathered.append((placeholder, path))
        if len(self._gathered) >= self._group:
            self._submit()

    def _submit(self) -> None:
        batch, self._gathered = self._gathered, []
        if not batch:
            return
        while self._jobs and self._in_flight + len(batch) > self._window:
            job, count = self._jobs.popleft()
            self._in_flight -= count
            job.future.result()
        repo, on_written = self._repo, self._on_written

        def one(relay: Relay, abandoned: threading.Event) -> None:
            placeholder, path = batch[0]
            repo.acknowledge_on(placeholder, relay)
            if on_written is not None:
                on_written(path)

        def group(relay: Relay, abandoned: threading.Event) -> None:
            relay.put_many([repo.ack_object(placeholder) for placeholder, _ in batch])
            repo.acknowledged()
            if on_written is not None:
                for _, path in batch:
                    on_written(path)

        self._jobs.append((self._pool.submit(one if len(batch) == 1 else group), len(batch)))
        self._in_flight += len(batch)

    def finish(self) -> None:
        """Wait for every acknowledgement handed over; raise the first failure
        (the others still finish or fail first)."""
        first: BaseException | None = None
        try:
            self._submit()
        except BaseException as exc:  # noqa: BLE001 - raised below, once all are done
            first = exc
        while self._jobs:
            job, count = self._jobs.popleft()
            self._in_flight -= count
            try:
                job.future.result()
            except BaseException as exc:  # noqa: BLE001 - raised below, once all are done
                if first is None:
                    first = exc
        if first is not None:
            raise first

    def close(self) -> None:
        """Drop the acknowledgements not started (closing the pool waits for
        those running)."""
        for job, _ in self._jobs:
            job.future.cancel()
        self._jobs.clear()
        self._in_flight = 0
        self._gathered = []


@dataclass(frozen=True)
class Unsealed:
    """A push staged on the pass's thread without its sealing
    (:meth:`Repository.reserve_stage`): a worker seals ``source`` (the local
    file, opened and checked, as ``local``) into ``reserved`` and uploads it.
    The source is closed once sealed, or when the uploads close."""

    reserved: StagedPayload
    local: LocalVersion
    source: BinaryIO


class Uploads:
    """The payload uploads of a pass's pushes, on other connections.

    ``stage(index)`` is the executor's: it checks push number ``index`` of
    the plan and either seals its file (:meth:`Repository.stage_file`),
    returning the staged payload, or reserves it and leaves the sealing to
    the worker that uploads it (:class:`Unsealed`, where
    :meth:`Repository.seals_apart`); None for an action with nothing to
    upload (a tombstone). What it raises is kept and raised again by
    :meth:`take` for that action. Uploads start as soon as a payload is
    staged; at most ``ahead + 1`` payloads are staged and not yet taken.

    Where the relay declares a group put cheap, the payloads of small files
    (:meth:`Repository.uploads_in_groups`) go up :data:`PAYLOAD_GROUP` at a
    time (:meth:`Repository.upload_staged_group`: one
    :meth:`~escale.relay.Relay.put_fresh` for the group), and ``ahead``
    counts groups: at most ``(ahead + 1) * PAYLOAD_GROUP`` small payloads,
    each sealed in memory, are staged and not yet taken. A member whose
    sealing fails (its file changed while it was read) fails alone; a group
    whose upload fails fails for all its members.
    """

    def __init__(self, repo: Repository, lease: Lease, state: RelayState, count: int,
                 stage: Callable[[int], StagedPayload | Unsealed | None], pool: TransferPool, *,
                 ahead: int) -> None:
        self._repo = repo
        self._lease = lease
        self._state = state
        self._count = count
        self._stage = stage
        self._pool = pool
        self._grouped = repo.relay.capabilities.group_put
        self._ahead = max(1, ahead) * (PAYLOAD_GROUP if self._grouped else 1)
        self._staged = 0
        #: small payloads staged and not yet handed to a worker (index, staged), in order
        self._gathering: list[tuple[int, StagedPayload | Unsealed]] = []
        #: per action index: its staged payload, its local file when the
        #: worker seals it, its group's upload and its place in the group;
        #: or what staging raised (None: nothing to upload, or still gathering)
        self._outcomes: dict[int, tuple[StagedPayload, BinaryIO | None, Job[_Sealed], int] | BaseException
                             | None] = {}

    def _upload_job(self, members: list[StagedPayload | Unsealed]) -> Callable[[Relay, threading.Event], _Sealed]:
        repo, lease = self._repo, self._lease

        def seal(member: StagedPayload | Unsealed, abandoned: threading.Event) -> StagedPayload:
            if not isinstance(member, Unsealed):
                return member
            with member.source:
                # with its descriptor: the repository may take the scan's checksum
                return repo.seal_reserved(member.reserved, member.local,
                                          cast(BinaryIO, _WatchedLocal(member.source, abandoned)))

        def work(relay: Relay, abandoned: threading.Event) -> _Sealed:
            alone = members[0] if len(members) == 1 else None
            if isinstance(alone, Unsealed) and repo.seals_while_sent(alone.local.size):
                with alone.source:  # sealed while sent: no spool file
                    return [repo.send_reserved(lease, alone.reserved, alone.local,
                                               cast(BinaryIO, _WatchedLocal(alone.source, abandoned)), relay)]
            if len(members) == 1:
                sealed = seal(members[0], abandoned)
                watched = _Watched(sealed.spool, abandoned)
                repo.upload_staged(lease, StagedPayload(sealed.placeholder, cast(BinaryIO, watched), sealed.stored),
                                   relay)
                return [sealed]
            outcomes: _Sealed = []
            for member in members:
                try:
                    outcomes.append(seal(member, abandoned))
                except Abandoned:
                    raise
                except Exception as exc:  # noqa: BLE001 - this member's own failure, raised for its action by take()
                    outcomes.append(exc)
            if abandoned.is_set():
                raise Abandoned()
            ready = [one for one in outcomes if isinstance(one, StagedPayload)]
            if ready:
                repo.upload_staged_group(lease, ready, relay)
            return outcomes

        return work

    def _submit(self, members: list[tuple[int, StagedPayload | Unsealed]]) -> None:
        """Hand ``members`` (staged, in order) to a worker as one upload."""
        job = self._pool.submit(self._upload_job([staged for _, staged in members]))
        for position, (index, staged) in enumerate(members):
            if isinstance(staged, Unsealed):
                self._outcomes[index] = (staged.reserved, staged.source, job, position)
            else:
                self._outcomes[index] = (staged, None, job, position)

    def _submit_gathered(self) -> None:
        gathered, self._gathering = self._gathering, []
        if gathered:
            self._submit(gathered)

    def advance(self, index: int) -> None:
        """Stage (and start uploading) every push up to ``index + ahead``."""
        while self._staged < min(index + 1 + self._ahead, self._count):
            current = self._staged
            self._staged += 1
            try:
                staged = self._stage(current)
            except Exception as exc:  # noqa: BLE001 - raised again, for its own action, by take()
                self._outcomes[current] = exc
                continue
            if staged is None:
                self._outcomes[current] = None
                continue
            size = staged.local.size if isinstance(staged, Unsealed) else staged.stored
            if self._grouped and self._repo.uploads_in_groups(size):
                self._outcomes[current] = None  # until its group is handed over
                self._gathering.append((current, staged))
                if len(self._gathering) >= PAYLOAD_GROUP:
                    self._submit_gathered()
                continue
            self._submit_gathered()  # the plan's order: the smaller ones before it first
            self._submit([(current, staged)])
        if self._gathering and (self._staged >= self._count or self._gathering[0][0] <= index):
            self._submit_gathered()  # nothing more to gather, or the caller waits for it

    def take(self, index: int) -> StagedPayload | None:
        """Push number ``index``'s staged payload once it is sealed and its
        upload returned (the caller commits it with
        :meth:`Repository.commit_staged` and closes it), None when it has
        nothing to upload. Raises what its staging, its sealing or its upload
        raised (the payload's reserved room is then given back)."""
        self.advance(index)
        outcome = self._outcomes.pop(index, None)
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is None:
            return None
        staged, source, job, position = outcome
        try:
            sealed = job.future.result()[position]
            if isinstance(sealed, BaseException):
                raise sealed
            return sealed
        except BaseException:
            self._repo.release_staged(self._state, staged)
            staged.close()
            raise
        finally:
            if source is not None:
                source.close()

    def close(self) -> None:
        """Stop what runs, close the pool's connections, drop the staged
        payloads not taken and close their local files. A payload uploaded
        and never committed stays in the relay state:
        :meth:`Repository.collect_garbage` removes it as an orphan (this
        pass's, or a later one's)."""
        self._pool.close()  # every job not done stops at its next chunk
        for index, staged in self._gathering:  # never handed over: nothing of them was sent
            self._outcomes.pop(index, None)
            reserved = staged.reserved if isinstance(staged, Unsealed) else staged
            self._repo.release_staged(self._state, reserved)
            reserved.close()
            if isinstance(staged, Unsealed):
                staged.source.close()
        self._gathering = []
        for outcome in self._outcomes.values():
            if isinstance(outcome, tuple):
                staged, source, job, position = outcome
                sealed = None
                if not job.future.cancelled() and job.future.exception() is None:
                    sealed = job.future.result()[position]
                if not isinstance(sealed, StagedPayload):
                    self._repo.release_staged(self._state, staged)
                elif source is not None and staged.placeholder.payload is not None:
                    # sealed apart and uploaded: on the relay, as stage_file would have recorded it
                    self._state.payloads[staged.placeholder.payload] = sealed.stored
                staged.close()
                if source is not None:
                    source.close()
        self._outcomes.clear()


class BigUploads:
    """The big-object uploads of a pass's pushes in a layout that pushes big
    files apart (:meth:`Repository.pushes_big_apart`: the index layout),
    on other connections, while the pass packs the small files.

    ``big`` says, per action of the plan's pushes, whether it is a big file
    pushed apart. ``stage(index)`` is the executor's: it checks push number
    ``index`` (the plan, the relay version, the file as scanned), opens the
    file and reserves its object (:meth:`Repository.reserve_big`); what it
    raises is kept and raised again by :meth:`take` for that action. A
    worker uploads the opened file (:meth:`Repository.upload_big`) and
    closes it. Uploads start in the plan's order, as soon as staged; at most
    ``ahead + 1`` are staged and not yet taken (so at most that many local
    files are open, and nothing is spooled whole in memory). The executor
    takes each in the plan's order and packs its entry
    (:meth:`Repository.commit_big`): the delta that names a big object is
    written after its upload returned.
    """

    def __init__(self, repo: Repository, lease: Lease, big: Sequence[bool],
                 stage: Callable[[int], tuple[BigReservation, BinaryIO]], pool: TransferPool, *,
                 ahead: int) -> None:
        self._repo = repo
        self._lease = lease
        self._order = [index for index, flag in enumerate(big) if flag]
        self._big = set(self._order)
        self._stage = stage
        self._pool = pool
        self._ahead = max(1, ahead)
        self._started = 0
        #: per action index: its reservation, its local file and its upload; or what staging raised
        self._outcomes: dict[int, tuple[BigReservation, BinaryIO, Job[BigUpload]] | BaseException] = {}

    def _upload_job(self, reservation: BigReservation, source: BinaryIO) -> Callable[[Relay, threading.Event],
                                                                                    BigUpload]:
        repo, lease = self._repo, self._lease

        def work(relay: Relay, abandoned: threading.Event) -> BigUpload:
            with source:
                return repo.upload_big(lease, reservation, cast(BinaryIO, _WatchedLocal(source, abandoned)), relay)

        return work

    def advance(self) -> None:
        """Stage (and start uploading) the next big files, up to ``ahead + 1``
        staged and not taken."""
        while self._started < len(self._order) and len(self._outcomes) <= self._ahead:
            current = self._order[self._started]
            self._started += 1
            try:
                reservation, source = self._stage(current)
            except Exception as exc:  # noqa: BLE001 - raised again, for its own action, by take()
                self._outcomes[current] = exc
                continue
            self._outcomes[current] = (reservation, source, self._pool.submit(self._upload_job(reservation,
                                                                                                source)))

    def take(self, index: int) -> BigUpload | None:
        """Push number ``index``'s upload once it returned (the caller commits
        it with :meth:`Repository.commit_big`); None for an action that is not
        a big file pushed apart (the caller pushes it itself). Raises what its
        staging or its upload raised (the reservation is then given back)."""
        self.advance()
        if index not in self._big:
            return None
        outcome = self._outcomes.pop(index, None)
        if outcome is None:  # taken already
            return None
        self.advance()  # the next one starts while this one is waited for
        if isinstance(outcome, BaseException):
            raise outcome
        reservation, source, job = outcome
        try:
            return job.future.result()
        except BaseException:
            self._repo.release_big(reservation)
            raise
        finally:
            source.close()

    def close(self) -> None:
        """Stop what runs, close the pool's connections and the local files,
        give back the reservations not taken. An object uploaded and never
        committed is an orphan: the sweep of :meth:`Repository.collect_garbage`
        removes it (this pass's or a later one's)."""
        self._pool.close()  # every job not done stops at its next chunk
        for outcome in self._outcomes.values():
            if isinstance(outcome, tuple):
                reservation, source, _ = outcome
                self._repo.release_big(reservation)
                source.close()
        self._outcomes.clear()
