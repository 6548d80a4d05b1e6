"""Making writes durable in bulk: ``syncfs(2)``.

One ``syncfs`` flushes every dirty page and every directory change of one file
system, which costs about what a single ``fsync`` costs; an ``fsync`` per file
costs one journal commit per file. escale uses it as a *barrier*: many files
are written and renamed into place without ``fsync``, then one barrier makes
them all durable before anything that relies on them (an acknowledgement, a
placeholder naming a payload) leaves the machine.

Linux only: :data:`AVAILABLE` is False elsewhere, and callers then fall back
to an ``fsync`` per file.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import cast


def _libc_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(fd)``, or None where there is none."""
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return cast(Callable[[int], int], func)


_SYNCFS = _libc_syncfs()

#: Whether :func:`syncfs` works on this platform.
AVAILABLE = _SYNCFS is not None


def syncfs(fd: int, where: str = "") -> None:
    """Flush the whole file system holding the open file or folder ``fd``.

    Raises OSError (naming ``where``) when the kernel reports a write error,
    and also where :data:`AVAILABLE` is False (ENOSYS): nothing is then known
    to be durable."""
    if _SYNCFS is None:
        raise OSError(38, os.strerror(38), where)
    if _SYNCFS(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), where)


def syncfs_path(path: str) -> None:
    """:func:`syncfs` of the file system holding the folder ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        syncfs(fd, path)
    finally:
        os.close(fd)
