"""Whether a pusher may take the scan's checksum instead of hashing again.

Both layouts push a local file whose :class:`LocalVersion` may carry the
identity (inode, ctime) the file had when the scan hashed it. When the opened
file still has that identity, size and mtime before its first read and after
its last, no write happened in between (a write changes the ctime), so the
bytes read are the bytes the scan hashed and its checksum names them. Any
doubt (no identity recorded, another algorithm, no descriptor to check, a
difference) means: hash what is read.

A caller uses the two together: :func:`trusted_checksum` before reading
decides whether to hash at all; when it gave a checksum, :func:`same_file`
after the last read must still hold, or what was read is refused (it must
never go out under a checksum it does not have).
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING, BinaryIO

from escale.errors import ProtocolError

if TYPE_CHECKING:
    from escale.protocol.repository import LocalVersion


def same_file(local: LocalVersion, source: BinaryIO) -> bool:
    """Whether the open file ``source`` has the size, mtime and identity
    (inode, ctime) ``local`` records; False when ``local`` records none or
    ``source`` gives no descriptor."""
    if not local.inode:
        return False
    try:
        st = os.fstat(source.fileno())
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both of the last two
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns) == (
        local.size, local.mtime_ns, local.inode, local.ctime_ns)


def trusted_checksum(local: LocalVersion, source: BinaryIO, algorithm: str | None) -> str | None:
    """``local.checksum`` when it may stand for ``source``'s content without
    hashing it: taken with ``algorithm`` (the repository's), and ``source``
    is still the file it was taken of (:func:`same_file`). The caller checks
    :func:`same_file` again after its last read. None: hash what is read."""
    if algorithm is None or local.checksum is None or local.checksum.partition(":")[0] != algorithm:
        return None
    return local.checksum if same_file(local, source) else None


def checksum_read(local: LocalVersion, source: BinaryIO, trusted: str | None, algorithm: str | None,
                  hasher: hashlib._Hash | None) -> str | None:
    """After the last read of ``source``: the checksum of what was read.
    ``trusted`` (what :func:`trusted_checksum` gave before the first read)
    when :func:`same_file` still holds, else ProtocolError (the file changed
    while it was read); without ``trusted``, ``hasher``'s digest named with
    ``algorithm`` (None when nothing was hashed)."""
    if trusted is None:
        return f"{algorithm}:{hasher.hexdigest()}" if hasher is not None else None
    if not same_file(local, source):
        raise ProtocolError(f"{local.path} changed while it was being sent", name=local.path)
    return trusted
