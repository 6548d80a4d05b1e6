"""The chunked envelope: how one relay object is sealed, whatever the algorithm.

Layout of a sealed object (all integers big-endian; exact spec in
``doc/security.rst``)::

    header (48 bytes)
        magic "ESCE" | version 1 | format id | log2(chunk size) = 16 | flags 0
        | key id (8) | object nonce (32, random per sealing)
    chunk 0, chunk 1, ..., chunk n-1 (the last one has the final flag)

Each chunk's plaintext is ``u32 data length || data || zero padding``; every
chunk but the last holds a 64 KiB body. Each is sealed by the algorithm's
:class:`~escale.crypto.ciphers.ChunkCipher` under a key derived for this object
(HKDF of the repository content key with the object nonce), with associated
data ``SHA-256(label || header || identity) || u64 index || u8 final``.

So an object renamed on the relay (identity), cut at any point (final flag,
length), with chunks reordered, duplicated or spliced from another object
(index, per-object key), or flipped anywhere fails to open. The replay of an
older sealing of the SAME identity cannot be told by the envelope alone: the
protocol detects it with version numbers.

Sizes: the data is padded (see :func:`padded_size`) so that the relay learns a
size only to a step of 4 KiB below 128 KiB, about 3 % up to 4 GiB and 1.6 %
above, never the exact length. Memory stays
at about two chunks whatever the object size.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from escale.crypto.ciphers import Algorithm, AuthenticationFailed, ChunkCipher
from escale.crypto.keys import RepositoryKeys
from escale.errors import IntegrityError

log = logging.getLogger(__name__)

MAGIC = b"ESCE"
VERSION = 1
CHUNK_LOG2 = 16
#: Data bytes per chunk (each chunk's plaintext adds a 4-byte length).
CHUNK_SIZE = 1 << CHUNK_LOG2
NONCE_SIZE = 32
_HEADER = struct.Struct(">4sBBBB8s32s")
HEADER_SIZE = _HEADER.size
#: Padding granularity floor: every sealed object holds at least this much plaintext.
MIN_PADDING = 4096
_LEN = struct.Struct(">I")
#: Associated data of a chunk: object context (32) + index (8) + final flag (1).
_AAD_SIZE = 32 + 8 + 1
_ZEROS = bytes(CHUNK_SIZE)
_COPY = 1 << 20


def padding_granularity(length: int) -> int:
    """The size step the relay sees for a ``length``-byte plaintext.

    Padmé (Nikitin et al., PETS 2019): keep only the top ``floor(log2 E) + 1``
    bits of the length, where ``E = floor(log2 length)``; so the step is
    ``2 ** (E - floor(log2 E) - 1)``: at most 1/32 of the length up to 4 GiB and
    1/64 above; never below :data:`MIN_PADDING` (so at most 4 KiB below 128 KiB).
    """
    if length < 2:
        return MIN_PADDING
    e = length.bit_length() - 1
    return max(MIN_PADDING, 1 << (e - e.bit_length()))


def padded_size(length: int) -> int:
    """``length`` rounded up to its :func:`padding_granularity` (at least one step)."""
    step = padding_granularity(length)
    return max(step, -(-length // step) * step)


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Read ``size`` bytes, or fewer only at end of stream (short reads are retried)."""
    data = source.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = source.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _write_all(sink: BinaryIO, data: bytes | memoryview) -> None:
    """Write all of ``data``: raw (unbuffered) sinks may accept only part of it."""
    written = sink.write(data)
    if written is None or written >= len(data):
        return
    view = memoryview(data)[written:]
    while view:
        written = sink.write(view) or 0
        view = view[written:]


class OpeningWriter(ABC):
    """What :meth:`Envelope.open_writer` returns."""

    #: plaintext bytes written to the sink so far
    written: int = 0

    @abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Take the next sealed bytes; returns ``len(data)``."""

    @abstractmethod
    def finish(self) -> int:
        """The sealed object ended: check its end (final chunk, truncation)
        and return the number of plaintext bytes written."""


class _PassThrough(OpeningWriter):
    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink

    def write(self, data: bytes | bytearray | memoryview) -> int:
        _write_all(self._sink, memoryview(data))
        self.written += len(data)
        return len(data)

    def finish(self) -> int:
        return self.written


class Envelope(ABC):
    """How the protocol layer stores bytes on the relay: plain or encrypted.

    ``identity`` is the relay object name; an encrypted object opens only under
    the identity it was sealed with.
    """

    encrypted: bool
    algorithm: str | None

    @abstractmethod
    def seal_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int:
        """Read ``source`` to its end and write its sealed form to ``sink``.

        Returns the number of bytes written to ``sink``. Memory stays flat
        whatever the size. If it raised (a read or write error), ``sink`` holds
        an unusable prefix.
        """

    @abstractmethod
    def open_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int:
        """Read a sealed object from ``source``, write its plaintext to ``sink``.

        Returns the number of plaintext bytes written. Raises IntegrityError
        (naming ``identity``) on any altered byte, truncation (also at a chunk
        boundary), reordered or duplicated chunk, or another identity. The check
        is streamed: when it raises, a PREFIX OF THE PLAINTEXT MAY ALREADY HAVE
        BEEN WRITTEN to ``sink``; the caller writes to a temporary file and
        discards it on error.
        """

    @abstractmethod
    def object_key(self, path: str) -> str:
        """A stable 32-lowercase-hex name for ``path`` (keyed when encrypted)."""

    @abstractmethod
    def sealed_size(self, size: int) -> int:
        """The size on the relay of a sealed ``size``-byte plaintext."""

    def seal(self, identity: str, data: bytes) -> bytes:
        """:meth:`seal_stream` for bytes in memory."""
        sink = io.BytesIO()
        self.seal_stream(identity, io.BytesIO(data), sink)
        return sink.getvalue()

    def open(self, identity: str, data: bytes) -> bytes:
        """:meth:`open_stream` for bytes in memory (nothing is returned on error)."""
        sink = io.BytesIO()
        self.open_stream(identity, io.BytesIO(data), sink)
        return sink.getvalue()

    @abstractmethod
    def seal_pieces(self, identity: str, source: BinaryIO) -> Iterator[bytes]:
        """:meth:`seal_stream`, yielding the sealed form piece by piece (the
        header, then one sealed chunk at a time) as ``source`` is read: the
        caller sends each piece on (no spool), in memory that stays flat. The
        pieces add up to :meth:`sealed_size` of the bytes read."""

    @abstractmethod
    def open_writer(self, identity: str, sink: BinaryIO) -> OpeningWriter:
        """:meth:`open_stream` the other way round: a writer to which the sealed
        object is written in pieces of any size (as a relay download delivers
        it), which writes the plaintext to ``sink`` as it is authenticated;
        :meth:`OpeningWriter.finish` ends it. Same checks and errors as
        :meth:`open_stream`, raised by ``write`` or ``finish``, and the same
        caveat: ``sink`` may hold a prefix of the plaintext when they raise."""


class PlainEnvelope(Envelope):
    """No encryption: the relay holds the plain bytes; names are sha256 prefixes."""

    encrypted = False
    algorithm = None

    def _copy(self, source: BinaryIO, sink: BinaryIO) -> int:
        total = 0
        while True:
            data = source.read(_COPY)
            if not data:
                return total
            _write_all(sink, data)
            total += len(data)

    def seal_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int:
        return self._copy(source, sink)

    def seal_pieces(self, identity: str, source: BinaryIO) -> Iterator[bytes]:
        while data := source.read(_COPY):
            yield data

    def open_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int:
        return self._copy(source, sink)

    def open_writer(self, identity: str, sink: BinaryIO) -> OpeningWriter:
        return _PassThrough(sink)

    def object_key(self, path: str) -> str:
        return hashlib.sha256(path.encode("utf-8")).hexdigest()[:32]

    def sealed_size(self, size: int) -> int:
        return size

    def __repr__(self) -> str:
        return "PlainEnvelope()"


class EncryptedEnvelope(Envelope):
    """The chunked, authenticated, padded envelope of the module docstring."""

    encrypted = True

    def __init__(self, algorithm: Algorithm, keys: RepositoryKeys) -> None:
        self._alg = algorithm
        self._keys = keys
        self.algorithm = algorithm.name

    def __repr__(self) -> str:
        return f"EncryptedEnvelope(algorithm={self.algorithm!r}, key_id={self._keys.key_id.hex()})"

    # ------------------------------------------------------------------ internals

    def _context(self, identity: str, header: bytes) -> tuple[bytes, ChunkCipher]:
        """Per-object associated-data prefix and cipher."""
        ident = identity.encode("utf-8")
        context = hashlib.sha256(b"escale envelope v1\0" + header + len(ident).to_bytes(4, "big") + ident).digest()
        nonce = header[-NONCE_SIZE:]
        info = b"escale object key v1" + bytes([self._alg.format_id])
        key = HKDF(hashes.SHA256(), self._alg.key_size, nonce, info).derive(self._keys.content)
        return context, self._alg.build(key, _AAD_SIZE)

    @staticmethod
    def _aad(context: bytes, index: int, final: bool) -> bytes:
        return context + index.to_bytes(8, "big") + (b"\1" if final else b"\0")

    def sealed_size(self, size: int) -> int:
        padded = padded_size(size)
        chunks = -(-padded // CHUNK_SIZE)
        last = padded - (chunks - 1) * CHUNK_SIZE
        dummy = self._alg.build(bytes(self._alg.key_size), _AAD_SIZE)
        full = dummy.sealed_size(_LEN.size + CHUNK_SIZE)
        return HEADER_SIZE + (chunks - 1) * full + dummy.sealed_size(_LEN.size + last)

    # ------------------------------------------------------------------ sealing

    def seal_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int:
        written = 0
        for piece in self.seal_pieces(identity, source):
            _write_all(sink, piece)
            written += len(piece)
        return written

    def seal_pieces(self, identity: str, source: BinaryIO) -> Iterator[bytes]:
        header = _HEADER.pack(
            MAGIC, VERSION, self._alg.format_id, CHUNK_LOG2, 0, self._keys.key_id, os.urandom(NONCE_SIZE)
        )
        context, cipher = self._context(identity, header)

        def sealed(index: int, data: bytes, body_size: int, final: bool) -> bytes:
            plaintext = _LEN.pack(len(data)) + data + _ZEROS[: body_size - len(data)]
            return cipher.encrypt(index, plaintext, self._aad(context, index, final))

        yield header
        written = HEADER_SIZE
        index = 0
        pending = _read_full(source, CHUNK_SIZE)
        while len(pending) == CHUNK_SIZE:
            following = _read_full(source, CHUNK_SIZE)
            if not following:
                break
            piece = sealed(index, pending, CHUNK_SIZE, False)
            written += len(piece)
            yield piece
            index += 1
            pending = following
        length = index * CHUNK_SIZE + len(pending)
        padded = padded_size(length)
        chunks = -(-padded // CHUNK_SIZE)
        for i in range(index, chunks):
            final = i == chunks - 1
            piece = sealed(i, pending, padded - i * CHUNK_SIZE if final else CHUNK_SIZE, final)
            written += len(piece)
            yield piece
            pending = b""
        log.debug(
            "sealed %s with %s: %d bytes, padded to %d, %d chunks, %d bytes sealed",
            identity,
            self.algorithm,
            length,
            padded,
            chunks,
            written,
        )

    # ------------------------------------------------------------------ opening

    def _check_header(self, identity: str, header: bytes) -> None:
        if len(header) < HEADER_SIZE:
            raise IntegrityError(f"relay object {identity} is truncated: no complete envelope header")
        magic, version, format_id, chunk_log2, flags, key_id, _nonce = _HEADER.unpack(header)
        if magic != MAGIC:
            raise IntegrityError(f"relay object {identity} is not an escale envelope (bad magic)")
        if version != VERSION:
            raise IntegrityError(
                f"relay object {identity}: unknown envelope version {version} (altered, or written by a newer escale)"
            )
        if format_id != self._alg.format_id:
            raise IntegrityError(
                f"relay object {identity}: sealed with cipher format {format_id}, "
                f"this repository uses {self._alg.format_id} ({self._alg.format_name})"
            )
        if chunk_log2 != CHUNK_LOG2 or flags != 0:
            raise IntegrityError(f"relay object {identity}: unsupported envelope chunk size or flags")
        if not hmac.compare_digest(key_id, self._keys.key_id):
            raise IntegrityError(
                f"relay object {identity} was sealed with another key (key id {key_id.hex()}, "
                f"this repository's is {self._keys.key_id.hex()}): replaced, or left by another repository"
            )

    def open_writer(self, identity: str, sink: BinaryIO) -> OpeningWriter:
        return _ChunkOpener(self, identity, sink)

    def _open_chunk(self, identity: str, cipher: ChunkCipher, context: bytes, index: int, sealed: bytes,
                    final: bool, data_ended: bool) -> tuple[memoryview, bool]:
        """The data of chunk ``index`` (authenticated, its length and padding
        checked), and whether it is short (padded: every later chunk must hold
        no data); ``data_ended``: an earlier chunk was short."""
        try:
            plaintext = cipher.decrypt(index, sealed, self._aad(context, index, final))
        except AuthenticationFailed:
            raise IntegrityError(
                f"relay object {identity} failed authentication at chunk {index}: "
                "altered, truncated, reordered or stored under another name"
            ) from None
        body = len(plaintext) - _LEN.size
        data_len = _LEN.unpack_from(plaintext)[0] if body >= 0 else -1
        if (
            not 0 <= data_len <= body
            or (data_ended and data_len)
            or plaintext.count(0, _LEN.size + data_len) != body - data_len
        ):
            raise IntegrityError(f"relay object {identity}: malformed chunk {index}")
        return memoryview(plaintext)[_LEN.size : _LEN.size + data_len], data_len < body

    def open_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int:
        header = _read_full(source, HEADER_SIZE)
        self._check_header(identity, header)
        context, cipher = self._context(identity, header)
        full = cipher.sealed_size(_LEN.size + CHUNK_SIZE)
        current = _read_full(source, full)
        if not current:
            raise IntegrityError(f"relay object {identity} is truncated: no chunk after the header")
        index = 0
        written = 0
        data_ended = False
        while True:
            following = _read_full(source, full) if len(current) == full else b""
            final = not following
            data, short = self._open_chunk(identity, cipher, context, index, current, final, data_ended)
            data_ended = data_ended or short
            if data:
                _write_all(sink, data)
                written += len(data)
            if final:
                break
            current = following
            index += 1
        log.debug("opened %s with %s: %d bytes, %d chunks", identity, self.algorithm, written, index + 1)
        return written

    # ------------------------------------------------------------------ names

    def object_key(self, path: str) -> str:
        return hmac.new(self._keys.names, path.encode("utf-8"), "sha256").hexdigest()[:32]


class _ChunkOpener(OpeningWriter):
    """:meth:`EncryptedEnvelope.open_writer`: the chunks of
    :meth:`EncryptedEnvelope.open_stream`, cut from what is written. A
    complete chunk is held until a byte beyond it arrives (so it is known not
    to be the last); :meth:`finish` opens what is held as the final chunk.
    Holds at most one chunk: pieces are cut where they arrive, never gathered
    into one growing buffer."""

    def __init__(self, envelope: EncryptedEnvelope, identity: str, sink: BinaryIO) -> None:
        self._envelope = envelope
        self._identity = identity
        self._sink = sink
        self._header = bytearray()
        #: the chunk being gathered (at most one whole chunk)
        self._held = bytearray()
        self._cipher: ChunkCipher | None = None
        self._context = b""
        self._full = 0
        self._index = 0
        self._data_ended = False
        self._finished = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._finished:
            raise ValueError("write after finish")
        view = memoryview(data).cast("B")
        if self._cipher is None:
            take = min(HEADER_SIZE - len(self._header), len(view))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) < HEADER_SIZE:
                return len(data)
            header = bytes(self._header)
            self._envelope._check_header(self._identity, header)
            self._context, self._cipher = self._envelope._context(self._identity, header)
            self._full = self._cipher.sealed_size(_LEN.size + CHUNK_SIZE)
        full = self._full
        while view:
            if len(self._held) == full:  # more follows: the held chunk is not the last
                self._emit(bytes(self._held), final=False)
                self._held.clear()
            if not self._held and len(view) > full:  # a whole chunk, and more, in this piece
                self._emit(bytes(view[:full]), final=False)
                view = view[full:]
                continue
            take = min(full - len(self._held), len(view))
            self._held += view[:take]
            view = view[take:]
        return len(data)

    def _emit(self, sealed: bytes, final: bool) -> None:
        assert self._cipher is not None
        data, short = self._envelope._open_chunk(self._identity, self._cipher, self._context, self._index,
                                                 sealed, final, self._data_ended)
        self._data_ended = self._data_ended or short
        if data:
            _write_all(self._sink, data)
            self.written += len(data)
        self._index += 1

    def finish(self) -> int:
        if self._finished:
            return self.written
        self._finished = True
        if self._cipher is None:
            self._envelope._check_header(self._identity, bytes(self._header))  # raises: truncated header
        if not self._held:
            raise IntegrityError(f"relay object {self._identity} is truncated: no chunk after the header")
        self._emit(bytes(self._held), final=True)
        self._held.clear()
        log.debug("opened %s with %s: %d bytes, %d chunks", self._identity, self._envelope.algorithm,
                  self.written, self._index)
        return self.written
