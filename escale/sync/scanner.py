"""The scanner: what the local folder holds now.

Walks the local folder, applies the client's filters, and returns a
:class:`LocalFile` per regular file. Unchanged files cost a ``stat``: their
checksum comes from the cache, keyed by size, mtime (ns), inode and ctime (ns),
so an edit within the same second, or one that sets the mtime back, still
changes the key and is re-read. Files of 1 MiB or more that must be read are
hashed on threads of their own while the walk goes on (:data:`PARALLEL_HASH_MIN`).
A big file's :class:`LocalFile` also carries
that inode and ctime (:data:`IDENTITY_MIN_SIZE`, :data:`IDENTITY_MIN_AGE_NS`):
its push reads it once, trusting the scan's checksum while the identity holds.
The cache is read one folder at a time (one query per folder, see
:meth:`StateDB.cached_checksums`): the scan never holds the whole cache.

**Absence is a fact only when confirmed.** A path missing from
:attr:`ScanResult.files` may be taken for a deletion only if
:meth:`ScanResult.is_unconfirmed` is false for it: its folder was listed and
the entry was not there. Everything the scanner could not see is reported
instead of being left out silently:

* a file that exists but cannot be stat'ed, opened or read (permissions, I/O
  error, a stale mount), or that changed while it was being read, is in
  :attr:`ScanResult.unconfirmed`;
* a folder that cannot be listed or entered is in :attr:`ScanResult.unlisted`
  (nothing below it is known), and so is every symbolic link: escale never
  follows one, and a synced folder or file replaced by a link is not deleted
  elsewhere;
* a name escale cannot carry (not valid UTF-8, a control character, a
  backslash) is skipped with its whole subtree; no such path was ever synced.

Each unreadable path, link and uncarriable name is one line in
:attr:`ScanResult.warnings`, and is logged at WARNING the first time it is met
in this process (until it is seen fine again), at DEBUG afterwards: a daemon
rescanning every minute does not repeat itself. A file that changes while being
read, special files (sockets, fifos, devices) and empty folders are not warned
about. escale's own folder ``.escale`` and names starting with ``.escale-`` are
never listed; escale's temporary download files (``.escale-part-…``) are
reported in :attr:`ScanResult.leftovers` (see
:func:`escale.sync.localfs.remove_leftovers`).

The walk holds a file descriptor per folder level and opens each folder with
``O_NOFOLLOW`` relative to its parent, so a folder swapped for a link during
the scan is not followed either.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat as stat_module
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from escale.config.settings import FileFilter
from escale.derived import DerivedDict
from escale.errors import LocalError
from escale.protocol.objects import path_problem
from escale.sync import records
from escale.sync.localfs import PART_PREFIX as PART_PREFIX
from escale.sync.localfs import STATE_FOLDER as STATE_FOLDER
from escale.sync.localfs import TEMP_PREFIX as TEMP_PREFIX
from escale.sync.localfs import name_problem, printable
from escale.sync.planner import BaseEntry, LocalFile
from escale.sync.state import BaseMap, StateDB

log = logging.getLogger(__name__)

#: Files of at least this size carry their identity (inode, ctime) in their
#: :class:`LocalFile`, so that their push can trust the scan's checksum
#: instead of reading the file twice; below it hashing again costs little, and
#: two more integers per file would not be worth their memory.
IDENTITY_MIN_SIZE = 1024 * 1024
#: ... and only when their ctime is at least this much older than the scan's
#: start: a file's timestamps move in steps (a clock tick), so a write just
#: after the scan could leave a fresh ctime as it was; a write to a file whose
#: ctime is this old always changes it.
IDENTITY_MIN_AGE_NS = 2_000_000_000

#: Files of at least this size whose checksum must be computed are hashed on
#: threads of their own (:data:`HASH_THREADS`), while the scan goes on:
#: ``hashlib`` and ``os.read`` release the interpreter, so several big files
#: are read and hashed at once, one per core. Smaller files are hashed in
#: line (a thread's hand-over would cost more than their hashing).
PARALLEL_HASH_MIN = 1024 * 1024
#: Threads hashing big files (at most), and big files being hashed at once.
HASH_THREADS = max(2, min(4, os.cpu_count() or 1))

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

#: (root, relative path) of every path warned about and still skipped: the
#: next warning for it is logged at DEBUG. Shared by every client of the process.
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def is_internal(name: str) -> bool:
    """Whether a file or folder name belongs to escale itself."""
    return name == STATE_FOLDER or name.startswith(TEMP_PREFIX)


def hash_file(path: str, algorithm: str) -> str:
    """``algorithm:hex`` of a file's content (streamed)."""
    with open(path, "rb") as handle:
        return _hash_handle(handle.fileno(), algorithm)


def _hash_handle(fd: int, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    while chunk := os.read(fd, 1024 * 1024):
        hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


def _hash_and_stat(fd: int, algorithm: str) -> tuple[str, os.stat_result]:
    """The checksum of open file ``fd`` (read from where it stands) and its
    stat once read; raises OSError. Safe on any thread."""
    digest = _hash_handle(fd, algorithm)
    return digest, os.fstat(fd)


@dataclass
class ScanResult:
    """What the scan found, as relative ``/`` paths.

    ``files``: every regular file seen and read. ``root_missing``: the local
    folder does not exist. ``unconfirmed``: entries that exist but could not be
    stat'ed, read or hashed (or changed while being read). ``unlisted``: folders
    that could not be listed or entered, and symbolic links (nothing below them
    is known). ``folders``: every folder seen, filtered out or not, empty or
    not (its name is taken here: no file can be written there).
    ``leftovers``: escale's temporary ``.escale-part-…`` files. ``warnings``:
    one human line per path skipped this pass.
    """

    files: LocalMap = field(default_factory=lambda: LocalMap())
    root_missing: bool = False
    hashed_bytes: int = 0
    unconfirmed: set[str] = field(default_factory=set)
    unlisted: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    leftovers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def is_unconfirmed(self, path: str) -> bool:
        """Whether ``path``'s absence from :attr:`files` is unknown rather than
        confirmed: the path was unreadable, or it is (or lies below) an
        unlisted folder or a symbolic link. Such a path must not become a
        deletion, nor be written to, this pass."""
        if path in self.unconfirmed or path in self.unlisted:
            return True
        if not self.unlisted:
            return False
        index = path.find("/")
        while index != -1:
            if path[:index] in self.unlisted:
                return True
            index = path.find("/", index + 1)
        return False


class _Scan:
    def __init__(self, root: str, filters: FileFilter, checksum: str | None, db: StateDB | None,
                 persist_cache: bool, known: Mapping[str, BaseEntry] | None = None) -> None:
        self.root = root
        #: the base's records, which unchanged files share
        self.known = known if isinstance(known, BaseMap) else None
        self.filters = filters
        self.checksum = checksum
        self.db = db
        self.persist_cache = persist_cache
        self.result = ScanResult()
        self.skipped: set[str] = set()
        #: the checksum cache entries of the folder being read, by file name
        #: (read on its first file that needs one; one folder at a time)
        self.cache: dict[str, tuple[int, int, int, int, str]] | None = None
        #: checksums computed in the folder being read, written to the cache
        #: together once it is done, or every thousand (one prepared statement each)
        self.computed: list[tuple[str, os.stat_result, str]] = []
        #: a file whose ctime is at most this carries its identity (IDENTITY_MIN_AGE_NS)
        self.settled_ctime_ns = time.time_ns() - IDENTITY_MIN_AGE_NS
        #: the threads hashing big files (made on the first one, see PARALLEL_HASH_MIN)
        self.hashers: ThreadPoolExecutor | None = None
        #: big files being hashed, oldest first: (rel, stat from the listing, descriptor, hash)
        self.hashing: deque[tuple[str, os.stat_result, int, Future[tuple[str, os.stat_result]]]] = deque()

    def skip(self, rel: str, why: str) -> None:
        """Record a warning for ``rel``: WARNING the first time, DEBUG after."""
        line = f"skipping {printable(rel)}: {why}"
        self.result.warnings.append(line)
        self.skipped.add(rel)
        key = (self.root, rel)
        with _warned_lock:
            first = key not in _warned
            _warned.add(key)
        log.log(logging.WARNING if first else logging.DEBUG, "%s (in %s)", line, self.root)

    def unreadable(self, rel: str, exc: OSError) -> None:
        """File ``rel`` exists but could not be read: unconfirmed, with a warning."""
        self.result.unconfirmed.add(rel)
        self.skip(rel, f"cannot read: {exc.strerror or exc}")

    def forget_recovered(self) -> None:
        """Paths warned about before and not skipped now: warn again next time."""
        with _warned_lock:
            stale = {k for k in _warned if k[0] == self.root and k[1] not in self.skipped}
            _warned.difference_update(stale)

    def folder(self, parent: int, rel: str, name: str) -> int | None:
        """Open sub-folder ``name`` of ``parent`` without following a link."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            return None  # removed since it was listed: confirmed absent
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                # replaced (by a link or a file) since it was listed: next pass
                log.debug("skipping %s: changed while scanning", rel)
                self.result.unlisted.add(rel)
            else:
                self.result.unlisted.add(rel)
                self.skip(rel, f"cannot open folder: {exc.strerror or exc}")
            return None

    def listing(self, fd: int, rel: str) -> list[os.DirEntry[str]] | None:
        try:
            with os.scandir(fd) as entries:
                return list(entries)
        except OSError as exc:
            if not rel:
                raise LocalError(f"cannot read local folder {self.root}: {exc.strerror or exc}",
                                 path=self.root) from exc
            self.result.unlisted.add(rel)
            self.skip(rel, f"cannot list folder: {exc.strerror or exc}")
            return None

    def run(self) -> ScanResult:
        try:
            root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            self.result.root_missing = True
            return self.result
        except OSError as exc:
            raise LocalError(f"cannot read local folder {self.root}: {exc.strerror or exc}",
                             path=self.root) from exc
        # depth-first; one open descriptor per level: (fd, rel, sub-folders still to visit)
        try:
            top = self.entries(root_fd, "")
        except BaseException:
            os.close(root_fd)
            self.stop_hashing()
            raise
        stack: list[tuple[int, str, list[str]]] = [(root_fd, "", top)]
        try:
            while stack:
                fd, rel, pending = stack[-1]
                if not pending:
                    os.close(fd)
                    stack.pop()
                    continue
                name = pending.pop()
                child_rel = f"{rel}/{name}" if rel else name
                child = self.folder(fd, child_rel, name)
                if child is None:
                    continue
                try:
                    subfolders = self.entries(child, child_rel)
                except BaseException:
                    os.close(child)
                    raise
                stack.append((child, child_rel, subfolders))
            self.finish_hashing(0)
            self.write_computed()
        finally:
            for fd, _, _ in stack:
                os.close(fd)
            self.stop_hashing()
        self.forget_recovered()
        return self.result

    def write_computed(self) -> None:
        """Write the checksums computed so far to the cache (one statement)."""
        if self.computed:
            assert self.db is not None
            self.db.cache_checksums(self.computed)
            self.computed = []

    def finish_hashing(self, keep: int) -> None:
        """Take the results of the big files being hashed, oldest first,
        until at most ``keep`` are left."""
        while len(self.hashing) > keep:
            rel, st, fd, job = self.hashing.popleft()
            self.record_hash(rel, st, fd, job.result)

    def record_hash(self, rel: str, st: os.stat_result, fd: int,
                    hashing: Callable[[], tuple[str, os.stat_result]]) -> None:
        """Record file ``rel`` (listed with ``st``, open on ``fd``, which is
        closed whatever happens) from ``hashing()``: its checksum and its
        stat once read; unreadable when that raises OSError."""
        try:
            digest, after = hashing()
        except OSError as exc:
            self.unreadable(rel, exc)
            return
        finally:
            os.close(fd)
        self.hashed(rel, st, digest, after)

    def stop_hashing(self) -> None:
        """Whatever happened: wait for the hashing threads and close every
        descriptor still open (nothing more is recorded)."""
        for _, _, fd, job in self.hashing:
            try:
                if not job.cancel():
                    job.exception()  # running or done: the thread may read fd until then
            finally:
                os.close(fd)
        self.hashing.clear()
        if self.hashers is not None:
            self.hashers.shutdown(wait=True)
            self.hashers = None

    def entries(self, fd: int, folder: str) -> list[str]:
        """Record the files of folder ``fd``; return the sub-folders to visit."""
        listed = self.listing(fd, folder)
        if listed is None:
            return []
        subfolders = []
        self.cache = None
        for entry in listed:
            name = entry.name
            rel = f"{folder}/{name}" if folder else name
            problem = name_problem(name)
            if problem is not None:
                self.skip(rel, problem)
                continue
            if is_internal(name):
                if name.startswith(PART_PREFIX) and entry.is_file(follow_symlinks=False):
                    self.result.leftovers.append(rel)
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: confirmed absent
            except OSError as exc:
                # a folder (or an entry of unknown type): nothing below it is known either
                try:
                    folder_like = entry.is_dir(follow_symlinks=False)
                except OSError:
                    folder_like = True
                (self.result.unlisted if folder_like else self.result.unconfirmed).add(rel)
                self.skip(rel, f"cannot read its details: {exc.strerror or exc}")
                continue
            if stat_module.S_ISDIR(st.st_mode):
                self.result.folders.add(rel)
                if self.filters.accepts_dir(rel):
                    subfolders.append(name)
                continue
            if stat_module.S_ISLNK(st.st_mode):
                self.result.unlisted.add(rel)
                self.skip(rel, "symbolic links are not followed")
                continue
            if not stat_module.S_ISREG(st.st_mode):
                log.debug("skipping %s: not a regular file", rel)
                self.result.unconfirmed.add(rel)
                continue
            if not self.filters.accepts_file(rel):
                continue
            too_far = path_problem(rel)
            if too_far is not None:
                # a path every reader would refuse (too deep, too long): never sent
                self.skip(rel, f"cannot be synchronised: {too_far}")
                continue
            self.file(fd, folder, rel, name, st)
        self.cache = None
        self.write_computed()
        return subfolders

    def cached(self, folder: str, name: str, st: os.stat_result) -> str | None:
        """The cached checksum of file ``name`` of ``folder``, if its size,
        mtime (ns), inode and ctime (ns) are those of ``st`` and it was
        computed with this scan's algorithm; else None."""
        if self.db is None:
            return None
        if self.cache is None:
            self.cache = self.db.cached_checksums(folder)
        entry = self.cache.get(name)
        if entry is None or entry[:4] != (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns):
            return None
        digest = entry[4]
        if digest.partition(":")[0] != self.checksum:
            return None  # cached under another algorithm (the repository's differs)
        return digest

    def file(self, folder_fd: int, folder: str, rel: str, name: str, st: os.stat_result) -> None:
        digest = None
        if self.checksum is not None:
            digest = self.cached(folder, name, st)
            if digest is None:
                fd = self.open_file(folder_fd, rel, name, st)
                if fd is None:
                    return
                if st.st_size >= PARALLEL_HASH_MIN:
                    self.hash_apart(rel, st, fd)
                    return
                checksum = self.checksum
                self.record_hash(rel, st, fd, lambda: _hash_and_stat(fd, checksum))
                return
        self.found(rel, st, digest)

    def open_file(self, folder_fd: int, rel: str, name: str, st: os.stat_result) -> int | None:
        """A descriptor on file ``name`` of ``folder_fd`` (listed with ``st``),
        to hash it; None (and the path recorded as it must be) when it is gone,
        unreadable, or no longer that file."""
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=folder_fd)
        except FileNotFoundError:
            return None  # gone since the listing: confirmed absent
        except OSError as exc:
            self.result.unconfirmed.add(rel)
            if exc.errno == errno.ELOOP:  # replaced by a link meanwhile: next pass
                log.debug("skipping %s: changed while scanning", rel)
            else:
                self.skip(rel, f"cannot read: {exc.strerror or exc}")
            return None
        try:
            opened = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            self.unreadable(rel, exc)
            return None
        if not stat_module.S_ISREG(opened.st_mode) or opened.st_ino != st.st_ino:
            os.close(fd)
            self.result.unconfirmed.add(rel)
            log.debug("skipping %s: replaced while scanning", rel)
            return None
        return fd

    def hash_apart(self, rel: str, st: os.stat_result, fd: int) -> None:
        """Hash big file ``rel`` (open on ``fd``, which this now owns) on a
        hashing thread; recorded by :meth:`finish_hashing`, in the order the
        files were met."""
        assert self.checksum is not None
        if self.hashers is None:
            self.hashers = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="escale-hash")
        try:
            job = self.hashers.submit(_hash_and_stat, fd, self.checksum)
        except BaseException:
            os.close(fd)
            raise
        self.hashing.append((rel, st, fd, job))
        self.finish_hashing(HASH_THREADS)

    def hashed(self, rel: str, st: os.stat_result, digest: str, after: os.stat_result) -> None:
        """Record file ``rel`` (listed with ``st``) whose content hashed to
        ``digest``, with ``after`` its stat once read: unconfirmed when it
        changed meanwhile."""
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
                st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            self.result.unconfirmed.add(rel)
            log.debug("skipping %s: changed while being read", rel)
            return
        self.result.hashed_bytes += st.st_size
        if self.db is not None and self.persist_cache:
            self.computed.append((rel, st, digest))
            if len(self.computed) >= 1000:  # bounded, whatever the folder's size
                self.write_computed()
        self.found(rel, st, digest)

    def found(self, rel: str, st: os.stat_result, digest: str | None) -> None:
        """Add file ``rel`` (``st``, checksum ``digest``) to the result."""
        # the path interned: the base, the relay state and the plan hold the same
        # string; the file as one packed record, or its base entry's very record
        # when size, mtime and checksum are those last synced
        size, mtime_ns = st.st_size, st.st_mtime_ns
        rel = sys.intern(rel)
        if digest is not None and size >= IDENTITY_MIN_SIZE and st.st_ctime_ns <= self.settled_ctime_ns:
            record = records.pack_local(size, mtime_ns, digest, st.st_ino, st.st_ctime_ns)
            if record is None:
                self.result.files.store(rel, LocalFile(size, mtime_ns, digest, st.st_ino, st.st_ctime_ns))
                return
        else:
            record = records.pack_content(size, mtime_ns, digest)
            if record is None:
                self.result.files.store(rel, LocalFile(size, mtime_ns, digest))
                return
            if self.known is not None:
                base = self.known.record(rel)
                if base is not None and records.is_base_of(base, record):
                    record = base
        self.result.files.store(rel, record)


class LocalMap(DerivedDict[LocalFile]):
    """The scan's files: a dict of path to :class:`LocalFile` that holds, per
    path, one packed record (:mod:`escale.sync.records`: about 80 bytes,
    none of its own for a file unchanged since its base entry, whose record
    it shares) and gives a :class:`LocalFile` over that record each time it
    is read (a :class:`~escale.derived.DerivedDict`). A file without an
    exact record is held as the object itself. Setting a path stores the
    value's record; removing paths works as on a dict."""

    def derive(self, source: Any) -> LocalFile:
        if type(source) is bytes:
            return LocalFile.of_record(source)
        return source  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        # the planner's one read per path: the same as DerivedDict.get, in fewer calls
        source: object = dict.get(self, key)  # type: ignore[arg-type]  # the stored record, not a value
        if source is None:
            return default
        return LocalFile.of_record(source) if isinstance(source, bytes) else source

    def __setitem__(self, path: str, local: LocalFile) -> None:
        record = local.record
        self.store(path, local if record is None else record)


def scan(root: str, filters: FileFilter, *, checksum: str | None, db: StateDB | None,
         persist_cache: bool = True, known: Mapping[str, BaseEntry] | None = None) -> ScanResult:
    """Scan ``root`` (which may itself be a symbolic link; nothing below it is
    followed).

    Never raises for a path below ``root``: what cannot be read is reported in
    the result (see the module's docstring). Raises LocalError only when
    ``root`` exists but cannot be read; a missing ``root`` gives
    ``root_missing``. With ``checksum = None`` files are not opened: an
    unreadable file is then found when it is sent. ``known`` (the base, when
    the caller holds it as a :class:`~escale.sync.state.BaseMap`) only saves
    memory: a file whose size, mtime and checksum are its base entry's is
    held as that entry's record (see :class:`LocalMap`).
    """
    return _Scan(root, filters, checksum, db, persist_cache, known).run()
