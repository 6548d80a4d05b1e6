"""The repository header: which algorithm and key derivation a relay uses.

One small object per relay, written once when the repository is created and
read by every client (the protocol layer chooses its relay name and stores it;
this module produces and parses its bytes). It is canonical JSON (sorted keys,
no spaces, UTF-8, one trailing newline)::

    {"algorithm":"aes-256-gcm","format":"escale-repository","kdf":{"n":131072,"name":"scrypt","p":1,"r":8},
     "key_id":"<16 hex>","mac":"<64 hex>","salt":"<base64 of 32 bytes>","version":1}

``kdf`` is ``{"name":"hkdf-sha256"}`` for a generated key. ``key_id`` is a
fingerprint of the derived keys: a mismatch means a wrong key or passphrase (or
altered salt/parameters, which cannot be told apart). ``mac`` is HMAC-SHA256,
with the header-MAC subkey, of the canonical JSON of every other field: the
relay cannot swap the algorithm or downgrade the KDF parameters.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from escale.crypto.ciphers import get_algorithm
from escale.crypto.envelope import EncryptedEnvelope, Envelope
from escale.crypto.keys import DEFAULT_KDF, KEY_ID_SIZE, KdfParams, KeySecret, RepositoryKeys, derive_keys
from escale.errors import CryptoError, IntegrityError, ProtocolError, WrongKeyError

log = logging.getLogger(__name__)

FORMAT = "escale-repository"
VERSION = 1
SALT_SIZE = 32
HKDF_NAME = "hkdf-sha256"
_MAC_LABEL = b"escale repository header v1\0"
#: A header bigger than this is refused before parsing (a hostile relay could send gigabytes).
MAX_HEADER_SIZE = 4096


@dataclass(frozen=True)
class RepositoryHeader:
    """The parsed fields of a repository header (the MAC already stripped)."""

    algorithm: str
    kdf: KdfParams | None  # None: HKDF (generated key)
    salt: bytes
    key_id: bytes

    def fields(self) -> dict[str, Any]:
        kdf: dict[str, Any] = (
            {"name": HKDF_NAME}
            if self.kdf is None
            else {"name": self.kdf.name, "n": self.kdf.n, "r": self.kdf.r, "p": self.kdf.p}
        )
        return {
            "format": FORMAT,
            "version": VERSION,
            "algorithm": self.algorithm,
            "kdf": kdf,
            "salt": base64.b64encode(self.salt).decode("ascii"),
            "key_id": self.key_id.hex(),
        }

    def mac(self, keys: RepositoryKeys) -> str:
        return hmac.new(keys.header_mac, _MAC_LABEL + _canonical(self.fields()), "sha256").hexdigest()

    def to_bytes(self, keys: RepositoryKeys) -> bytes:
        return _canonical({**self.fields(), "mac": self.mac(keys)}) + b"\n"


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def parse_header(data: bytes, *, relay: str) -> tuple[RepositoryHeader, str]:
    """Parse header bytes into (fields, mac hex). ProtocolError naming ``relay`` if malformed.

    Only the canonical serialisation is accepted (so every byte is covered by
    the MAC); the KDF parameters are bounds-checked before anything runs scrypt.
    """
    where = f"repository header of relay {relay}"
    if len(data) > MAX_HEADER_SIZE:
        raise ProtocolError(f"{where} is too large ({len(data)} bytes)")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ProtocolError(f"{where} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{where} is not a JSON object")
    if obj.get("format") != FORMAT:
        raise ProtocolError(f"{where} is not an escale repository header")
    if obj.get("version") != VERSION:
        raise ProtocolError(f"{where} has unsupported version {obj.get('version')!r}")
    expected = {"format", "version", "algorithm", "kdf", "salt", "key_id", "mac"}
    if set(obj) != expected:
        raise ProtocolError(f"{where} has unexpected fields: {sorted(set(obj) ^ expected)}")
    algorithm, kdf_obj, salt_text = obj["algorithm"], obj["kdf"], obj["salt"]
    key_id_text, mac = obj["key_id"], obj["mac"]
    if not all(isinstance(v, str) for v in (algorithm, salt_text, key_id_text, mac)):
        raise ProtocolError(f"{where}: algorithm, salt, key_id and mac must be strings")
    if not isinstance(kdf_obj, dict):
        raise ProtocolError(f"{where}: kdf must be an object")
    kdf: KdfParams | None
    if kdf_obj == {"name": HKDF_NAME}:
        kdf = None
    elif kdf_obj.get("name") == "scrypt" and set(kdf_obj) == {"name", "n", "r", "p"}:
        if not all(type(kdf_obj[k]) is int for k in ("n", "r", "p")):
            raise ProtocolError(f"{where}: scrypt parameters must be integers")
        kdf = KdfParams(n=kdf_obj["n"], r=kdf_obj["r"], p=kdf_obj["p"])
        try:
            kdf.check()
        except ValueError as exc:
            raise ProtocolError(f"{where}: {exc}") from None
    else:
        raise ProtocolError(f"{where}: unknown key derivation {kdf_obj.get('name')!r}")
    try:
        salt = base64.b64decode(salt_text, validate=True)
        key_id = bytes.fromhex(key_id_text)
        bytes.fromhex(mac)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{where}: malformed salt, key_id or mac") from None
    if len(salt) != SALT_SIZE or len(key_id) != KEY_ID_SIZE or len(mac) != 64:
        raise ProtocolError(f"{where}: salt, key_id or mac has the wrong length")
    header = RepositoryHeader(algorithm=algorithm, kdf=kdf, salt=salt, key_id=key_id)
    if _canonical({**header.fields(), "mac": mac}) + b"\n" != data:
        raise ProtocolError(f"{where} is not in canonical form")
    return header, mac


def create_repository_header(
    algorithm: str, secret: KeySecret, *, kdf: KdfParams | None = None
) -> tuple[bytes, Envelope]:
    """A new repository header for ``algorithm`` and ``secret``, and its envelope.

    A passphrase is derived with scrypt (``kdf``, default :data:`DEFAULT_KDF`),
    a generated key with HKDF (``kdf`` is then ignored). The salt is fresh and
    random. CryptoError if ``algorithm`` is unknown; ValueError if ``kdf`` is out
    of bounds. Nothing is written anywhere: the caller stores the bytes.
    """
    alg = get_algorithm(algorithm)
    params = None if secret.kind == "key" else (kdf or DEFAULT_KDF)
    if params is not None:
        params.check()
    salt = os.urandom(SALT_SIZE)
    keys = derive_keys(secret, salt, params)
    header = RepositoryHeader(algorithm=alg.name, kdf=params, salt=salt, key_id=keys.key_id)
    log.debug("created a repository header (algorithm %s, key id %s)", alg.name, keys.key_id.hex())
    return header.to_bytes(keys), EncryptedEnvelope(alg, keys)


def open_repository_header(header: bytes, secret: KeySecret, *, relay: str, algorithm: str | None = None) -> Envelope:
    """Check a repository header with ``secret`` and return the relay's envelope.

    Raises ProtocolError (naming the header of ``relay``) if it is malformed or
    names an unknown algorithm; WrongKeyError if the secret does not match (a
    passphrase for a generated-key repository or the reverse, or a different
    key id: which is also what an altered salt or KDF parameter looks like);
    IntegrityError if the key matches but the MAC does not (altered header).

    ``algorithm``, when given, picks the implementation among aliases of the
    header's format (``blowfish.blowfish`` for a ``blowfish`` repository); a
    different format raises CryptoError naming both.
    """
    parsed, mac = parse_header(header, relay=relay)
    try:
        alg = get_algorithm(parsed.algorithm)
    except CryptoError:
        raise ProtocolError(
            f"repository header of relay {relay} names an unknown algorithm {parsed.algorithm!r}"
        ) from None
    if algorithm is not None and algorithm != alg.name:
        chosen = get_algorithm(algorithm)
        if chosen.format_id != alg.format_id:
            raise CryptoError(f"relay {relay} is encrypted with {alg.name}, not {algorithm}")
        alg = chosen
    if (secret.kind == "key") != (parsed.kdf is None):
        log.debug("relay %s: the header expects a %s", relay, "key" if parsed.kdf is None else "passphrase")
        raise WrongKeyError(f"wrong key or passphrase for relay {relay}")
    keys = derive_keys(secret, parsed.salt, parsed.kdf)
    if not hmac.compare_digest(keys.key_id, parsed.key_id):
        raise WrongKeyError(f"wrong key or passphrase for relay {relay}")
    if not hmac.compare_digest(parsed.mac(keys), mac):
        raise IntegrityError(f"repository header of relay {relay} failed authentication (altered)")
    log.debug("opened the repository header of relay %s (algorithm %s)", relay, alg.name)
    return EncryptedEnvelope(alg, keys)
