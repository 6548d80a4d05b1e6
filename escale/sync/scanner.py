"""The scanner: what the local folder holds now.

Walks the local folder, applies the client's filters, and returns a
:class:`LocalFile` per regular file. Unchanged files cost a ``stat``: their
checksum comes from the cache, keyed by size, mtime (ns), inode and ctime (ns),
so an edit within the same second, or one that sets the mtime back, still
changes the key and is re-read. Symbolic links and special files are skipped
(logged once at DEBUG); escale's own folder ``.escale`` and temporary names
starting with ``.escale-`` are never listed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat as stat_module
from dataclasses import dataclass, field

from escale.config.settings import FileFilter
from escale.errors import LocalError
from escale.sync.planner import LocalFile
from escale.sync.state import StateDB

log = logging.getLogger(__name__)

STATE_FOLDER = ".escale"
TEMP_PREFIX = ".escale-"


def is_internal(name: str) -> bool:
    """Whether a file or folder name belongs to escale itself."""
    return name == STATE_FOLDER or name.startswith(TEMP_PREFIX)


def hash_file(path: str, algorithm: str) -> str:
    """``algorithm:hex`` of a file's content (streamed)."""
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


@dataclass
class ScanResult:
    """Files found (relative ``/`` paths) and whether the root exists."""

    files: dict[str, LocalFile] = field(default_factory=dict)
    root_missing: bool = False
    hashed_bytes: int = 0


def scan(root: str, filters: FileFilter, *, checksum: str | None, db: StateDB | None,
         persist_cache: bool = True) -> ScanResult:
    """Scan ``root``. Files that vanish or change during the scan are skipped
    (the next pass sees them). Raises LocalError only when ``root`` exists but
    cannot be read."""
    result = ScanResult()
    if not os.path.isdir(root):
        result.root_missing = True
        return result
    stack = [""]
    while stack:
        folder = stack.pop()
        full = os.path.join(root, folder) if folder else root
        try:
            entries = list(os.scandir(full))
        except FileNotFoundError:
            continue
        except OSError as exc:
            if not folder:
                raise LocalError(f"cannot read local folder {root}: {exc.strerror}", path=root) from exc
            log.warning("cannot read local folder %s: %s", full, exc.strerror)
            continue
        for entry in entries:
            if is_internal(entry.name):
                continue
            rel = f"{folder}/{entry.name}" if folder else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat_module.S_ISDIR(st.st_mode):
                if filters.accepts_dir(rel):
                    stack.append(rel)
                continue
            if not stat_module.S_ISREG(st.st_mode):
                log.debug("skipping %s: not a regular file", rel)
                continue
            if not filters.accepts_file(rel):
                continue
            digest = None
            if checksum is not None:
                digest = db.cached_checksum(rel, st) if db is not None else None
                if digest is None:
                    try:
                        digest = hash_file(entry.path, checksum)
                        after = os.stat(entry.path, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        log.warning("cannot read %s: %s", rel, exc.strerror)
                        continue
                    if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
                        log.debug("skipping %s: changed while being read", rel)
                        continue
                    result.hashed_bytes += st.st_size
                    if db is not None and persist_cache:
                        db.cache_checksum(rel, st, digest)
            result.files[rel] = LocalFile(st.st_size, st.st_mtime_ns, digest)
    return result
