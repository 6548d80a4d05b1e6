"""Envelope.open_writer: the sealed object written in pieces (as a download
delivers it) opens to the same plaintext, and refuses what open() refuses."""

from __future__ import annotations

import io
import random

import pytest

from escale.crypto import CHUNK_SIZE, Envelope, plain_envelope
from escale.crypto.envelope import HEADER_SIZE
from escale.errors import IntegrityError


def _open_in_pieces(env: Envelope, identity: str, sealed: bytes, piece: int) -> bytes:
    sink = io.BytesIO()
    writer = env.open_writer(identity, sink)
    for start in range(0, len(sealed), piece):
        writer.write(sealed[start:start + piece])
    assert writer.finish() == len(sink.getvalue())
    return sink.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 17])
@pytest.mark.parametrize("piece", [1000, CHUNK_SIZE + 16 + 4, 1 << 20])
def test_pieces_open_as_open_does(envelope: Envelope, size: int, piece: int) -> None:
    data = random.Random(size).randbytes(size)
    sealed = envelope.seal("obj", data)
    assert _open_in_pieces(envelope, "obj", sealed, piece) == data == envelope.open("obj", sealed)


def test_plain_envelope_writer_passes_bytes_through() -> None:
    env = plain_envelope()
    assert _open_in_pieces(env, "x", b"abc" * 1000, 7) == b"abc" * 1000


def _variants(env: Envelope) -> list[bytes]:
    """Tampered forms of a 3.5-chunk object: truncations (in the header, at
    and inside chunk boundaries), appended bytes, a flipped byte, swapped
    chunks, another identity's object."""
    data = random.Random(5).randbytes(3 * CHUNK_SIZE + CHUNK_SIZE // 2)
    sealed = env.seal("obj", data)
    full = len(env.seal("obj", bytes(CHUNK_SIZE * 2))) - HEADER_SIZE
    full //= 2
    chunks = [sealed[HEADER_SIZE + i * full:HEADER_SIZE + (i + 1) * full] for i in range(3)]
    chunks.append(sealed[HEADER_SIZE + 3 * full:])
    header = sealed[:HEADER_SIZE]
    flipped = bytearray(sealed)
    flipped[HEADER_SIZE + full + 5] ^= 1
    out = [sealed[:cut] for cut in (0, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + full // 2,
                                     HEADER_SIZE + full, HEADER_SIZE + 3 * full, len(sealed) - 1)]
    out += [sealed + b"\0", sealed + chunks[-1], bytes(flipped),
            header + chunks[1] + chunks[0] + chunks[2] + chunks[3],
            header + chunks[0] + chunks[0] + chunks[2] + chunks[3],
            env.seal("other", data)]
    return out


@pytest.mark.parametrize("piece", [1000, 1 << 20])
def test_tampering_is_refused_as_open_refuses_it(envelope: Envelope, piece: int) -> None:
    for altered in _variants(envelope):
        with pytest.raises(IntegrityError):
            envelope.open("obj", altered)
        with pytest.raises(IntegrityError, match="obj"):
            _open_in_pieces(envelope, "obj", altered, piece)
