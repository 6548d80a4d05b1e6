"""A file rewritten in place behind a push's back, in the way that defeats a
check of size and mtime alone: the tests of the single-read push use it."""

from __future__ import annotations

import os

from escale.protocol.repository import LocalVersion


def rewrite_keeping_size_and_mtime(path: str, scanned: LocalVersion) -> None:
    """Overwrite the last 10 bytes of ``path`` and set its mtime back to the
    scan's, until its ctime has moved off the scan's (a rewrite within the
    clock tick of the file's creation would leave it, and the scanner records
    no identity for such a file). Size and mtime end as the scan saw them."""
    while os.stat(path).st_ctime_ns == scanned.ctime_ns:
        with open(path, "r+b") as handle:
            handle.seek(scanned.size - 10)
            handle.write(b"0123456789")
        os.utime(path, ns=(scanned.mtime_ns, scanned.mtime_ns))
    after = os.stat(path)
    assert after.st_mtime_ns == scanned.mtime_ns and after.st_size == scanned.size
