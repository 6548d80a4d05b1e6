"""Content that moves between a local file and the relay without a spool file.

Both layouts use these for their big content (the placeholder layout's
payloads above :data:`~escale.protocol.repository.SPOOL_IN_MEMORY`, the index
layout's big objects):

* **sealed while sent** (:func:`send_sealing`): a thread reads the local file,
  hashes it and seals it a few pieces ahead of the relay's reads
  (:class:`SealingUpload`); the relay reads exactly the sealed size announced
  beforehand, and the retry wrapper's rewind starts again from the file's
  first byte. Needs a sealer with ``seal_pieces`` and ``sealed_size``
  (:func:`sealing_parts`) and a source that can be rewound;
* **opened while received** (:func:`receive_opening`): what the relay
  delivers is authenticated, opened and hashed as it arrives, into the
  caller's temporary file (:class:`OpeningSink`); the retry wrapper's rewind
  starts a new attempt there. Needs a sealer with ``open_writer`` and a sink
  that tells where it stands (:func:`start_of`).

Where either is missing the caller goes through a spool file as before.
Nothing here touches shared state: safe from a worker thread.
"""

from __future__ import annotations

import hashlib
import io
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Generic, Protocol, TypeVar, cast

from escale.errors import EscaleError, ObjectTooLarge
from escale.relay import Relay

#: sealed pieces are handed to the relay in blocks of about this many bytes
BLOCK = 1 << 20

_L = TypeVar("_L")


class HashingReader:
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


class HashingWriter:
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


def start_of(stream: BinaryIO) -> int | None:
    """Where ``stream`` stands (the point a retry rewinds it to), or None
    when it cannot tell (it cannot be rewound: spool it instead)."""
    try:
        if hasattr(stream, "seekable") and not stream.seekable():
            return None
        return stream.tell()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return None


def received_bound(sealer: object, size: int) -> int | None:
    """The most sealed bytes a download of content that opens into ``size``
    bytes may deliver before it is stopped (:func:`receive_opening`'s
    ``limit``), or None when ``sealer`` cannot tell its sealed size. Twice
    the sealed size, plus a block: generous, so that no genuine object is
    ever refused by it (a longer one fails to open anyway); what it stops is
    a relay that goes on sending, which would otherwise hold the pass for
    as long as it likes."""
    parts = sealing_parts(sealer)
    return None if parts is None else 2 * int(parts[1](size)) + BLOCK


def sealing_parts(sealer: object) -> tuple[Callable[[str, BinaryIO], Iterator[bytes]], Callable[[int], int]] | None:
    """``sealer``'s ``seal_pieces`` and ``sealed_size`` (what
    :func:`send_sealing` needs), or None when it lacks either."""
    seal_pieces = getattr(sealer, "seal_pieces", None)
    sealed_size = getattr(sealer, "sealed_size", None)
    if seal_pieces is None or sealed_size is None:
        return None
    return seal_pieces, sealed_size


@dataclass
class Reading(Generic[_L]):
    """One attempt at reading a local file to seal it: the reader that counts
    (and hashes, with ``hasher``) what is read, and what is sealed: the
    reader itself, or a layer over it (the index layout's deflating one)."""

    reader: HashingReader
    layer: _L
    hasher: hashlib._Hash | None


class SealingUpload(Generic[_L]):
    """The source of an upload, sealed while it is read.

    A thread runs the sealing (``attempt()``'s pieces: reading the file,
    hashing, sealing) a few pieces ahead of the relay's reads, so that it
    overlaps the sending. The relay reads exactly ``size`` bytes, the sealed
    size announced beforehand (a length some backends send first): if the
    file grew, the rest is not sent; if it shrank, zeros make up the length.
    Either way :attr:`exact` is False and the caller discards the object.
    ``seek(0)`` (the retry wrapper's rewind) starts a new attempt, unless
    reading or sealing the file failed (:attr:`failure`: raised by ``read``,
    and again by ``seek``, so that no retry reads a failing file again). Use
    as a context manager: leaving it stops the thread. :attr:`reading` is
    the current attempt's.
    """

    #: blocks of sealed pieces (about :data:`BLOCK` each) queued ahead of the relay's reads
    AHEAD = 4

    def __init__(self, attempt: Callable[[], tuple[Reading[_L], Iterator[bytes]]], size: int) -> None:
        self._attempt = attempt
        self._size = size
        self._thread: threading.Thread | None = None
        #: what reading or sealing the file raised
        self.failure: BaseException | None = None
        self._start()

    def _start(self) -> None:
        self.reading, pieces = self._attempt()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(self.AHEAD)
        self._stop = threading.Event()
        #: the block being read and how much of it was read
        self._block = b""
        self._offset = 0
        self._position = 0
        self._ended = False
        #: the sealed stream had exactly the announced size
        self.exact = True
        self._thread = threading.Thread(target=self._produce, args=(pieces, self._queue, self._stop),
                                        name="escale-seal", daemon=True)
        self._thread.start()

    @staticmethod
    def _produce(pieces: Iterator[bytes], out: queue.Queue[bytes | BaseException | None],
                 stop: threading.Event) -> None:
        """Seal on this thread, handing the pieces on in blocks of at most
        :data:`BLOCK` (or one piece), joined here: a relay reading
        :data:`BLOCK` at a time takes each as it is, and the one copy of the
        stream is made off the sending thread."""
        def put(item: bytes | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        batch: list[bytes] = []
        gathered = 0
        try:
            for piece in pieces:
                if batch and gathered + len(piece) > BLOCK:
                    if not put(batch[0] if len(batch) == 1 else b"".join(batch)):
                        return
                    batch, gathered = [], 0
                batch.append(piece)
                gathered += len(piece)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            put(exc)
            return
        if batch and not put(batch[0] if len(batch) == 1 else b"".join(batch)):
            return
        put(None)

    def _halt(self) -> None:
        if self._thread is not None:
            self._stop.set()
            while True:  # a producer waiting for room goes at once
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._thread.join()
            self._thread = None

    def __enter__(self) -> SealingUpload[_L]:
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt()

    def _next_block(self) -> None:
        self._offset = 0
        if self._ended:
            self._block = bytes(min(BLOCK, self._size - self._position))
            return
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.failure = item
            raise item
        if item is None:
            self._ended = True
            if self._position != self._size:
                self.exact = False
            self._next_block()
            return
        self._block = item

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all that is left with -1; empty only at the
        end): a request at least as big as the next block gets that block
        as it was sealed (no copy), a smaller one a part of it."""
        left = self._size - self._position
        want = left if size is None or size < 0 else min(size, left)
        parts: list[bytes] = []
        got = 0
        while got < want:
            if self._offset == len(self._block):
                self._next_block()
            block, offset = self._block, self._offset
            take = min(want - got, len(block) - offset)
            if offset == 0 and take == len(block) and size is not None and size >= 0:
                parts.append(block)  # a whole block, as it is: the read ends with it
                got += take
                self._offset = take
                break
            parts.append(block[offset:offset + take])
            self._offset = offset + take
            got += take
        self._position += got
        if self._position == self._size and not self._ended:
            # every announced byte was read: the stream must end here
            self.exact = self.exact and self._offset == len(self._block) and self._queue.get() is None
            self._ended = True
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == os.SEEK_CUR and offset == 0:
            return self._position
        if whence != os.SEEK_SET or offset != 0:
            raise io.UnsupportedOperation("a sealing upload only rewinds to its start")
        if self.failure is not None:
            raise self.failure
        if self._position or self._thread is None or self._ended:
            self._halt()
            self._start()
        return 0

    def __len__(self) -> int:
        return self._size

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


def send_sealing(relay: Relay, name: str, size: int, source: BinaryIO, start: int, hashing: str | None,
                 seal_pieces: Callable[[str, Any], Iterator[bytes]], layer: Callable[[HashingReader], _L], *,
                 first: Reading[_L] | None = None) -> tuple[Reading[_L], bool]:
    """Put ``source`` (a local file, from ``start``) as relay object ``name``
    through ``relay``, sealed while it is sent (:class:`SealingUpload`),
    announcing ``size`` sealed bytes. Each attempt reads the file from
    ``start`` through a new :class:`HashingReader` (hashing with ``hashing``,
    None: no hashing) and seals ``layer(reader)``; ``first`` is the first
    attempt's reading, already begun (the index layout's deflating layer
    read its first MiB to decide), used as it stands.

    Returns the last attempt's reading and whether exactly ``size`` sealed
    bytes were sent: the caller checks the count read against the file's
    size and discards an object sent inexactly (an orphan). Raises what
    reading the local file raised, as such (whatever the backend made of
    it), and the relay's errors; what was stored is then an orphan too."""
    pending = first

    def attempt() -> tuple[Reading[_L], Iterator[bytes]]:
        nonlocal pending
        reading = pending
        pending = None
        if reading is None:
            source.seek(start)
            hasher = hashlib.new(hashing) if hashing else None
            reader = HashingReader(source, hasher)
            reading = Reading(reader, layer(reader), hasher)
        return reading, seal_pieces(name, reading.layer)

    with SealingUpload(attempt, size) as upload:
        try:
            relay.put(name, cast(BinaryIO, upload))
        except BaseException:
            if upload.failure is not None:  # the local file's, whatever the backend made of it
                raise upload.failure from None
            raise
        return upload.reading, upload.exact


class _Layer(Protocol):
    """A writer between the opened content and the hashing writer (the index
    layout's inflating one): ``finish`` checks its end, ``received`` counts
    what it was given."""

    received: int

    def write(self, data: bytes | bytearray | memoryview) -> int: ...

    def finish(self) -> None: ...


class OpeningPipeline:
    """One attempt at receiving a sealed object: sealed bytes in, then opened
    (``open_writer``), passed through ``layer`` if any (inflated), hashed and
    counted into the sink.

    A failure of the content or of the sink (an error of escale's or an
    OSError: a chunk that does not authenticate, a sink that is full) is kept
    and raised by :meth:`finish`; what arrives after it is dropped. The
    backend's transfer then ends as usual (an FTP control connection stays
    in step), and nothing after the failure reaches the sink. Anything else
    (a transfer abandoned by its caller) is raised at once.
    """

    def __init__(self, open_writer: Callable[[str, BinaryIO], Any], name: str, sink: BinaryIO,
                 algorithm: str | None, layer: Callable[[HashingWriter], _Layer | None] | None = None) -> None:
        self.hasher = hashlib.new(algorithm) if algorithm else None
        self.counting = HashingWriter(sink, self.hasher)
        # without a layer the opened chunks go straight to the hashing writer,
        # without a pass-through layer and its copy of each chunk
        self.layer = layer(self.counting) if layer is not None else None
        self.opener = open_writer(name, cast(BinaryIO, self.layer or self.counting))
        self.failure: Exception | None = None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.failure is None:
            try:
                self.opener.write(data)
            except (EscaleError, OSError) as exc:
                self.failure = exc
        return len(data)

    def finish(self) -> int:
        """End the object; the sealed bytes its layer received (without a
        layer: the plaintext bytes written). Raises the failure kept, or what
        checking the end raises (IntegrityError: cut, ...)."""
        if self.failure is not None:
            raise self.failure
        self.opener.finish()
        if self.layer is None:
            return self.counting.count
        self.layer.finish()
        return self.layer.received


class OpeningSink:
    """The sink an object is downloaded into: what arrives goes straight
    through an :class:`OpeningPipeline`. The retry wrapper rewinds a sink to
    where it started before another attempt (``seek`` + ``truncate``): that
    starts a new pipeline and rewinds the real sink to ``start``. With
    ``limit`` (object ``name``'s), a write that would take what arrived past
    ``limit`` bytes raises ObjectTooLarge and is not passed on: the backend
    stops the transfer as it does for a bounded read."""

    def __init__(self, make: Callable[[], OpeningPipeline], sink: BinaryIO, start: int, *,
                 name: str = "", limit: int | None = None) -> None:
        self._make = make
        self._sink = sink
        self._start = start
        self._name = name
        self._limit = limit
        self._received = 0
        self.pipeline = make()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._limit is not None and self._received + len(data) > self._limit:
            raise ObjectTooLarge(f"relay object {self._name}: more than the {self._limit} bytes it can be; "
                                 "refused", name=self._name)
        self.pipeline.write(data)
        self._received += len(data)
        return len(data)

    def tell(self) -> int:
        return self._received

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or offset != 0:
            raise OSError("a download into an opening sink only rewinds to its start")
        self._sink.seek(self._start)
        self._sink.truncate()
        self._received = 0
        self.pipeline = self._make()
        return 0

    def truncate(self, size: int | None = None) -> int:
        if (size if size is not None else self._received) != self._received:
            raise OSError("a download into an opening sink only rewinds to its start")
        return self._received

    def flush(self) -> None:
        pass


def receive_opening(relay: Relay, name: str, sink: BinaryIO, start: int,
                    open_writer: Callable[[str, BinaryIO], Any], algorithm: str | None,
                    layer: Callable[[HashingWriter], _Layer | None] | None = None, *,
                    limit: int | None = None) -> tuple[OpeningPipeline, int]:
    """Download relay object ``name`` through ``relay`` into ``sink`` (which
    stands at ``start``), opened (and passed through ``layer``) and hashed
    with ``algorithm`` as it arrives: no spool file. Returns the pipeline of
    the attempt that completed (its ``counting`` writer and ``hasher``, for
    the caller's size and checksum checks) and what :meth:`OpeningPipeline.finish`
    returned. Raises the relay's errors, IntegrityError (the object does not
    open), ObjectTooLarge (more than ``limit`` sealed bytes arrived: see
    :func:`received_bound`), the sink's OSError; ``sink`` may then hold a
    prefix (the caller's temporary file, discarded)."""
    opening = OpeningSink(lambda: OpeningPipeline(open_writer, name, sink, algorithm, layer), sink, start,
                          name=name, limit=limit)
    relay.get(name, cast(BinaryIO, opening))
    pipeline = opening.pipeline
    return pipeline, pipeline.finish()
