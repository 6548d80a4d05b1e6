"""Key files, passphrases and key derivation.

A key file holds one of two things:

* a **generated key**: one line ``escale-key-1:<base64 of 32 random bytes>``, as
  :func:`generate_key_file` (and ``escale -i``) writes it;
* a **passphrase**: any other content, with its trailing newline removed.

Either becomes a :class:`KeySecret`. The secret never appears in ``repr()``, in a
log line or in an exception message; only its kind and where it came from do.

From a secret and a repository salt, :func:`derive_keys` computes the
:class:`RepositoryKeys` of one relay: a passphrase goes through scrypt (memory
hard), a generated key (already uniformly random) through HKDF-SHA256. Separate
subkeys are then expanded for object contents, object names and the repository
header MAC, plus a short public key id. Derivations are cached in-process, so the
daemon's repeated passes run scrypt once per relay.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
import threading
from dataclasses import dataclass
from typing import Literal, NoReturn

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from escale.errors import KeyFileError

log = logging.getLogger(__name__)

#: Prefix that marks a generated key in a key file (anything else is a passphrase).
KEY_PREFIX = "escale-key-1:"
#: Length in bytes of a generated key and of every derived subkey.
KEY_SIZE = 32
#: Length in bytes of the public key id (a fingerprint of the derived keys).
KEY_ID_SIZE = 8

SecretKind = Literal["key", "passphrase"]


class KeySecret:
    """A generated key or a passphrase, as read from a key file or the configuration.

    ``kind`` is ``"key"`` or ``"passphrase"``; ``source`` says where it came from
    (a path, or ``"passphrase setting"``). The secret itself is only reachable by
    this package and is never shown by ``repr()`` or ``str()``.
    """

    __slots__ = ("_material", "kind", "source")

    def __init__(self, kind: SecretKind, material: bytes, *, source: str) -> None:
        if kind == "key" and len(material) != KEY_SIZE:
            raise KeyFileError(f"{source}: a generated key must be {KEY_SIZE} bytes")
        if not material:
            raise KeyFileError(f"{source}: empty passphrase")
        self.kind: SecretKind = kind
        self.source = source
        self._material = material

    def __repr__(self) -> str:
        return f"KeySecret(kind={self.kind!r}, source={self.source!r})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # A secret is not meant to travel (pickling would copy it to disk or a pipe).
        raise TypeError("KeySecret cannot be pickled")

    def _fingerprint(self) -> bytes:
        """A digest used as a cache key only (never stored, never logged)."""
        return hashlib.sha256(b"escale secret cache\0" + self.kind.encode() + b"\0" + self._material).digest()


@dataclass(frozen=True)
class KdfParams:
    """scrypt parameters for passphrases: cost ``n`` (a power of two), block size
    ``r`` and parallelism ``p``. Memory used is about ``128 * n * r`` bytes."""

    n: int = 2**17
    r: int = 8
    p: int = 1
    name: str = "scrypt"

    def check(self) -> None:
        """Raise ValueError unless the parameters are within the accepted bounds.

        The bounds refuse both a useless KDF and one that would exhaust memory or
        time (a hostile relay could otherwise write such parameters); they are
        also checked when a repository header is parsed.
        """
        if self.name != "scrypt":
            raise ValueError(f"unknown KDF {self.name!r}")
        if not (MIN_SCRYPT_N <= self.n <= MAX_SCRYPT_N) or self.n & (self.n - 1):
            raise ValueError(f"scrypt n={self.n} is not a power of two in [{MIN_SCRYPT_N}, {MAX_SCRYPT_N}]")
        if not 1 <= self.r <= 32 or not 1 <= self.p <= 16:
            raise ValueError(f"scrypt r={self.r}, p={self.p} out of bounds (r in [1, 32], p in [1, 16])")
        if 128 * self.n * self.r > MAX_SCRYPT_MEMORY:
            raise ValueError(f"scrypt n={self.n}, r={self.r} needs more than {MAX_SCRYPT_MEMORY >> 20} MiB")


MIN_SCRYPT_N = 2**4
MAX_SCRYPT_N = 2**22
MAX_SCRYPT_MEMORY = 1 << 30
#: The default for passphrases: 128 MiB of memory, about 0.4 s on a 2020s x86 core.
DEFAULT_KDF = KdfParams()


@dataclass(frozen=True, repr=False)
class RepositoryKeys:
    """The subkeys of one repository (one relay), derived from a secret and a salt."""

    content: bytes
    names: bytes
    header_mac: bytes
    key_id: bytes

    def __repr__(self) -> str:
        return f"RepositoryKeys(key_id={self.key_id.hex()})"


# --------------------------------------------------------------------------- key files


def parse_key_text(text: str, *, source: str) -> KeySecret:
    """Turn the content of a key file (or a configured passphrase) into a secret.

    A line starting with :data:`KEY_PREFIX` must hold exactly a base64 key of
    :data:`KEY_SIZE` bytes (else KeyFileError, naming ``source`` only). Any other
    content is a passphrase, with its trailing line break(s) removed.
    """
    stripped = text.rstrip("\r\n")
    if stripped.startswith(KEY_PREFIX):
        encoded = stripped[len(KEY_PREFIX) :].strip()
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"{source}: malformed escale key (bad base64)") from None
        if len(raw) != KEY_SIZE:
            raise KeyFileError(f"{source}: malformed escale key ({len(raw)} bytes instead of {KEY_SIZE})")
        return KeySecret("key", raw, source=source)
    if not stripped:
        raise KeyFileError(f"{source}: empty key file or passphrase")
    return KeySecret("passphrase", stripped.encode("utf-8"), source=source)


def load_secret(key_file: str | None, passphrase: str | None) -> KeySecret:
    """Read the secret of a client: from ``key_file`` if given, else ``passphrase``.

    Raises KeyFileError (naming the file, never its content) when the file is
    missing, unreadable, not UTF-8, empty or a malformed generated key, or when
    neither is given. Logs a WARNING when the key file is accessible by group or
    others (the mode is logged, the content never).
    """
    if key_file is None:
        if passphrase is None:
            raise KeyFileError("encryption needs a key file or a passphrase; none is configured")
        return parse_key_text(passphrase, source="passphrase setting")
    path = os.path.abspath(os.path.expanduser(key_file))
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # checked first: opening a FIFO would block
            raise KeyFileError(f"key file is not a regular file: {path}")
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            raw = handle.read()
    except FileNotFoundError:
        raise KeyFileError(f"key file not found: {path}") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror or type(exc).__name__}") from None
    if mode & 0o077:
        log.warning(
            "key file %s is accessible by group or others (mode %04o); restrict it with: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not UTF-8 text") from None
    secret = parse_key_text(text, source=path)
    log.debug("read %s from key file %s", "a generated key" if secret.kind == "key" else "a passphrase", path)
    return secret


def _make_private_dirs(folder: str) -> None:
    """Create ``folder`` and its missing parents with mode 0700."""
    missing: list[str] = []
    current = folder
    while current and not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for item in reversed(missing):
        try:
            os.mkdir(item, 0o700)
        except FileExistsError:
            pass


def generate_key_file(path: str) -> None:
    """Write a new random key to ``path`` as ``escale-key-1:<base64>``.

    The file is created with mode 0600 under a temporary name (``O_EXCL``), synced,
    then linked into place, which fails atomically if ``path`` exists: an
    existing file is never overwritten (KeyFileError). Missing parent folders are
    created with mode 0700. If it raised, ``path`` was not created (a leftover
    temporary file is removed on a best-effort basis).
    """
    path = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(path)
    if os.path.lexists(path):
        raise KeyFileError(f"key file already exists, refusing to overwrite it: {path}")
    try:
        _make_private_dirs(folder)
    except OSError as exc:
        raise KeyFileError(f"cannot create folder {folder}: {exc.strerror or type(exc).__name__}") from None
    text = (KEY_PREFIX + base64.b64encode(secrets.token_bytes(KEY_SIZE)).decode("ascii") + "\n").encode()
    temp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{secrets.token_hex(6)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)
        except FileExistsError:
            raise KeyFileError(f"key file already exists, refusing to overwrite it: {path}") from None
        except OSError:
            # No hard links on this file system: check, then rename (tiny race window).
            if os.path.lexists(path):
                raise KeyFileError(f"key file already exists, refusing to overwrite it: {path}") from None
            os.rename(temp, path)
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror or type(exc).__name__}") from None
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        except OSError:
            log.warning("could not remove temporary file %s", temp)
    log.info("wrote a new key file %s", path)


# --------------------------------------------------------------------------- derivation

_cache: dict[bytes, RepositoryKeys] = {}
_cache_lock = threading.Lock()


def _expand(master: bytes, label: bytes, length: int = KEY_SIZE) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, b"escale " + label + b" v1").derive(master)


def derive_keys(secret: KeySecret, salt: bytes, kdf: KdfParams | None) -> RepositoryKeys:
    """Derive the keys of a repository from ``secret`` and the repository ``salt``.

    ``kdf`` must be scrypt parameters for a passphrase and None (HKDF) for a
    generated key (ValueError otherwise). The result is cached in-process by a
    digest of (secret, salt, parameters), so scrypt runs once per relay.
    """
    if (secret.kind == "passphrase") != (kdf is not None):
        raise ValueError("scrypt parameters go with a passphrase, HKDF with a generated key")
    if kdf is not None:
        kdf.check()
    params = b"hkdf" if kdf is None else f"scrypt:{kdf.n}:{kdf.r}:{kdf.p}".encode()
    cache_key = hashlib.sha256(secret._fingerprint() + b"\0" + salt + b"\0" + params).digest()
    with _cache_lock:
        cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    if kdf is None:
        master = HKDF(hashes.SHA256(), KEY_SIZE, salt, b"escale master key v1").derive(secret._material)
    else:
        log.debug("running scrypt (n=%d, r=%d, p=%d) for %s", kdf.n, kdf.r, kdf.p, secret.source)
        master = Scrypt(salt=salt, length=KEY_SIZE, n=kdf.n, r=kdf.r, p=kdf.p).derive(secret._material)
    keys = RepositoryKeys(
        content=_expand(master, b"content"),
        names=_expand(master, b"names"),
        header_mac=_expand(master, b"header mac"),
        key_id=_expand(master, b"key id", KEY_ID_SIZE),
    )
    with _cache_lock:
        _cache[cache_key] = keys
    return keys
