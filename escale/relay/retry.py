"""The one retry wrapper: reconnect and back off on transient errors only.

:class:`RetryingRelay` wraps any backend. When an operation raises an error whose
``transient`` flag is set (connection dropped, timeout, server restarting), it
closes the backend, waits (exponential back-off with jitter, capped), reopens it
and tries the operation again, up to ``attempts`` times in all. Any other error
(missing object, permission, unsafe name) is raised at once.

Retrying is safe for every operation because each is idempotent or reported:

* ``get``: the sink is rewound and truncated before each new attempt, so it holds
  exactly one copy on success (the sink must be seekable);
* ``get_many``: a group is read again whole (reads change nothing);
* ``put``: the source is rewound before each attempt (it must be seekable). An
  exclusive put whose first attempt stored the object before the connection
  dropped fails its retry with RelayExists; callers that need to know read the
  object back (the lease code does);
* ``delete`` and ``rename`` retried after an unseen success raise RelayNotFound;
  callers treat that as done where it is.

Hand-written, no library: tenacity or backoff would time the waits, but each attempt
here must also reopen the connection and rewind the caller's stream; that is the loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO, TypeVar

from escale.backoff import Backoff
from escale.errors import EscaleError
from escale.relay.base import Capabilities, Entry, Relay, Usage

T = TypeVar("T")
log = logging.getLogger(__name__)


class RetryingRelay(Relay):
    """``inner`` with reconnection and back-off on transient errors."""

    def __init__(
        self,
        inner: Relay,
        *,
        attempts: int = 5,
        base_delay: float = 0.2,
        max_delay: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.scheme = inner.scheme
        self.attempts = max(1, attempts)
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep

    @property
    def capabilities(self) -> Capabilities:
        """The inner backend's, read live: some backends learn theirs on open()."""
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self.inner.capabilities = value

    def describe(self) -> str:
        return self.inner.describe()

    def _retry(self, what: str, action: Callable[[], T], rewind: Callable[[], object] | None = None) -> T:
        attempt = 1
        reconnect = False
        waits = Backoff(min(self.base_delay, self.max_delay), self.max_delay, jitter=(0.5, 1.0))
        while True:
            try:
                if reconnect:
                    self.inner.close()
                    self.inner.open()
                    reconnect = False
                    if rewind is not None:
                        rewind()
                return action()
            except EscaleError as exc:
                if not exc.transient or attempt >= self.attempts:
                    raise
                delay = waits.next()
                log.warning(
                    "%s on %s failed (%s); retry %d/%d in %.1fs",
                    what, self.describe(), exc, attempt, self.attempts - 1, delay,
                )
                self._sleep(delay)
                attempt += 1
                reconnect = True

    def _connect(self) -> None:
        self._retry("open", self.inner.open)

    def _disconnect(self) -> None:
        self.inner.close()

    def _list(self, folder: str) -> list[Entry]:
        # raw: this wrapper's own list() checks the names and sorts temporaries out
        return self._retry("list", lambda: self.inner.list_raw(folder))

    def _stat(self, name: str) -> Entry:
        return self._retry("stat", lambda: self.inner.stat(name))

    def _get(self, name: str, sink: BinaryIO) -> None:
        start = sink.tell()

        def rewind() -> None:
            sink.seek(start)
            sink.truncate()

        self._retry("get", lambda: self.inner.get(name, sink), rewind)

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        # the group passed on whole: a transient failure reads it all again
        return self._retry("get", lambda: self.inner.get_many(names, limit=limit))

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        start = source.tell()
        self._retry(
            "put", lambda: self.inner.put(name, source, exclusive=exclusive), lambda: source.seek(start)
        )

    def _put_commits(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        # the group passed on whole; a retry answers False for what the failed
        # attempt created, which callers read back (Relay.put_commits)
        return self._retry("put", lambda: self.inner.put_commits(items))

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        # the group passed on whole; a retry writes every item again (fresh names are replaced)
        self._retry("put", lambda: self.inner.put_fresh(items))

    def _put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        # the group passed on whole; a retry writes every item again (each replaces)
        self._retry("put", lambda: self.inner.put_many(items))

    def _delete(self, name: str) -> None:
        self._retry("delete", lambda: self.inner.delete(name))

    def _delete_many(self, names: Sequence[str]) -> list[EscaleError | None]:
        # the group passed on whole; a retry finds what the failed attempt deleted missing
        return self._retry("delete", lambda: self.inner.delete_many(names))

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        self._retry("rename", lambda: self.inner.rename(source, target, overwrite=overwrite))

    def _mkdir(self, name: str) -> None:
        self._retry("mkdir", lambda: self.inner.mkdir(name))

    def _create_root(self) -> None:
        self._retry("create the repository folder", self.inner.create_root)

    def _rmdir(self, name: str) -> None:
        self._retry("rmdir", lambda: self.inner.rmdir(name))

    def _delete_temporary(self, name: str) -> None:
        self._retry("delete", lambda: self.inner.delete_temporary(name))

    def _usage(self) -> Usage | None:
        return self._retry("usage", self.inner.usage)
