"""A bandwidth limit for one client's relay transfers: a token bucket.

``bandwidth limit = 2 MB`` caps the bytes a client moves through its relay to
that many per second, reads and writes together. :class:`TokenBucket` holds
the allowance (shared by every connection the client opens, and by its threads);
:class:`ThrottledRelay` wraps a backend so that each ``get`` and ``put`` streams
through the bucket: each chunk written to the sink or read from the source is
paid for before it moves on, so a transfer never runs ahead of the limit by
more than the bucket's burst (a quarter of a second's worth, at most 256 KiB).
Listings and stats are not counted: they are small and a limit on them would
only slow the pass down. A group read (:meth:`Relay.get_many`) is read one
object after the other through the bucket, so that it never runs ahead of
the limit either (a group put pays for its bytes before it is sent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence, Sized
from typing import BinaryIO, cast

from escale.errors import EscaleError
from escale.relay.base import Relay
from escale.relay.delegating import DelegatingRelay

#: The most bytes a bucket lets through at once after an idle time.
MAX_BURST = 256 * 1024


class TokenBucket:
    """``rate`` bytes per second, with a burst of ``burst`` bytes (default: a
    quarter second's worth, at most :data:`MAX_BURST`). Thread-safe.

    :meth:`take` may run the bucket into debt (a chunk larger than the burst
    goes through at once) and then sleeps until the debt is paid: the average
    rate over any stretch is never above ``rate`` by more than ``burst`` bytes.
    """

    def __init__(self, rate: int, burst: int | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if rate < 1:
            raise ValueError("rate must be at least one byte per second")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1, min(MAX_BURST, rate // 4)))
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self, amount: int) -> None:
        """Pay for ``amount`` bytes, sleeping as long as the limit asks."""
        if amount <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class _Source:
    """A seekable source whose reads are paid for in ``bucket``."""

    def __init__(self, inner: BinaryIO, bucket: TokenBucket) -> None:
        self._inner = inner
        self._bucket = bucket

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._bucket.take(len(data))
        return data

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def seekable(self) -> bool:
        return self._inner.seekable()

    def readable(self) -> bool:
        return True


class _SizedSource(_Source):
    """A :class:`_Source` over a source that announces its length (``len``:
    a payload sealed while sent announces its sealed size), announcing it
    too: a backend that sends the length first (an HTTP Content-Length) is
    told it as without the limit."""

    def __len__(self) -> int:
        return len(cast(Sized, self._inner))


class _Sink:
    """A sink whose writes are paid for in ``bucket``; rewinding and truncating
    (the retry wrapper's) go to the inner sink."""

    def __init__(self, inner: BinaryIO, bucket: TokenBucket) -> None:
        self._inner = inner
        self._bucket = bucket

    def write(self, data: bytes) -> int:
        self._bucket.take(len(data))
        return self._inner.write(data)

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._inner.truncate(size)

    def flush(self) -> None:
        self._inner.flush()

    def seekable(self) -> bool:
        return self._inner.seekable()

    def writable(self) -> bool:
        return True


class ThrottledRelay(DelegatingRelay):
    """``inner`` whose object contents move at most ``bucket.rate`` bytes a second."""

    def __init__(self, inner: Relay, bucket: TokenBucket) -> None:
        super().__init__(inner)
        self.bucket = bucket

    def _get(self, name: str, sink: BinaryIO) -> None:
        self.inner.get(name, cast(BinaryIO, _Sink(sink, self.bucket)))

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        # one get after the other, each through the bucket (Relay's own loop)
        return Relay._get_many(self, names, limit)

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        # a length the source announces is announced on (see _SizedSource)
        paid = (_SizedSource if hasattr(source, "__len__") else _Source)(source, self.bucket)
        self.inner.put(name, cast(BinaryIO, paid), exclusive=exclusive)

    def _put_commits(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        self.bucket.take(sum(len(data) for _, data in items))
        return self.inner.put_commits(items)

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.bucket.take(sum(len(data) for _, data in items))
        self.inner.put_fresh(items)

    def _put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        self.bucket.take(sum(len(data) for _, data in items))
        self.inner.put_many(items)
