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
from escale.sync.transfers import Job, TransferPool

log = logging.getLogger(__name__)

#: Reads in flight per connection: enough to keep each connection busy while
#: the pass's thread opens what arrived, few enough to bound memory (each
#: object read is at most the reader's ``limit``, a placeholder a few hundred bytes).
READS_PER_CONNECTION = 16
#: Where the relay reads a group cheaply (``capabilities.group_get``): the
#: names one worker job reads with one :meth:`Relay.get_many`, and the groups
#: in flight per connection (one read while the next waits).
READ_GROUP = 16
GROUPS_PER_CONNECTION = 2


def _read_job(names: Sequence[str], limit: int) -> Callable[[Relay, threading.Event], list[bytes | EscaleError]]:
    def work(relay: Relay, abandoned: threading.Event) -> list[bytes | EscaleError]:
        if len(names) > 1:
            # each name's own refusal comes back as its value: the worker keeps its connection
            return relay.get_many(names, limit=limit)
        try:
            return [relay.get_bytes(names[0], limit=limit)]
        except (RelayNotFound, ProtocolError) as exc:
            # an answer about this object, not a failed connection: handed over as a value,
            # so the worker keeps its connection (the repository raises it in its turn)
            return [exc]

    return work


def _answer(outcome: bytes | EscaleError) -> bool:
    """Whether ``outcome`` is handed to the repository as it is: the bytes,
    or the RelayNotFound or ProtocolError (ObjectTooLarge) of that object."""
    return isinstance(outcome, (bytes, RelayNotFound, ProtocolError))


def pooled_reader(pool: TransferPool, connections: int, main: Relay) -> ObjectReader:
    """An object reader on ``pool``'s connections (``connections`` of them),
    results in the order asked. Each worker job reads one name, or, where
    ``main.capabilities.group_get`` says a group read is cheap,
    :data:`READ_GROUP` names with one :meth:`Relay.get_many`; at most
    :data:`READS_PER_CONNECTION` names (one by one) or
    :data:`GROUPS_PER_CONNECTION` groups per connection are in flight, so
    at most that many objects of at most ``limit`` bytes each are held. A
    read that fails otherwise on a transfer connection (none could be
    opened, a connection error after the relay's own retries: the whole
    group; or an object's refusal other than RelayNotFound and
    ObjectTooLarge, such as a permission error) is read again on ``main``,
    the pass's own connection, from the pass's thread, and what that raises
    is raised: the read is never less available than a read on ``main``
    alone. Closing the generator abandons the reads still in flight."""
    grouped = main.capabilities.group_get
    size = READ_GROUP if grouped else 1
    window = max(1, connections) * (GROUPS_PER_CONNECTION if grouped else READS_PER_CONNECTION)

    def again(name: str, limit: int) -> bytes | EscaleError:
        try:
            return main.get_bytes(name, limit=limit)
        except (RelayNotFound, ProtocolError) as exc:
            return exc

    def outcomes(names: Sequence[str], job: Job[list[bytes | EscaleError]],
                 limit: int) -> Generator[tuple[str, bytes | EscaleError], None, None]:
        try:
            found = job.future.result()
        except EscaleError as exc:  # logged, then the main connection decides
            log.debug("reading %s on a transfer connection failed (%s): reading it on the main one",
                      names[0] if len(names) == 1 else f"{len(names)} objects from {names[0]}", exc)
            for name in names:
                yield name, again(name, limit)
            return
        for name, outcome in zip(names, found, strict=True):
            if _answer(outcome):
                yield name, outcome
            else:
                log.debug("reading %s on a transfer connection failed (%s): reading it on the main one",
                          name, outcome)
                yield name, again(name, limit)

    def read(names: Sequence[str], limit: int) -> Generator[tuple[str, bytes | EscaleError], None, None]:
        flight: collections.deque[tuple[Sequence[str], Job[list[bytes | EscaleError]]]] = collections.deque()
        try:
            for start in range(0, len(names), size):
                part = names[start:start + size]
                flight.append((part, pool.submit(_read_job(part, limit))))
                if len(flight) >= window:
                    first, job = flight.popleft()
                    yield from outcomes(first, job, limit)
            while flight:
                first, job = flight.popleft()
                yield from outcomes(first, job, limit)
        finally:
            for _, job in flight:
                job.abandoned.set()
                job.future.cancel()

    return read
