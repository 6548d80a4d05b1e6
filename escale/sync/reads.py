"""Relay objects read on a pass's transfer connections, several at once.

:func:`pooled_reader` makes the :data:`~escale.protocol.repository.ObjectReader`
that a pass gives its repository while it reads the relay state
(:attr:`Repository.object_reader <escale.protocol.repository.Repository.object_reader>`):
the placeholders not cached yet are then fetched on up to ``transfers``
connections (a :class:`~escale.sync.transfers.TransferPool`) instead of one
request after the other on the main connection. Only the bytes as stored are
fetched there; the repository opens, checks and caches each object on the
pass's thread, in order, by the same rules as a read on its own connection.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Generator, Sequence

from escale.errors import EscaleError, ProtocolError, RelayNotFound
from escale.protocol.repository import ObjectReader
from escale.relay import Relay
from escale.sync.transfers import TransferPool, _Job

log = logging.getLogger(__name__)

#: Reads in flight per connection: enough to keep each connection busy while
#: the pass's thread opens what arrived, few enough to bound memory (each
#: object read is at most the reader's ``limit``, a placeholder a few hundred bytes).
READS_PER_CONNECTION = 16


def _read_job(name: str, limit: int) -> Callable[[Relay, threading.Event], bytes | EscaleError]:
    def work(relay: Relay, abandoned: threading.Event) -> bytes | EscaleError:
        try:
            return relay.get_bytes(name, limit=limit)
        except (RelayNotFound, ProtocolError) as exc:
            # an answer about this object, not a failed connection: handed over as a value,
            # so the worker keeps its connection (the repository raises it in its turn)
            return exc

    return work


def pooled_reader(pool: TransferPool, connections: int, main: Relay) -> ObjectReader:
    """An object reader on ``pool``'s connections (``connections`` of them):
    at most :data:`READS_PER_CONNECTION` reads per connection in flight,
    results in the order asked. A read that fails otherwise on a transfer
    connection (none could be opened, a connection error after the relay's
    own retries) is read again on ``main``, the pass's own connection, from
    the pass's thread, and what that raises is raised: the read is never
    less available than a read on ``main`` alone. Closing the generator
    abandons the reads still in flight."""
    window = max(1, connections) * READS_PER_CONNECTION

    def outcome(name: str, job: _Job[bytes | EscaleError], limit: int) -> bytes | EscaleError:
        try:
            return job.future.result()
        except EscaleError as exc:  # logged, then the main connection decides
            log.debug("reading %s on a transfer connection failed (%s): reading it on the main one", name, exc)
            try:
                return main.get_bytes(name, limit=limit)
            except (RelayNotFound, ProtocolError) as again:
                return again

    def read(names: Sequence[str], limit: int) -> Generator[tuple[str, bytes | EscaleError], None, None]:
        flight: collections.deque[tuple[str, _Job[bytes | EscaleError]]] = collections.deque()
        try:
            for name in names:
                flight.append((name, pool.submit(_read_job(name, limit))))
                if len(flight) >= window:
                    first, job = flight.popleft()
                    yield first, outcome(first, job, limit)
            while flight:
                first, job = flight.popleft()
                yield first, outcome(first, job, limit)
        finally:
            for _, job in flight:
                job.abandoned.set()
                job.future.cancel()

    return read
