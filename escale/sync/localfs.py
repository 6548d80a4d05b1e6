"""Safe changes to the user's folder: atomic writes, guarded renames and deletes.

Every change to a user's file follows the same pattern: prepare the new content
under a temporary name (``.escale-part-…``) in the target's own folder, verify
it, re-check that the user's file is still exactly what the plan expected, then
rename into place. If anything fails, the temporary file is removed and the
user's file is untouched. The only unprotected window is between the re-check
and the rename (a few microseconds): an edit landing there is the one case a
sync tool without kernel help cannot rule out.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from typing import BinaryIO

from escale.errors import DiskFull, LocalError
from escale.sync.planner import LocalFile
from escale.sync.scanner import STATE_FOLDER, TEMP_PREFIX


def safe_join(root: str, rel: str) -> str:
    """The absolute path of relative path ``rel`` under ``root``.

    Raises LocalError for a path that would leave ``root`` or touch escale's own
    files (``..``, absolute, empty components, NUL, ``.escale``): a relay cannot
    make a client write outside its folder.
    """
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\x00" in rel
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] == STATE_FOLDER
        or any(p.startswith(TEMP_PREFIX) for p in parts)
    ):
        raise LocalError(f"unsafe path from relay refused: {rel!r}", path=rel)
    return os.path.join(root, *parts)


def unchanged(path: str, expect: LocalFile | None) -> bool:
    """Whether the file at ``path`` is still as expected (None: absent)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return expect is None
    if expect is None:
        return False
    return st.st_size == expect.size and st.st_mtime_ns == expect.mtime_ns


def _translate(exc: OSError, path: str) -> LocalError:
    # EFBIG: a file size limit (RLIMIT_FSIZE, a filesystem's maximum) is a full
    # disk as far as this file is concerned
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"local disk full while writing {path}; the file was left untouched", path=path)
    return LocalError(f"cannot write {path}: {exc.strerror or exc}", path=path)


def write_atomically(
    target: str,
    fill: Callable[[BinaryIO], object],
    *,
    expect: LocalFile | None,
    mtime_ns: int | None = None,
) -> os.stat_result:
    """Replace ``target`` with what ``fill`` writes, if ``target`` is still ``expect``.

    ``fill(handle)`` writes the new content and raises to abort (e.g. an
    integrity error): the target is then untouched. Returns the new file's
    stat, or raises :class:`LocalChanged` when the user's file changed since the
    plan (nothing replaced), DiskFull/LocalError on local I/O failure.
    """
    folder = os.path.dirname(target)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise _translate(exc, target) from exc
    temp = os.path.join(folder, f"{TEMP_PREFIX}part-{secrets.token_hex(6)}")
    try:
        try:
            with open(temp, "xb") as handle:
                fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            if mtime_ns is not None:
                os.utime(temp, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise _translate(exc, target) from exc
        if not unchanged(target, expect):
            raise LocalChanged(f"{target} changed during the transfer; it will be synced next pass",
                               path=target)
        try:
            if expect is None:
                os.link(temp, target)  # atomic, refuses a file that appeared meanwhile
                os.unlink(temp)
            else:
                os.replace(temp, target)
        except FileExistsError as exc:
            raise LocalChanged(f"{target} appeared during the transfer", path=target) from exc
        except OSError as exc:
            raise _translate(exc, target) from exc
        return os.stat(target, follow_symlinks=False)
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass


class LocalChanged(LocalError):
    """The user's file changed after the plan was made; the action was skipped."""

    transient = True


def rename_aside(source: str, target: str, *, expect: LocalFile) -> None:
    """Rename ``source`` to ``target`` if ``source`` is still ``expect`` and
    ``target`` does not exist (never overwrites)."""
    if not unchanged(source, expect):
        raise LocalChanged(f"{source} changed; conflict handling postponed", path=source)
    try:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.link(source, target)
        os.unlink(source)
    except FileExistsError:
        # the copy exists already (a previous attempt): same content name, keep it
        if unchanged(source, expect):
            os.unlink(source)
    except OSError as exc:
        raise _translate(exc, source) from exc


def delete_if_unchanged(path: str, expect: LocalFile) -> bool:
    """Delete ``path`` if it is still ``expect``; return whether it was deleted.
    Empty parent folders are left in place (they may be the user's)."""
    if not unchanged(path, expect):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _translate(exc, path) from exc
    return True


def open_for_push(path: str, expect: LocalFile) -> BinaryIO:
    """Open a local file for sending if it is still as scanned."""
    if not unchanged(path, expect):
        raise LocalChanged(f"{path} changed since the scan; it will be sent next pass", path=path)
    try:
        return open(path, "rb")
    except OSError as exc:
        raise LocalError(f"cannot read {path}: {exc.strerror}", path=path) from exc
