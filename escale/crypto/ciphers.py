"""Chunk ciphers: one authenticated encryption of one envelope chunk, per algorithm.

Every algorithm is used through the same small interface, :class:`ChunkCipher`,
built for ONE object from a per-object key (see :mod:`escale.crypto.envelope`):

* ``encrypt(index, plaintext, aad)`` returns the sealed chunk;
* ``decrypt(index, sealed, aad)`` returns the plaintext or raises
  :class:`AuthenticationFailed` when the chunk, its position or its associated
  data (``aad``: object identity, header, chunk index, final flag) do not match;
* ``sealed_size(n)`` is the sealed size of an ``n``-byte plaintext (a function of
  ``n`` only, so that the relay learns nothing beyond the padded size).

Algorithms:

``aes-256-gcm``, ``chacha20-poly1305``
    AEAD; the nonce is the chunk index (96 bits), unique because the key is unique
    per object. 16-byte tag.
``fernet``
    AES-128-CBC + HMAC-SHA256 (the Fernet spec), timestamp fixed at 0 so that the
    relay does not learn the writer's clock. Fernet has no associated data: the
    ``aad`` is encrypted in front of the plaintext and checked after decryption.
    The token is stored raw (not base64), saving a third of the space.
``blowfish`` (= ``blowfish.cryptography``), ``blowfish.blowfish``
    Blowfish in CTR mode (64-bit counter block ``index << 16 | block``), then
    HMAC-SHA256 over ``aad || ciphertext`` with a separate key (encrypt-then-MAC),
    32-byte tag. The two aliases are two implementations of the block cipher
    (cryptography/OpenSSL, and the pure-Python ``blowfish`` package) behind one
    format: they interoperate.
"""

from __future__ import annotations

import base64
import functools
import hmac
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from escale.errors import CryptoError

log = logging.getLogger(__name__)

try:  # cryptography >= 43 keeps Blowfish among the "decrepit" algorithms
    from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish as _Blowfish
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import Blowfish as _Blowfish


class AuthenticationFailed(Exception):
    """A chunk did not authenticate (internal; the envelope turns it into IntegrityError)."""


class ChunkCipher(ABC):
    """Authenticated encryption of the chunks of one object (see module docstring)."""

    @abstractmethod
    def sealed_size(self, plain_len: int) -> int:
        """Size of the sealed form of a ``plain_len``-byte chunk."""

    @abstractmethod
    def encrypt(self, index: int, plaintext: bytes, aad: bytes) -> bytes:
        """Seal chunk number ``index``; ``aad`` is authenticated, not stored."""

    @abstractmethod
    def decrypt(self, index: int, sealed: bytes, aad: bytes) -> bytes:
        """Open chunk number ``index``; AuthenticationFailed if anything differs."""


# --------------------------------------------------------------------------- AEAD


class _AeadCipher(ChunkCipher):
    TAG = 16

    def __init__(self, aead: AESGCM | ChaCha20Poly1305) -> None:
        self._aead = aead

    def sealed_size(self, plain_len: int) -> int:
        return plain_len + self.TAG

    def encrypt(self, index: int, plaintext: bytes, aad: bytes) -> bytes:
        return self._aead.encrypt(index.to_bytes(12, "big"), plaintext, aad)

    def decrypt(self, index: int, sealed: bytes, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(index.to_bytes(12, "big"), sealed, aad)
        except InvalidTag:
            raise AuthenticationFailed from None


# --------------------------------------------------------------------------- Fernet


class _FernetCipher(ChunkCipher):
    """Fernet; ``aad_len`` (fixed per object) makes the sealed size computable."""

    # raw token: version (1) + timestamp (8) + IV (16) + CBC ciphertext + HMAC (32)
    FIXED = 1 + 8 + 16 + 32

    def __init__(self, key: bytes, aad_len: int) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._aad_len = aad_len

    def sealed_size(self, plain_len: int) -> int:
        message = self._aad_len + plain_len
        return self.FIXED + 16 * (message // 16 + 1)  # PKCS7 always adds 1..16 bytes

    def encrypt(self, index: int, plaintext: bytes, aad: bytes) -> bytes:
        token = self._fernet.encrypt_at_time(aad + plaintext, 0)
        return base64.urlsafe_b64decode(token)

    def decrypt(self, index: int, sealed: bytes, aad: bytes) -> bytes:
        try:
            message = self._fernet.decrypt(base64.urlsafe_b64encode(sealed))
        except InvalidToken:
            raise AuthenticationFailed from None
        if not hmac.compare_digest(message[: len(aad)], aad):
            raise AuthenticationFailed
        return message[len(aad) :]


# --------------------------------------------------------------------------- Blowfish

_BF_BLOCK = 8
_CTR_SHIFT = 16  # block counter bits inside a chunk: up to 2**16 blocks (512 KiB) per chunk
MAX_BLOWFISH_CHUNK = _BF_BLOCK << _CTR_SHIFT


@functools.lru_cache(maxsize=16)
def _counter_template(blocks: int) -> tuple[int, int]:
    """(low, repunit) such that the counter blocks of chunk i are ``low | (i << 16) * repunit``."""
    low = b"".join(j.to_bytes(_BF_BLOCK, "big") for j in range(blocks))
    repunit = (b"\0" * (_BF_BLOCK - 1) + b"\1") * blocks
    return int.from_bytes(low, "big"), int.from_bytes(repunit, "big")


def _counter_blocks(index: int, length: int) -> bytes:
    """The CTR input blocks covering ``length`` bytes of chunk ``index``."""
    blocks = -(-length // _BF_BLOCK)
    low, repunit = _counter_template(blocks)
    return (low | ((index << _CTR_SHIFT) * repunit)).to_bytes(blocks * _BF_BLOCK, "big")


def _xor(data: bytes, keystream: bytes) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(keystream[:n], "big")).to_bytes(n, "big")


class _BlowfishCipher(ChunkCipher):
    """Blowfish-CTR + HMAC-SHA256 (encrypt-then-MAC); ``ecb`` encrypts whole blocks."""

    TAG = 32

    def __init__(self, ecb_factory: Callable[[bytes], Callable[[bytes], bytes]], key: bytes) -> None:
        self._enc_key = key[:32]
        self._mac_key = key[32:]
        self._factory = ecb_factory
        self._ecb: Callable[[bytes], bytes] | None = None  # key schedule run lazily, after the MAC

    def _keystream(self, index: int, length: int) -> bytes:
        if self._ecb is None:
            self._ecb = self._factory(self._enc_key)
        if index >> 48:
            raise CryptoError("object too large for the blowfish envelope")
        return self._ecb(_counter_blocks(index, length))

    def sealed_size(self, plain_len: int) -> int:
        return plain_len + self.TAG

    def encrypt(self, index: int, plaintext: bytes, aad: bytes) -> bytes:
        if len(plaintext) > MAX_BLOWFISH_CHUNK:
            raise CryptoError("chunk too large for the blowfish envelope")
        body = _xor(plaintext, self._keystream(index, len(plaintext))) if plaintext else b""
        return body + hmac.digest(self._mac_key, aad + body, "sha256")

    def decrypt(self, index: int, sealed: bytes, aad: bytes) -> bytes:
        if len(sealed) < self.TAG or len(sealed) - self.TAG > MAX_BLOWFISH_CHUNK:
            raise AuthenticationFailed
        body, tag = sealed[: -self.TAG], sealed[-self.TAG :]
        if not hmac.compare_digest(hmac.digest(self._mac_key, aad + body, "sha256"), tag):
            raise AuthenticationFailed
        return _xor(body, self._keystream(index, len(body))) if body else b""


def _openssl_blowfish_ecb(key: bytes) -> Callable[[bytes], bytes]:
    encryptor = Cipher(_Blowfish(key), modes.ECB()).encryptor()
    return encryptor.update


def _pure_blowfish_ecb(key: bytes) -> Callable[[bytes], bytes]:
    import blowfish  # the pure-Python implementation, imported only when used

    cipher: Any = blowfish.Cipher(key)

    def update(data: bytes) -> bytes:
        return b"".join(cipher.encrypt_ecb(data))

    return update


@functools.lru_cache(maxsize=1)
def openssl_blowfish_available() -> bool:
    """Whether cryptography's OpenSSL offers Blowfish (OpenSSL 3 keeps it in a legacy provider)."""
    try:
        _openssl_blowfish_ecb(b"\0" * 16)(b"\0" * 8)
    except UnsupportedAlgorithm:
        return False
    return True


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Algorithm:
    """One selectable algorithm name.

    ``format_id`` identifies the sealed format in the envelope header; aliases of
    one format (the Blowfish implementations) share it and interoperate.
    ``key_size`` is the per-object key material the cipher needs.
    """

    name: str
    format_id: int
    format_name: str
    key_size: int
    build: Callable[[bytes, int], ChunkCipher]  # (per-object key, aad length) -> cipher


def _blowfish_build(name: str) -> Callable[[bytes, int], ChunkCipher]:
    def build(key: bytes, aad_len: int) -> ChunkCipher:
        if name == "blowfish.blowfish":
            return _BlowfishCipher(_pure_blowfish_ecb, key)
        if openssl_blowfish_available():
            return _BlowfishCipher(_openssl_blowfish_ecb, key)
        if name == "blowfish.cryptography":
            raise CryptoError("blowfish.cryptography: this OpenSSL build does not provide Blowfish")
        log.warning("OpenSSL does not provide Blowfish; using the slow pure-Python implementation")
        return _BlowfishCipher(_pure_blowfish_ecb, key)

    return build


ALGORITHMS: dict[str, Algorithm] = {
    "aes-256-gcm": Algorithm("aes-256-gcm", 1, "aes-256-gcm", 32, lambda k, _: _AeadCipher(AESGCM(k))),
    "chacha20-poly1305": Algorithm(
        "chacha20-poly1305", 2, "chacha20-poly1305", 32, lambda k, _: _AeadCipher(ChaCha20Poly1305(k))
    ),
    "fernet": Algorithm("fernet", 3, "fernet", 32, _FernetCipher),
    "blowfish": Algorithm("blowfish", 4, "blowfish-ctr-hmac-sha256", 64, _blowfish_build("blowfish")),
    "blowfish.cryptography": Algorithm(
        "blowfish.cryptography", 4, "blowfish-ctr-hmac-sha256", 64, _blowfish_build("blowfish.cryptography")
    ),
    "blowfish.blowfish": Algorithm(
        "blowfish.blowfish", 4, "blowfish-ctr-hmac-sha256", 64, _blowfish_build("blowfish.blowfish")
    ),
}


def get_algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; CryptoError naming it if unknown."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        known = ", ".join(ALGORITHMS)
        raise CryptoError(f"unknown encryption algorithm {name!r} (known: {known})") from None
