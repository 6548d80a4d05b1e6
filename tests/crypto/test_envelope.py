"""The sealed envelope: round trips, sizes, and every way a relay can tamper."""

from __future__ import annotations

import hashlib
import io
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escale.crypto import (
    CHUNK_SIZE,
    Envelope,
    KeySecret,
    create_repository_header,
    open_repository_header,
    padded_size,
    plain_envelope,
)
from escale.crypto.envelope import HEADER_SIZE
from escale.errors import IntegrityError
from tests.crypto.conftest import ALL_ALGORITHMS, SLOW_ALGORITHMS

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10 * 1024 * 1024]


def _data(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class _Trickle(io.RawIOBase):
    """A source that returns at most 1000 bytes per read (like a pipe or socket)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size if size >= 0 else 1000, 1000))


class _Dribble(io.RawIOBase):
    """A sink that accepts at most 1000 bytes per write (like a raw pipe)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.data += data[:1000]
        return min(len(data), 1000)


def _chunks(env: Envelope, sealed: bytes) -> list[bytes]:
    """Split a sealed object into its chunks (full chunk size from a sealed full chunk)."""
    full = (env.sealed_size(3 * CHUNK_SIZE) - env.sealed_size(2 * CHUNK_SIZE)) if env.encrypted else 0
    body = sealed[HEADER_SIZE:]
    return [body[i : i + full] for i in range(0, len(body), full)]


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "size",
    [pytest.param(s, marks=pytest.mark.slow) if s > 1_000_000 else s for s in SIZES],
)
def test_round_trip(algorithm: str, envelope: Envelope, size: int) -> None:
    if size > 1_000_000 and algorithm in SLOW_ALGORITHMS:
        pytest.skip("pure-Python Blowfish: covered at 10 MiB by test_round_trip_10mib_pure_blowfish")
    data = _data(size, size)
    sealed = envelope.seal("folder/file.bin", data)
    assert len(sealed) == envelope.sealed_size(size)
    assert envelope.open("folder/file.bin", sealed) == data


@pytest.mark.slow
def test_round_trip_10mib_pure_blowfish(repositories: dict[str, tuple[bytes, Envelope]], key_secret: KeySecret) -> None:
    """blowfish.blowfish is pure Python (~1 MB/s): seal with OpenSSL, open with it."""
    header, fast = repositories["blowfish"]
    pure = open_repository_header(header, key_secret, relay="r", algorithm="blowfish.blowfish")
    data = _data(10 * 1024 * 1024, 7)
    assert pure.open("big", fast.seal("big", data)) == data


def test_short_reads_and_partial_writes(envelope: Envelope) -> None:
    """Sources that return short reads and sinks that take part of a write are
    handled like plain files."""
    data = _data(3 * CHUNK_SIZE + 123, 3)
    sink = _Dribble()
    written = envelope.seal_stream("x", _Trickle(data), sink)  # type: ignore[arg-type]
    assert written == len(sink.data) == envelope.sealed_size(len(data))
    out = _Dribble()
    assert envelope.open_stream("x", _Trickle(bytes(sink.data)), out) == len(data)  # type: ignore[arg-type]
    assert out.data == data


@settings(max_examples=60, deadline=None)
@given(
    algorithm=st.sampled_from(ALL_ALGORITHMS),
    size=st.integers(min_value=0, max_value=3 * CHUNK_SIZE + 17),
    seed=st.integers(min_value=0, max_value=2**32),
    identity=st.text(min_size=1, max_size=80),
)
def test_round_trip_property(
    repositories: dict[str, tuple[bytes, Envelope]], algorithm: str, size: int, seed: int, identity: str
) -> None:
    if algorithm in SLOW_ALGORITHMS:
        size %= 5000
    env = repositories[algorithm][1]
    data = _data(size, seed)
    assert env.open(identity, env.seal(identity, data)) == data


def test_sealing_twice_differs(envelope: Envelope) -> None:
    """A fresh per-object nonce: equal files do not look equal on the relay."""
    assert envelope.seal("a", b"same") != envelope.seal("a", b"same")


def test_plain_envelope_passes_bytes_through() -> None:
    env = plain_envelope()
    assert not env.encrypted and env.algorithm is None
    assert env.seal("a", b"hello") == b"hello" == env.open("a", b"hello")
    sink = io.BytesIO()
    assert env.seal_stream("a", io.BytesIO(b"x" * 3_000_000), sink) == 3_000_000
    assert env.object_key("dir/é.txt") == hashlib.sha256("dir/é.txt".encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- names and sizes


def test_object_key_is_keyed_stable_hex(
    repositories: dict[str, tuple[bytes, Envelope]], key_secret: KeySecret, other_key_secret: KeySecret
) -> None:
    header, env = repositories["aes-256-gcm"]
    key = env.object_key("docs/report.pdf")
    assert len(key) == 32 and key == key.lower() and int(key, 16) >= 0
    # Another client with the same secret and header computes the same names.
    again = open_repository_header(header, key_secret, relay="r")
    assert again.object_key("docs/report.pdf") == key
    assert env.object_key("docs/report.pdf ") != key
    # Not guessable from the path alone: not the plain hash, and another key gives another name.
    assert key != plain_envelope().object_key("docs/report.pdf")
    _, other = create_repository_header("aes-256-gcm", other_key_secret)
    assert other.object_key("docs/report.pdf") != key


def test_relay_sees_padded_sizes_only(envelope: Envelope) -> None:
    assert len(envelope.seal("a", b"")) == len(envelope.seal("a", _data(4000)))
    assert len(envelope.seal("a", _data(100_001))) == len(envelope.seal("a", _data(102_400)))
    assert len(envelope.seal("a", _data(4097))) > len(envelope.seal("a", _data(4096)))


@given(st.integers(min_value=0, max_value=2**45))
def test_padding_bounds(length: int) -> None:
    padded = padded_size(length)
    assert padded >= length and padded % 4096 == 0
    assert padded - length <= 4096 if length < 128 * 1024 else padded - length <= length // 32
    if length >= 2**32:
        assert padded - length <= length // 64


def test_padding_is_monotonic() -> None:
    sizes = [padded_size(n) for n in range(0, 300_000, 97)]
    assert sizes == sorted(sizes)


# --------------------------------------------------------------------------- tampering


def _assert_integrity_error(env: Envelope, identity: str, sealed: bytes) -> None:
    with pytest.raises(IntegrityError) as info:
        env.open(identity, sealed)
    assert identity in str(info.value)


def test_every_byte_flip_is_detected(envelope: Envelope) -> None:
    sealed = envelope.seal("obj", b"small object, one chunk")
    undetected = []
    for i in range(len(sealed)):
        altered = bytearray(sealed)
        altered[i] ^= 0x01 if i % 2 else 0x80
        try:
            envelope.open("obj", bytes(altered))
        except IntegrityError:
            continue
        undetected.append(i)
    assert undetected == []


@pytest.fixture
def multi(envelope: Envelope) -> tuple[bytes, bytes, list[bytes]]:
    """A 3.5-chunk plaintext, its sealed form and the sealed chunks."""
    data = _data(3 * CHUNK_SIZE + CHUNK_SIZE // 2, 11)
    sealed = envelope.seal("multi", data)
    chunks = _chunks(envelope, sealed)
    assert len(chunks) == 4 and b"".join(chunks) == sealed[HEADER_SIZE:]
    return data, sealed, chunks


def test_truncation_anywhere_is_detected(envelope: Envelope, multi: tuple[bytes, bytes, list[bytes]]) -> None:
    _, sealed, chunks = multi
    boundaries = [0, HEADER_SIZE - 1, HEADER_SIZE]
    offset = HEADER_SIZE
    for chunk in chunks[:-1]:
        boundaries += [offset + len(chunk) // 2, offset + len(chunk)]
        offset += len(chunk)
    boundaries += [offset + 1, len(sealed) - 1]
    for cut in boundaries:
        _assert_integrity_error(envelope, "multi", sealed[:cut])


def test_appended_bytes_are_detected(envelope: Envelope, multi: tuple[bytes, bytes, list[bytes]]) -> None:
    _, sealed, chunks = multi
    _assert_integrity_error(envelope, "multi", sealed + b"\0")
    _assert_integrity_error(envelope, "multi", sealed + chunks[-1])


def test_reordered_chunks_are_detected(envelope: Envelope, multi: tuple[bytes, bytes, list[bytes]]) -> None:
    _, sealed, c = multi
    header = sealed[:HEADER_SIZE]
    _assert_integrity_error(envelope, "multi", header + c[1] + c[0] + c[2] + c[3])
    _assert_integrity_error(envelope, "multi", header + c[0] + c[2] + c[1] + c[3])


def test_duplicated_chunks_are_detected(envelope: Envelope, multi: tuple[bytes, bytes, list[bytes]]) -> None:
    _, sealed, c = multi
    header = sealed[:HEADER_SIZE]
    _assert_integrity_error(envelope, "multi", header + c[0] + c[1] + c[1] + c[2] + c[3])
    _assert_integrity_error(envelope, "multi", header + c[0] + c[1] + c[1] + c[3])
    _assert_integrity_error(envelope, "multi", header + c[0] + c[0] + c[0] + c[3])


def test_dropped_chunk_is_detected(envelope: Envelope, multi: tuple[bytes, bytes, list[bytes]]) -> None:
    _, sealed, c = multi
    _assert_integrity_error(envelope, "multi", sealed[:HEADER_SIZE] + c[0] + c[2] + c[3])


def test_chunks_spliced_from_another_object_are_detected(
    envelope: Envelope, multi: tuple[bytes, bytes, list[bytes]]
) -> None:
    data, sealed, c = multi
    other = _chunks(envelope, envelope.seal("multi", data))  # same identity, same data, new nonce
    _assert_integrity_error(envelope, "multi", sealed[:HEADER_SIZE] + c[0] + other[1] + c[2] + c[3])
    # the header of one sealing with the chunks of another
    _assert_integrity_error(envelope, "multi", sealed[:HEADER_SIZE] + b"".join(other))


def test_object_swap_is_detected(envelope: Envelope) -> None:
    """An object moved or copied to another name does not open there."""
    sealed = envelope.seal("placeholders/aaaa", b"content of a")
    _assert_integrity_error(envelope, "placeholders/bbbb", sealed)
    assert envelope.open("placeholders/aaaa", sealed) == b"content of a"


def test_object_of_another_repository_is_rejected(
    algorithm: str, envelope: Envelope, other_key_secret: KeySecret
) -> None:
    _, foreign = create_repository_header(algorithm, other_key_secret)
    with pytest.raises(IntegrityError, match="another key"):
        envelope.open("x", foreign.seal("x", b"from elsewhere"))


def test_replay_of_older_version_is_not_detected_by_envelope_alone(envelope: Envelope) -> None:
    """Documented limit (doc/security.rst): the envelope is stateless, so an older
    sealing of the SAME name opens; the protocol detects replays with versions."""
    old = envelope.seal("index/page-1", b"version 1")
    envelope.seal("index/page-1", b"version 2")
    assert envelope.open("index/page-1", old) == b"version 1"


def test_open_stream_on_tampering_raises_and_caller_discards(envelope: Envelope) -> None:
    data = _data(2 * CHUNK_SIZE + 5, 5)
    sealed = bytearray(envelope.seal("s", data))
    sealed[-1] ^= 1
    sink = io.BytesIO()
    with pytest.raises(IntegrityError):
        envelope.open_stream("s", io.BytesIO(bytes(sealed)), sink)
    assert data.startswith(sink.getvalue())  # at most a genuine prefix was written


# --------------------------------------------------------------------------- blowfish interoperability


@pytest.mark.parametrize(
    ("sealer", "opener"),
    [
        ("blowfish.cryptography", "blowfish.blowfish"),
        ("blowfish.blowfish", "blowfish.cryptography"),
        ("blowfish", "blowfish.blowfish"),
    ],
)
def test_blowfish_implementations_interoperate(key_secret: KeySecret, sealer: str, opener: str) -> None:
    header, seal_env = create_repository_header(sealer, key_secret)
    open_env = open_repository_header(header, key_secret, relay="r", algorithm=opener)
    assert open_env.algorithm == opener
    data = os.urandom(CHUNK_SIZE + 999)
    assert open_env.open("bf", seal_env.seal("bf", data)) == data
    assert seal_env.open("bf", open_env.seal("bf", data)) == data
