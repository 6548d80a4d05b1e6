"""Verified copies of relay objects: relay to relay, relay to file, file to relay.

Objects are copied sealed, byte for byte: the copy needs no key. Each copy
goes through a temporary spool file (memory stays flat whatever the size) and
is checked: after writing to a relay, the object is read back from it and its
size and SHA-256 must equal the source's.
"""

from __future__ import annotations

import hashlib
import tempfile
from typing import BinaryIO

from escale.errors import OperationError
from escale.ops.common import ObjectInfo
from escale.relay import Relay

_CHUNK = 1024 * 1024


def digest(handle: BinaryIO) -> tuple[int, str]:
    """Size and SHA-256 hex of the rest of ``handle`` (read to its end)."""
    hasher = hashlib.sha256()
    size = 0
    while chunk := handle.read(_CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return size, hasher.hexdigest()


def fetch(relay: Relay, name: str, spool: BinaryIO) -> ObjectInfo:
    """Read object ``name`` of ``relay`` into ``spool`` (rewound afterwards).

    Raises RelayNotFound when the object is missing; ``spool`` then holds a
    prefix at most.
    """
    spool.seek(0)
    spool.truncate()
    relay.get(name, spool)
    spool.seek(0)
    size, sha = digest(spool)
    spool.seek(0)
    return ObjectInfo(name, size, sha)


def store_verified(relay: Relay, info: ObjectInfo, source: BinaryIO, *, spool_dir: str | None = None) -> None:
    """Write ``source`` (seekable, at its start) as object ``info.name``, then read
    it back and compare with ``info``.

    The write is atomic (the backend's contract). Raises OperationError naming
    the object and the relay when the read-back differs; the differing object
    is left in place then (the caller reports the operation as failed).
    """
    relay.put(info.name, source)
    with tempfile.TemporaryFile(dir=spool_dir) as back:
        relay.get(info.name, back)
        back.seek(0)
        size, sha = digest(back)
    if (size, sha) != (info.size, info.sha256):
        raise OperationError(
            f"relay object {info.name}: read back from {relay.describe()} differs from the source "
            f"({size} bytes, sha256 {sha[:12]}…; expected {info.size} bytes, {info.sha256[:12]}…)"
        )


def copy_object(source: Relay, target: Relay, name: str, *, spool_dir: str | None = None) -> ObjectInfo:
    """Copy object ``name`` from ``source`` to ``target`` and verify the copy.

    Raises RelayNotFound when the source object vanished (nothing was written),
    OperationError when the copy read back differs.
    """
    with tempfile.TemporaryFile(dir=spool_dir) as spool:
        info = fetch(source, name, spool)
        store_verified(target, info, spool, spool_dir=spool_dir)
    return info
