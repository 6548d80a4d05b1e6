"""Encryption for escale: key files, the repository header, the sealed envelope.

The protocol layer uses only this module's public names:

* :func:`load_secret` / :func:`generate_key_file`: a client's key or passphrase;
* :func:`create_repository_header` / :func:`open_repository_header`: the bytes of
  the per-relay header (algorithm, KDF parameters, salt, MAC) and the
  :class:`Envelope` that goes with it;
* :func:`plain_envelope`: the same interface without encryption;
* :class:`Envelope`: ``seal``/``open`` (bytes), ``seal_stream``/``open_stream``
  (flat memory), ``object_key`` (relay names for paths), ``sealed_size``.

Formats and the threat model: ``doc/security.rst``.
"""

from __future__ import annotations

from escale.crypto.ciphers import ALGORITHMS
from escale.crypto.envelope import CHUNK_SIZE, Envelope, PlainEnvelope, padded_size
from escale.crypto.header import create_repository_header, open_repository_header
from escale.crypto.keys import DEFAULT_KDF, KdfParams, KeySecret, generate_key_file, load_secret

__all__ = [
    "ALGORITHMS",
    "CHUNK_SIZE",
    "DEFAULT_KDF",
    "Envelope",
    "KdfParams",
    "KeySecret",
    "create_repository_header",
    "generate_key_file",
    "load_secret",
    "open_repository_header",
    "padded_size",
    "plain_envelope",
]

_PLAIN = PlainEnvelope()


def plain_envelope() -> Envelope:
    """The envelope of an unencrypted relay: bytes pass through unchanged."""
    return _PLAIN
