"""Large values for the local cache, made in pieces and never held whole.

Both layouts keep a value in the state database that grows with the tree:
the placeholder layout's snapshot of the relay state, the index layout's
local copy of its index (about 50 to 150 bytes per path). Made as a list of
pieces, such a value was held whole in memory while the pass held everything
else. A :class:`SpooledValue` takes the pieces as they are made into a
temporary file instead, and :func:`store` hands them to the cache from that
file, a piece at a time, once their length is known.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, MutableMapping
from types import TracebackType
from typing import BinaryIO, cast

#: bytes read from the spool file at a time when the value is stored
READ_SIZE = 1 << 20


class SpooledValue:
    """A value appended to piece by piece, kept in a temporary file of
    ``spool_dir`` (None: the system's temporary folder) until it is stored.
    The file is gone once closed (``with``, or :meth:`close`), even after a
    crash (it has no name). Raises OSError when the file cannot be made or
    written (a full disk): nothing is stored then."""

    def __init__(self, spool_dir: str | None) -> None:
        self._file = cast(BinaryIO, tempfile.TemporaryFile(dir=spool_dir, buffering=READ_SIZE))  # noqa: SIM115
        self.length = 0

    def append(self, piece: bytes) -> None:
        """Add ``piece`` at the end of the value."""
        self._file.write(piece)
        self.length += len(piece)

    def pieces(self) -> Iterator[bytes]:
        """The value from its start, :data:`READ_SIZE` bytes at a time (each
        call reads it again from the start)."""
        self._file.flush()
        self._file.seek(0)
        while piece := self._file.read(READ_SIZE):
            yield piece

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpooledValue:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def store(cache: MutableMapping[str, bytes], key: str, value: SpooledValue, head: bytes = b"") -> None:
    """``cache[key] = head + value``. A cache that takes a value in pieces
    (the state database's: ``put_pieces(key, length, pieces)``) gets it a
    piece at a time from the spool file; any other (a dict in tests) gets
    the joined bytes. Atomic as the cache's own write is."""
    pieces: Iterable[bytes] = _chained(head, value.pieces())
    put_pieces = getattr(cache, "put_pieces", None)
    if put_pieces is not None:
        put_pieces(key, len(head) + value.length, pieces)
    else:
        cache[key] = b"".join(pieces)


def _chained(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest
