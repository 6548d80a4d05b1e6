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

    def open_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int:
        return self._copy(source, sink)

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
        header = _HEADER.pack(
            MAGIC, VERSION, self._alg.format_id, CHUNK_LOG2, 0, self._keys.key_id, os.urandom(NONCE_SIZE)
        )
        context, cipher = self._context(identity, header)

        def emit(index: int, data: bytes, body_size: int, final: bool) -> int:
            plaintext = _LEN.pack(len(data)) + data + _ZEROS[: body_size - len(data)]
            sealed = cipher.encrypt(index, plaintext, self._aad(context, index, final))
            _write_all(sink, sealed)
            return len(sealed)

        _write_all(sink, header)
        written = HEADER_SIZE
        index = 0
        pending = _read_full(source, CHUNK_SIZE)
        while len(pending) == CHUNK_SIZE:
            following = _read_full(source, CHUNK_SIZE)
            if not following:
                break
            written += emit(index, pending, CHUNK_SIZE, False)
            index += 1
            pending = following
        length = index * CHUNK_SIZE + len(pending)
        padded = padded_size(length)
        chunks = -(-padded // CHUNK_SIZE)
        for i in range(index, chunks):
            final = i == chunks - 1
            written += emit(i, pending, padded - i * CHUNK_SIZE if final else CHUNK_SIZE, final)
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
        return written

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
            try:
                plaintext = cipher.decrypt(index, current, self._aad(context, index, final))
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
            if data_len < body:
                data_ended = True
            if data_len:
                _write_all(sink, memoryview(plaintext)[_LEN.size : _LEN.size + data_len])
                written += data_len
            if final:
                break
            current = following
            index += 1
        log.debug("opened %s with %s: %d bytes, %d chunks", identity, self.algorithm, written, index + 1)
        return written

    # ------------------------------------------------------------------ names

    def object_key(self, path: str) -> str:
        return hmac.new(self._keys.names, path.encode("utf-8"), "sha256").hexdigest()[:32]
