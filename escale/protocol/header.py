"""The repository header object ``escale.repo``: layout, encryption, identity.

Its exact form (UTF-8 JSON)::

    {"format": 1, "type": "repository", "layout": "placeholder" | "index",
     "encryption": "aes-256-gcm" | null, "crypto": "<base64 crypto header>" | null,
     "id": "<32 hex>", "checksum": "sha256" | null}

``id`` names the repository for ever (it is created once, with the header);
``checksum`` is the one content checksum algorithm of the repository, which
every client uses for what it sends and compares. Headers written before these
two fields existed are still read: their identity is then the SHA-256 of the
header bytes, and their checksum algorithm is each client's own.

The crypto header (see doc/security.rst) carries the KDF salt and parameters
and is authenticated with a key derived from the secret: a relay cannot change
the algorithm or weaken the KDF without every client noticing. The outer JSON is
not secret; a relay that rewrites ``encryption`` to null is refused because the
client's configuration says the repository is encrypted.

A repository is born once (doc/protocol.rst): the header is created only where
none exists *and* the client has never synced with a repository. A client that
knows a repository and finds no header, or a header with another identity,
stops with :class:`RepositoryGone`; nothing is re-created on its own. The first
client creates the header with an exclusive put; racing first clients all end
up reading the one that won.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from escale.crypto import create_repository_header, open_repository_header, plain_envelope
from escale.crypto.ciphers import get_algorithm
from escale.crypto.keys import KdfParams, KeySecret
from escale.errors import CryptoError, ProtocolError, RelayExists, RelayNotFound, RepositoryGone
from escale.protocol import layout
from escale.protocol.objects import MAX_OBJECT_BYTES
from escale.protocol.sealer import Sealer
from escale.relay import Relay

log = logging.getLogger(__name__)

LAYOUT = "placeholder"
#: The layouts a header may record (doc/protocol.rst, "The index layout").
LAYOUTS = ("placeholder", "index")

#: Checksum algorithms a header may name (fixed-length hashlib digests).
CHECKSUMS = frozenset({"md5", "sha1", "sha224", "sha256", "sha384", "sha512", "blake2b", "blake2s",
                       "sha3_224", "sha3_256", "sha3_384", "sha3_512"})

_IDENTITY = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Attached:
    """A repository as a client attached to it.

    ``identity``: the repository's lasting name (header ``id``, or a digest of
    an older header). ``checksum``: the repository's checksum algorithm, None
    when an older header does not fix one. ``created``: this call created it.
    ``layout``: the layout the header records.
    """

    sealer: Sealer
    identity: str
    checksum: str | None
    created: bool
    layout: str = LAYOUT


def _parse(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # ValueError: JSON, huge numbers
        raise ProtocolError(f"relay object {layout.HEADER}: not a repository header", name=layout.HEADER) from exc
    if not isinstance(doc, dict) or doc.get("type") != "repository":
        raise ProtocolError(f"relay object {layout.HEADER}: not a repository header", name=layout.HEADER)
    if doc.get("format") != 1:
        raise ProtocolError(
            f"relay object {layout.HEADER}: unsupported repository format {doc.get('format')!r} "
            "(written by a newer escale?)", name=layout.HEADER)
    if doc.get("layout") not in LAYOUTS:
        raise ProtocolError(f"relay object {layout.HEADER}: layout {doc.get('layout')!r} is not supported",
                            name=layout.HEADER)
    identity = doc.get("id")
    if identity is not None and not (isinstance(identity, str) and _IDENTITY.fullmatch(identity)):
        raise ProtocolError(f"relay object {layout.HEADER}: bad repository id", name=layout.HEADER)
    checksum = doc.get("checksum")
    if checksum is not None and (not isinstance(checksum, str) or checksum not in CHECKSUMS):
        raise ProtocolError(f"relay object {layout.HEADER}: unsupported checksum algorithm {checksum!r}",
                            name=layout.HEADER)
    return doc


def recorded_layout(relay: Relay) -> str:
    """The layout the header on ``relay`` records now (one read).

    Raises RelayNotFound when there is no header, ProtocolError when it is not
    a valid one."""
    return str(_parse(relay.get_bytes(layout.HEADER, limit=MAX_OBJECT_BYTES))["layout"])


def _identity(doc: dict[str, Any], data: bytes) -> str:
    identity = doc.get("id")
    return identity if isinstance(identity, str) else hashlib.sha256(data).hexdigest()[:32]


def same_encryption(configured: str | None, recorded: str | None) -> bool:
    """Whether a client configured with ``configured`` may use a repository
    whose header records ``recorded``: equal names, or two implementations of
    one sealed format (``blowfish`` and ``blowfish.blowfish`` interoperate)."""
    if configured is None or recorded is None:
        return configured == recorded
    if configured == recorded:
        return True
    try:
        return get_algorithm(configured).format_id == get_algorithm(recorded).format_id
    except CryptoError:
        return False


def _new_header(encryption: str | None, secret: KeySecret | None, kdf: KdfParams | None, *,
                identity: str, checksum: str | None, layout_name: str = LAYOUT) -> tuple[bytes, Sealer]:
    if encryption is None:
        sealer: Sealer = plain_envelope()
        crypto = None
    else:
        assert secret is not None
        raw, sealer = create_repository_header(encryption, secret, kdf=kdf)
        crypto = base64.b64encode(raw).decode("ascii")
    doc = {"format": 1, "type": "repository", "layout": layout_name, "encryption": encryption, "crypto": crypto,
           "id": identity, "checksum": checksum}
    return json.dumps(doc, sort_keys=True).encode("utf-8"), sealer


def open_repository(
    relay: Relay,
    *,
    encryption: str | None,
    secret: Callable[[], KeySecret] | None,
    kdf: KdfParams | None = None,
) -> Sealer:
    """Read (or create) the header of the repository on ``relay``; return its
    sealer. For whole-repository operations that decide for themselves whether
    a repository may be created; see :func:`attach_repository`."""
    return attach_repository(relay, encryption=encryption, secret=secret, kdf=kdf).sealer


def attach_repository(
    relay: Relay,
    *,
    encryption: str | None,
    secret: Callable[[], KeySecret] | None,
    kdf: KdfParams | None = None,
    known: str | None = None,
    create: bool = True,
    identity: str | None = None,
    checksum: str | None = "sha256",
    layout_name: str = LAYOUT,
    any_layout: bool = False,
) -> Attached:
    """Read the header of the repository on ``relay``, creating it if allowed.

    ``known``: the identity of the repository this client synced with (None
    for a client that never synced). A missing header is created (with the
    repository folder, and ``identity`` or a fresh one, and ``checksum``) only
    when ``create`` is true and ``known`` is None; otherwise RepositoryGone,
    naming the relay and the way out. A header with another identity than
    ``known`` also raises RepositoryGone. Raises ProtocolError when the relay's
    encryption differs from ``encryption`` (naming both), WrongKeyError when
    the secret does not open it, ProtocolError for a malformed header.
    Nothing is written unless the header is created.

    ``layout_name`` is the layout a created repository gets, and the one an
    existing header must record unless ``any_layout`` (the caller then checks
    :attr:`Attached.layout` itself); another raises ProtocolError naming it.
    """
    where = relay.describe()
    try:
        data = relay.get_bytes(layout.HEADER, limit=MAX_OBJECT_BYTES)
    except RelayNotFound:
        if known is not None:
            raise RepositoryGone(
                f"relay {where} no longer holds the repository this client synced with ({layout.HEADER} "
                "is missing: an unmounted disk or a wiped server?); nothing was re-created. Check the relay, "
                "then run `escalectl fix` to rebuild it from this client, or `escalectl migrate` to move to "
                "another relay", name=layout.HEADER) from None
        if not create:
            raise RepositoryGone(f"relay {where} holds no escale repository (no {layout.HEADER})",
                                 name=layout.HEADER) from None
        new_identity = identity or layout.new_client_id()
        new, sealer = _new_header(encryption, secret() if secret else None, kdf, identity=new_identity,
                                  checksum=checksum, layout_name=layout_name)
        relay.create_root()
        try:
            relay.put_bytes(layout.HEADER, new, exclusive=True)
            log.info("created repository on %s (encryption: %s, layout: %s)", where, encryption or "none",
                     layout_name)
            return Attached(sealer, new_identity, checksum, True, layout_name)
        except RelayExists:
            data = relay.get_bytes(layout.HEADER, limit=MAX_OBJECT_BYTES)
    doc = _parse(data)
    found = _identity(doc, data)
    if known is not None and found != known:
        raise RepositoryGone(
            f"relay {where} now holds a different repository (id {found}) than the one this client synced "
            f"with (id {known}); nothing was changed. Point this client at its own relay, or run "
            "`escalectl migrate` to move it", name=layout.HEADER)
    recorded_layout = str(doc.get("layout"))
    if not any_layout and recorded_layout != layout_name:
        raise ProtocolError(
            f"relay {where} holds a repository in the {recorded_layout} layout; this operation works on the "
            f"{layout_name} layout only (`escalectl migrate --layout` converts a repository)", name=layout.HEADER)
    recorded_checksum = doc.get("checksum")
    relay_encryption = doc.get("encryption")
    if not same_encryption(encryption, relay_encryption):
        raise ProtocolError(
            f"relay {where} uses encryption {relay_encryption or 'none'} but this client is configured "
            f"with {encryption or 'none'}", name=layout.HEADER)
    if encryption is None:
        return Attached(plain_envelope(), found, recorded_checksum, False, recorded_layout)
    try:
        raw = base64.b64decode(str(doc.get("crypto") or ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"relay object {layout.HEADER}: bad crypto header", name=layout.HEADER) from exc
    assert secret is not None
    envelope: Sealer = open_repository_header(raw, secret(), relay=where, algorithm=encryption)
    return Attached(envelope, found, recorded_checksum, False, recorded_layout)
