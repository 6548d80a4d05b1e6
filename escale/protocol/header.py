"""The repository header object ``escale.repo``: layout and encryption.

Its exact form (UTF-8 JSON)::

    {"format": 1, "type": "repository", "layout": "placeholder",
     "encryption": "aes-256-gcm" | null, "crypto": "<base64 crypto header>" | null}

The crypto header (see doc/security.rst) carries the KDF salt and parameters
and is authenticated with a key derived from the secret: a relay cannot change
the algorithm or weaken the KDF without every client noticing. The outer JSON is
not secret; a relay that rewrites ``encryption`` to null is refused because the
client's configuration says the repository is encrypted.

The first client creates the header with an exclusive put; racing first clients
all end up reading the one that won.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Any

from escale.crypto import create_repository_header, open_repository_header, plain_envelope
from escale.crypto.keys import KdfParams, KeySecret
from escale.errors import ProtocolError, RelayExists, RelayNotFound
from escale.protocol import layout
from escale.protocol.envelope import Sealer
from escale.relay import Relay

log = logging.getLogger(__name__)

LAYOUT = "placeholder"


def _parse(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"relay object {layout.HEADER}: not a repository header", name=layout.HEADER) from exc
    if not isinstance(doc, dict) or doc.get("type") != "repository":
        raise ProtocolError(f"relay object {layout.HEADER}: not a repository header", name=layout.HEADER)
    if doc.get("format") != 1:
        raise ProtocolError(
            f"relay object {layout.HEADER}: unsupported repository format {doc.get('format')!r} "
            "(written by a newer escale?)", name=layout.HEADER)
    if doc.get("layout") != LAYOUT:
        raise ProtocolError(f"relay object {layout.HEADER}: layout {doc.get('layout')!r} is not supported",
                            name=layout.HEADER)
    return doc


def _new_header(encryption: str | None, secret: KeySecret | None, kdf: KdfParams | None) -> tuple[bytes, Sealer]:
    if encryption is None:
        sealer: Sealer = plain_envelope()
        crypto = None
    else:
        assert secret is not None
        raw, sealer = create_repository_header(encryption, secret, kdf=kdf)
        crypto = base64.b64encode(raw).decode("ascii")
    doc = {"format": 1, "type": "repository", "layout": LAYOUT, "encryption": encryption, "crypto": crypto}
    return json.dumps(doc, sort_keys=True).encode("utf-8"), sealer


def open_repository(
    relay: Relay,
    *,
    encryption: str | None,
    secret: Callable[[], KeySecret] | None,
    kdf: KdfParams | None = None,
) -> Sealer:
    """Read (or create) the header of the repository on ``relay``; return its sealer.

    Raises ProtocolError when the relay's encryption differs from
    ``encryption`` (naming both), WrongKeyError when the secret does not open
    it, ProtocolError for a malformed header.
    """
    where = relay.describe()
    try:
        data = relay.get_bytes(layout.HEADER)
    except RelayNotFound:
        new, sealer = _new_header(encryption, secret() if secret else None, kdf)
        try:
            relay.put_bytes(layout.HEADER, new, exclusive=True)
            log.info("created repository on %s (encryption: %s)", where, encryption or "none")
            return sealer
        except RelayExists:
            data = relay.get_bytes(layout.HEADER)
    doc = _parse(data)
    relay_encryption = doc.get("encryption")
    if relay_encryption != encryption:
        raise ProtocolError(
            f"relay {where} uses encryption {relay_encryption or 'none'} but this client is configured "
            f"with {encryption or 'none'}", name=layout.HEADER)
    if encryption is None:
        return plain_envelope()
    try:
        raw = base64.b64decode(str(doc.get("crypto") or ""), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"relay object {layout.HEADER}: bad crypto header", name=layout.HEADER) from exc
    assert secret is not None
    envelope: Sealer = open_repository_header(raw, secret(), relay=where)
    return envelope
