"""Safe changes to the user's folder: atomic writes, guarded renames and deletes.

Every change to a user's file follows the same pattern: prepare the new content
under a temporary name (``.escale-part-…``) in the target's own folder, verify
it, re-check that the user's file is still exactly what the plan expected, then
rename into place. If anything fails, the temporary file is removed and the
user's file is untouched. The only unprotected window is between the re-check
and the rename (a few microseconds): an edit landing there is the one case a
sync tool without kernel help cannot rule out.

**No write through a link.** Every function here takes the local root and a
relative ``/`` path, and reaches the path's folder from the root one component
at a time with directory file descriptors (``openat`` with ``O_NOFOLLOW``), at
the moment of the operation. A component that is a symbolic link or not a
folder is refused (:class:`UnsafeLocalPath`), and so is a final entry that is a
symbolic link: nothing is ever created, replaced, renamed, deleted or read
outside the root, whatever the plan saw and whatever changed since. The root
itself may be a symbolic link (the configured ``local path`` is the user's
choice); only what lies below it is checked.
"""

from __future__ import annotations

import bisect
import collections
import errno
import functools
import itertools
import logging
import os
import queue
import re
import secrets
import stat as stat_module
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO

from escale import flush
from escale.errors import DiskFull, LocalError
from escale.sync.planner import LocalFile

log = logging.getLogger(__name__)

#: escale's own folder at the top of the local folder (state, spool).
STATE_FOLDER = ".escale"
#: Prefix of every name escale itself creates in the local folder.
TEMP_PREFIX = ".escale-"
#: Prefix of the temporary files a download is written to before the rename.
PART_PREFIX = ".escale-part-"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class LocalChanged(LocalError):
    """The user's file changed after the plan was made; the action was skipped."""

    transient = True


class UnsafeLocalPath(LocalError):
    """A component of a local path is a symbolic link or not a folder, or the
    file itself is a symbolic link: escale refuses to write, rename, delete or
    read through it. ``path`` is the absolute path of the offending entry."""


class LocalUnreadable(LocalError):
    """A local file exists but cannot be opened or read (permissions, I/O
    error): it is skipped for this pass, never taken for a deletion."""


def name_problem(name: str) -> str | None:
    """Why a single local file or folder name cannot be carried, or None.

    A name must be valid UTF-8 (``os.scandir`` turns undecodable bytes into
    lone surrogates), and must not contain what the relay protocol refuses in a
    name (a control character or a backslash, see
    :func:`escale.relay.base.check_name`).
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    if _CONTROL.search(name):
        return "its name contains a control character"
    if "\\" in name:
        return "its name contains a backslash"
    return None


def printable(path: str) -> str:
    """``path`` for a log line or message: undecodable bytes shown as ``\\xNN``,
    control characters escaped (``\\t``, ``\\x01``)."""
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate that no file name decodes to
        raw = path.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _parts(rel: str) -> tuple[str, ...]:
    """The components of a relative path, or LocalError when the path may not
    be written by escale (leaves the root, touches escale's own files, or has a
    name escale cannot carry).

    A pure function of ``rel``: the answers for recent paths are remembered
    (a received file's path is checked by the executor, then by the write;
    refusals are not remembered, they raise each time)."""
    return _checked_parts(rel)


#: A path whose every name is plainly safe: not empty, not starting with a
#: dot (so neither ``.``, ``..``, escale's ``.escale`` folder nor its
#: ``.escale-`` names), no control character, backslash or lone surrogate
#: (a name that is not UTF-8). Every path it matches passes
#: :func:`_checked_parts`; one it does not match is checked in full.
_PLAIN_NAME = r"[^\x00-\x1f\x7f/\\.\ud800-\udfff][^\x00-\x1f\x7f/\\\ud800-\udfff]*"
_PLAIN_PATH = re.compile(f"{_PLAIN_NAME}(?:/{_PLAIN_NAME})*")


def check_relative(rel: str) -> None:
    """Raise LocalError as :func:`safe_join` would for ``rel``; nothing for
    a path escale may write. For loops over every relay path (no path is
    built: a plain path is recognised in one match)."""
    if _PLAIN_PATH.fullmatch(rel) is None:
        _checked_parts(rel)


@functools.lru_cache(maxsize=4096)
def _checked_parts(rel: str) -> tuple[str, ...]:
    parts = tuple(rel.split("/"))
    if (
        not rel
        or rel.startswith("/")
        or any(p in ("", ".", "..") for p in parts)
        or parts[0] == STATE_FOLDER
        or any(p.startswith(TEMP_PREFIX) for p in parts)
        # "/" is neither a control character nor a backslash, and UTF-8 is
        # checked character by character: the whole path has a problem
        # exactly when one of its names has
        or name_problem(rel) is not None
    ):
        raise LocalError(f"unsafe path from relay refused: {printable(rel)}", path=rel)
    return parts


def safe_join(root: str, rel: str) -> str:
    """The absolute path of relative path ``rel`` under ``root``.

    Raises LocalError for a path that would leave ``root``, touch escale's own
    files (``..``, absolute, empty components, ``.escale``, ``.escale-…``
    names) or that escale cannot carry (not UTF-8, a control character, a
    backslash): a relay cannot make a client write outside its folder. This
    is a check of the name only; the operations below also refuse symbolic
    links at the moment they run.
    """
    return os.path.join(root, *_parts(rel))


def _translate(exc: OSError, path: str) -> LocalError:
    # EFBIG: a file size limit (RLIMIT_FSIZE, a filesystem's maximum) is a full
    # disk as far as this file is concerned
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"local disk full while writing {path}; the file was left untouched", path=path)
    return LocalError(f"cannot write {path}: {exc.strerror or exc}", path=path)


class _Missing(Exception):
    """A folder on the way does not exist (and was not to be created)."""


def _refusal(root: str, parts: Sequence[str], dir_fd: int, name: str, error: OSError, *,
             what: str = "write") -> LocalError:
    """The error for component ``name`` (under ``dir_fd``) that could not be
    entered as a folder (``error``): a symbolic link, something that is not a
    folder, or a folder that cannot be opened."""
    shown = "/".join(parts)
    full = os.path.join(root, *parts)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        return LocalError(f"cannot {what} below {full}: {exc.strerror or exc}", path=full)
    if stat_module.S_ISDIR(st.st_mode):
        return LocalError(f"cannot {what} below {full}: {error.strerror or error}", path=full)
    if stat_module.S_ISLNK(st.st_mode):
        return UnsafeLocalPath(f"refusing to {what} through the symbolic link {shown} (in {root})", path=full)
    return UnsafeLocalPath(f"refusing to {what} below {shown}: not a folder (in {root})", path=full)


@contextmanager
def _folder(root: str, parts: Sequence[str], *, create: bool, what: str = "write") -> Iterator[int]:
    """A file descriptor on folder ``root/parts…``, reached without following
    any symbolic link below ``root``; missing folders are made with ``create``,
    else :class:`_Missing` is raised. Closed on exit."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise LocalError(f"local folder {root} is missing", path=root) from None
        raise _Missing() from None
    except OSError as exc:
        raise LocalError(f"cannot open local folder {root}: {exc.strerror or exc}", path=root) from exc
    try:
        for index, name in enumerate(parts):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise _Missing() from None
                try:
                    os.mkdir(name, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile (or a link planted meanwhile: refused just below)
                except OSError as exc:
                    raise _translate(exc, os.path.join(root, *parts[: index + 1])) from exc
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise _refusal(root, parts[: index + 1], fd, name, exc, what=what) from None
            except OSError as exc:
                raise _refusal(root, parts[: index + 1], fd, name, exc, what=what) from None
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _matches(st: os.stat_result | None, expect: LocalFile | None) -> bool:
    if st is None or expect is None:
        return st is None and expect is None
    return stat_module.S_ISREG(st.st_mode) and st.st_size == expect.size and st.st_mtime_ns == expect.mtime_ns


def unchanged(root: str, rel: str, expect: LocalFile | None) -> bool:
    """Whether the file at ``rel`` under ``root`` is still as expected (None:
    absent). A symbolic link or a folder at ``rel`` is never ``expect``.
    Raises UnsafeLocalPath when a parent component is a link."""
    parts = _parts(rel)
    try:
        with _folder(root, parts[:-1], create=False) as fd:
            return _matches(_lstat(fd, parts[-1]), expect)
    except _Missing:
        return expect is None


#: Whether :func:`make_durable` can flush many writes at once (else every
#: write must be ``durable`` on its own).
BULK_DURABILITY = flush.AVAILABLE


def make_durable(root: str) -> None:
    """Make every write under ``root`` so far durable (one ``syncfs``).

    Raises LocalError when the kernel reports a write error: what was written
    without ``durable`` since the last call may then be lost."""
    try:
        flush.syncfs_path(root)
    except OSError as exc:
        raise LocalError(f"cannot flush {root} to disk: {exc.strerror or exc}", path=root) from exc


#: A received file at least this big is flushed on its own (``fsync``, mostly
#: by the transfer that wrote it, while the others go on) rather than by the
#: file-system-wide barrier: a group of such files is then made durable by
#: flushing the folders that name them (:func:`make_folders_durable`), which
#: does not wait for whatever else is waiting to be written on that file
#: system (another program's writes, a local relay's objects). Below this
#: size a flush of its own would cost more than the file's share of one
#: barrier (a flush of the disk's cache per file).
FLUSH_ALONE_MIN = 8 * 1024 * 1024


def make_folders_durable(root: str, rels: Iterable[str]) -> None:
    """Make the names of the files ``rels`` (relative paths under ``root``,
    whose content is durable already) durable: one ``fsync`` of each folder
    from each file's own up to ``root``, each folder once, deepest first,
    then of the folder holding ``root`` (the pass may have made ``root``
    itself). A folder made by the write of such a file is named in its
    parent, which is flushed too. Folders below ``root`` are reached without
    following a link.

    Raises LocalError when a folder cannot be reached (gone, replaced by a
    link) or flushed: the names are then not known durable (the caller falls
    back to :func:`make_durable`, or does not rely on them)."""
    folders: set[tuple[str, ...]] = set()
    for rel in rels:
        parts = _parts(rel)[:-1]
        for depth in range(len(parts), -1, -1):
            if parts[:depth] in folders:
                break
            folders.add(parts[:depth])
    for parts in sorted(folders, key=len, reverse=True):
        shown = os.path.join(root, *parts)
        try:
            with _folder(root, parts, create=False, what="flush") as fd:
                os.fsync(fd)
        except _Missing:
            raise LocalError(f"cannot flush {shown} to disk: it is gone", path=shown) from None
        except OSError as exc:
            raise LocalError(f"cannot flush {shown} to disk: {exc.strerror or exc}", path=shown) from exc
    holder = os.path.dirname(os.path.realpath(root))
    try:
        fd = os.open(holder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise LocalError(f"cannot flush {holder} to disk: {exc.strerror or exc}", path=holder) from exc


#: File systems held in memory: a file is made there in a few µs and no
#: journal makes its creation wait for a flush, so :class:`NamelessAhead`
#: costs a pass more than it saves (a pull of 10,000 files into tmpfs took
#: 30 % longer with it; into ext4, about a fifth less: doc/performance.rst).
IN_MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})
#: Where the kernel lists this process's mounts (Linux).
MOUNTINFO = "/proc/self/mountinfo"


def file_system_type(path: str, mountinfo: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (``ext4``, ``tmpfs``...):
    that of the mount whose mount point is the longest leading part of
    ``path``'s real path (the last one listed, where mounts are stacked), as
    ``mountinfo`` (the text of :data:`MOUNTINFO`, read when None) lists
    them; a line that does not read is skipped. None when that is unknown
    (no such file, or no mount holds ``path``)."""
    if mountinfo is None:
        try:
            with open(MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
                mountinfo = handle.read()
        except OSError:
            return None
    real = os.path.realpath(path)
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        fields, sep, after = line.partition(" - ")
        parts = fields.split(" ")
        if not sep or len(parts) < 5 or not after:
            continue
        point = _unescape_mount(parts[4])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), after.split(" ")[0])
    return best[1] if best is not None else None


def _unescape_mount(field: str) -> str:
    """A mount point as ``mountinfo`` spells it, with its octal escapes
    (``\\040`` for a space, and so on) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class NamelessAhead:
    """Nameless files (``O_TMPFILE``) made ahead, on a thread of their own,
    for the new files ``rels`` (relative paths under ``root``, in the order
    they will be written), each in its own target folder: creating a file is
    most of what writing a small one costs the kernel, and this way it runs
    on another core while the pass prepares the next file's content.

    Each folder is reached from the root with no symbolic link followed,
    once for a run of consecutive paths in the same folder (the thread keeps
    it open meanwhile). A folder that does not exist yet gets its files in
    its deepest existing ancestor (the write makes the folder there, so a
    file gets the same owner group and default ACL either way; walked again
    for the next path, until the folder exists); a folder that cannot be
    reached (a link, not a folder, no permission) gets no file ahead (the
    write then does everything itself, and refuses what it must).

    Nothing is named here, and where a nameless file was made does not
    decide where it goes: the write walks the target's folder from the root
    at the moment of writing and links the file under its name there
    (:func:`write_atomically`; a link across file systems falls back to a
    copy); a file made ahead and never used vanishes when closed (or when
    the process dies). Files are handed over in small batches (one wake-up
    of the pass's thread per batch, not per file); at most about ``ahead``
    files are open ahead. :meth:`close` ends the thread and closes what is
    left."""

    #: files handed over at once
    BATCH = 8

    def __init__(self, root: str, rels: list[str], *, ahead: int = 32) -> None:
        self.root = root
        #: ``rels`` (kept, not copied: the caller must not change it), and the
        #: index of the first one neither taken nor passed by a later take
        self._rels = rels
        self._next = 0
        #: the paths not taken yet, only where ``rels`` is not strictly sorted
        #: (sorted, it is searched instead: no second container per file)
        self._wanted: set[str] | None = (
            None if all(a < b for a, b in itertools.pairwise(rels)) else set(rels))
        self._batch = max(1, min(self.BATCH, ahead))
        # one slot more than the batches ahead: room for the end marker after a last batch
        self._queue: queue.Queue[list[tuple[str, int | None]] | None] = queue.Queue(
            maxsize=max(1, ahead // self._batch) + 1)
        self._taken: collections.deque[tuple[str, int | None]] = collections.deque()
        self._stop = threading.Event()
        self._ended = False
        self._thread = threading.Thread(target=self._make, args=(rels,), name="nameless-ahead", daemon=True)
        self._thread.start()

    def _put(self, item: list[tuple[str, int | None]] | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _make(self, rels: list[str]) -> None:
        folder: tuple[str, ...] | None = None  # the folder open in ``folder_fd``, when it exists
        folder_fd: int | None = None
        batch: list[tuple[str, int | None]] = []
        try:
            for rel in rels:
                if self._stop.is_set():
                    break
                made: int | None = None
                try:
                    parts = tuple(_parts(rel)[:-1])
                    if parts != folder:
                        if folder_fd is not None:
                            os.close(folder_fd)
                        folder, folder_fd = None, None
                        folder_fd, complete = _deepest_folder(self.root, parts)
                        if complete:
                            folder = parts
                    if folder_fd is not None:
                        made = os.open(".", os.O_RDWR | _TMPFILE | os.O_CLOEXEC, 0o666, dir_fd=folder_fd)
                    if folder is None and folder_fd is not None:  # an ancestor: walked again next time
                        os.close(folder_fd)
                        folder_fd = None
                except (LocalError, OSError):
                    made = None  # the write finds out for itself
                batch.append((rel, made))
                if len(batch) >= self._batch:
                    if not self._put(batch):
                        break
                    batch = []
            if batch and self._put(batch):
                batch = []
        finally:
            _close_made(batch)
            if folder_fd is not None:
                os.close(folder_fd)
            self._put(None)

    def take(self, rel: str) -> int | None:
        """The nameless file made ahead for ``rel`` (the caller owns it), or
        None: then the caller makes its own. Files made for paths before
        ``rel`` that were not taken (their action was skipped) are closed."""
        if self._ended or not self._wants(rel):
            return None
        while True:
            if not self._taken:
                items = self._queue.get()
                if items is None:
                    self._ended = True
                    return None
                self._taken.extend(items)
            got, fd = self._taken.popleft()
            if got == rel:
                return fd
            if fd is not None:
                os.close(fd)

    def _wants(self, rel: str) -> bool:
        """Whether a file is (still) to be made for ``rel``: it is one of
        ``rels``, not taken yet, and (sorted ``rels``) not before a path
        taken already. Counts it as taken."""
        if self._wanted is not None:
            if rel not in self._wanted:
                return False
            self._wanted.discard(rel)
            return True
        found = bisect.bisect_left(self._rels, rel, self._next)
        if found == len(self._rels) or self._rels[found] != rel:
            return False
        self._next = found + 1
        return True

    def close(self) -> None:
        """Stop making files and close those not taken."""
        self._stop.set()
        _close_made(self._taken)
        self._taken.clear()
        while self._thread.is_alive() or not self._queue.empty():
            try:
                items = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if items is not None:
                _close_made(items)
        self._thread.join()
        self._ended = True


def _deepest_folder(root: str, parts: Sequence[str]) -> tuple[int | None, bool]:
    """A descriptor on folder ``root/parts…`` (True) or, when some of it does
    not exist, on its deepest existing ancestor (False), reached without
    following a symbolic link below ``root``; None when a component cannot
    be entered for another reason (a link, not a folder, no permission)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for name in parts:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return fd, False
        except OSError:
            os.close(fd)
            return None, False
        os.close(fd)
        fd = child
    return fd, True


def _close_made(items: Iterable[tuple[str, int | None]]) -> None:
    for _, fd in items:
        if fd is not None:
            os.close(fd)


def write_atomically(
    root: str,
    rel: str,
    fill: Callable[[BinaryIO], object],
    *,
    expect: LocalFile | None,
    mtime_ns: int | None = None,
    durable: bool = True,
    ahead: NamelessAhead | None = None,
) -> os.stat_result:
    """Replace ``root/rel`` with what ``fill`` writes, if it is still ``expect``.

    With ``durable`` the new content is on disk (``fsync``) before it replaces
    the old; without, the caller makes it durable later with
    :func:`make_durable` before relying on it (a power cut before that may
    leave the new name with incomplete content; a killed process cannot).

    Missing folders on the way are created; a component that is a symbolic
    link or not a folder raises :class:`UnsafeLocalPath` (nothing written).
    ``fill(handle)`` writes the new content and raises to abort (e.g. an
    integrity error): the target is then untouched. Returns the new file's
    stat, or raises :class:`LocalChanged` when the user's file changed since the
    plan (nothing replaced; a link now at ``rel`` counts as a change),
    DiskFull/LocalError on local I/O failure. The temporary file never
    outlives the call; for a new name (``expect`` None) it has no name at
    all where the file system allows (``O_TMPFILE``, then linked to ``rel``),
    and may have been made ahead by ``ahead`` (:class:`NamelessAhead`).
    """
    parts = _parts(rel)
    target = os.path.join(root, *parts)
    made_ahead = ahead.take(rel) if ahead is not None and expect is None else None
    try:
        with _folder(root, parts[:-1], create=True) as fd:
            if expect is None and _TMPFILE:
                out, made_ahead = made_ahead, None  # _write_new owns it now
                made = _write_new(fd, parts[-1], target, fill, mtime_ns=mtime_ns, durable=durable, out=out)
                if made is not None:
                    return made
            temp = f"{PART_PREFIX}{secrets.token_hex(6)}"
            try:
                _write_temp(fd, temp, target, fill, mtime_ns=mtime_ns, durable=durable)
                return _into_place(fd, temp, parts[-1], expect, target)
            finally:
                _remove_temp(fd, temp, target)
    finally:
        if made_ahead is not None:
            os.close(made_ahead)


#: Buffer size of a file written by a download (a small file's content is one write).
_WRITE_BUFFER = 1 << 16
#: ``O_TMPFILE`` where the platform has it (Linux), else 0.
_TMPFILE: int = getattr(os, "O_TMPFILE", 0)
#: Whether :class:`NamelessAhead` can make files ahead here.
NAMELESS_AHEAD = bool(_TMPFILE)
#: Why a file system refuses ``O_TMPFILE`` (then a named temporary file is used).
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL})


def _write_new(fd: int, name: str, target: str, fill: Callable[[BinaryIO], object], *,
               mtime_ns: int | None, durable: bool, out: int | None = None) -> os.stat_result | None:
    """:func:`write_atomically` of a name that must not exist yet, in folder ``fd``.

    The content is written into a nameless file of the folder (``O_TMPFILE``),
    which is then linked to ``name``: the link fails if anything (a file, a
    link) took the name meanwhile, which raises LocalChanged with nothing
    replaced. Fewer steps than a named temporary file (no temporary name to
    create, check and remove), and a killed process leaves nothing behind.
    Returns None, having written nothing, when the file system refuses
    nameless files (the caller then uses a named temporary file). Where the
    file cannot be linked by its descriptor (no ``/proc``), its content is
    copied into a named temporary file, which is renamed into place.
    ``out``: the nameless file to use, already made (this call owns it)."""
    if out is None:
        try:
            out = os.open(".", os.O_RDWR | _TMPFILE | os.O_CLOEXEC, 0o666, dir_fd=fd)
        except OSError as exc:
            if exc.errno in _NO_TMPFILE:
                return None
            raise _translate(exc, target) from exc
    # an explicit buffer size: no terminal check (ioctl) and no fstat for the block size
    with os.fdopen(out, "w+b", buffering=_WRITE_BUFFER) as handle:
        try:
            fill(handle)
            handle.flush()
            if durable:
                os.fsync(out)
            if mtime_ns is not None:
                os.utime(out, ns=(mtime_ns, mtime_ns))
        except OSError as exc:
            raise _translate(exc, target) from exc
        try:
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the nameless file
            os.link(f"/proc/self/fd/{out}", name, dst_dir_fd=fd, follow_symlinks=True)
        except FileExistsError as exc:
            raise LocalChanged(f"{target} appeared during the transfer", path=target) from exc
        except OSError as exc:
            if exc.errno not in _LINK_FALLBACK:
                raise _translate(exc, target) from exc
            temp = f"{PART_PREFIX}{secrets.token_hex(6)}"
            try:
                _copy_prepared(handle, fd, temp, target, mtime_ns=mtime_ns, durable=durable)
                return _into_place(fd, temp, name, None, target)
            finally:
                _remove_temp(fd, temp, target)
        try:
            return os.fstat(out)
        except OSError as exc:  # pragma: no cover - fstat of an open file
            raise _translate(exc, target) from exc


def _into_place(fd: int, temp: str, name: str, expect: LocalFile | None, target: str) -> os.stat_result:
    """The last step of an atomic write in folder ``fd``: give the complete
    file ``temp`` the name ``name`` if the entry there is still ``expect``
    (LocalChanged otherwise, nothing replaced); returns the new file's stat."""
    if not _matches(_lstat(fd, name), expect):
        raise LocalChanged(f"{target} changed during the transfer; it will be synced next pass", path=target)
    try:
        if expect is None:
            # atomic, refuses a file (or link) that appeared meanwhile
            os.link(temp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            os.unlink(temp, dir_fd=fd)
        else:
            os.replace(temp, name, src_dir_fd=fd, dst_dir_fd=fd)
    except FileExistsError as exc:
        raise LocalChanged(f"{target} appeared during the transfer", path=target) from exc
    except OSError as exc:
        raise _translate(exc, target) from exc
    return os.stat(name, dir_fd=fd, follow_symlinks=False)


def _remove_temp(fd: int, temp: str, target: str) -> None:
    """Remove ``temp`` from folder ``fd`` if it is still there."""
    try:
        os.unlink(temp, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError as exc:  # pragma: no cover - the folder went read-only meanwhile
        log.warning("cannot remove temporary file %s: %s", os.path.join(os.path.dirname(target), temp),
                    exc.strerror)


# --------------------------------------------------------------------------- prepared files
# (a download decrypted and verified on a worker thread, then installed here)

#: Why linking a prepared file into the local folder may fail where a copy
#: still works: another file system, no ``/proc``, a file that cannot be
#: linked (not made by :func:`new_prepared`, or made by its fallback), or a
#: file system without hard links.
_LINK_FALLBACK = frozenset({errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP,
                            errno.EOPNOTSUPP, errno.EINVAL})


def new_prepared(folder: str) -> BinaryIO:
    """A new, empty, nameless file in ``folder`` (escale's own spool folder)
    to prepare a file's content in, for :func:`install_prepared`; opened for
    reading and writing, closed by the caller.

    Where the platform has ``O_TMPFILE`` the file never has a name: it
    vanishes with its last descriptor (even if the process is killed) and
    :func:`install_prepared` can link it into the local folder. Elsewhere it
    is a named file removed at once (then it is installed by a copy). Its mode
    is 0666 less the umask, as for :func:`write_atomically`'s files. Raises
    DiskFull or LocalError."""
    flags = os.O_RDWR | os.O_CLOEXEC
    tmpfile = getattr(os, "O_TMPFILE", 0)
    try:
        if tmpfile:
            try:
                return os.fdopen(os.open(folder, flags | tmpfile, 0o666), "w+b")
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
        path = os.path.join(folder, f"{PART_PREFIX}{secrets.token_hex(6)}")
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        os.unlink(path)
        return os.fdopen(fd, "w+b")
    except OSError as exc:
        raise _translate(exc, folder) from exc


def install_prepared(
    root: str,
    rel: str,
    prepared: BinaryIO,
    *,
    expect: LocalFile | None,
    mtime_ns: int | None = None,
    durable: bool = True,
) -> os.stat_result:
    """Replace ``root/rel`` with the complete content of ``prepared`` (a file
    from :func:`new_prepared`, already verified), if it is still ``expect``.

    The same contract as :func:`write_atomically`, whose ``fill`` would have
    written that content: the folder walk refuses links (UnsafeLocalPath),
    the user's file is re-checked just before the rename (LocalChanged), the
    temporary name never outlives the call, ``durable`` and ``mtime_ns`` mean
    the same. The prepared file itself is given a temporary name beside the
    target by a hard link (no copy) when both are on one file system;
    otherwise (another file system, no ``/proc``, a file that has had a
    name) its content is copied there. ``prepared`` must not be written
    after this call (it may now be the user's file); the caller closes it."""
    parts = _parts(rel)
    target = os.path.join(root, *parts)
    try:
        prepared.flush()
        source = prepared.fileno()
        if mtime_ns is not None:
            os.utime(source, ns=(mtime_ns, mtime_ns))
        if durable:
            os.fsync(source)
    except OSError as exc:
        raise _translate(exc, target) from exc
    with _folder(root, parts[:-1], create=True) as fd:
        temp = f"{PART_PREFIX}{secrets.token_hex(6)}"
        try:
            try:
                # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names an O_TMPFILE file
                os.link(f"/proc/self/fd/{source}", temp, dst_dir_fd=fd, follow_symlinks=True)
            except OSError as exc:
                if exc.errno not in _LINK_FALLBACK:
                    raise _translate(exc, target) from exc
                _copy_prepared(prepared, fd, temp, target, mtime_ns=mtime_ns, durable=durable)
            return _into_place(fd, temp, parts[-1], expect, target)
        finally:
            _remove_temp(fd, temp, target)


def _copy_prepared(prepared: BinaryIO, fd: int, temp: str, target: str, *, mtime_ns: int | None,
                   durable: bool) -> None:
    """:func:`install_prepared` when the prepared file cannot be linked:
    copy its content into a new file ``temp`` of folder ``fd``."""

    def copy(writer: BinaryIO) -> None:
        prepared.seek(0)
        while chunk := prepared.read(1 << 20):
            writer.write(chunk)

    _write_temp(fd, temp, target, copy, mtime_ns=mtime_ns, durable=durable)


def _write_temp(fd: int, temp: str, target: str, fill: Callable[[BinaryIO], object], *,
                mtime_ns: int | None, durable: bool) -> None:
    """Create the new file ``temp`` in folder ``fd`` (never through a link) and
    write it with ``fill``; flushed to disk if ``durable``, its mtime set to
    ``mtime_ns`` if given. Errors are reported against ``target``; the caller
    removes ``temp``."""
    try:
        out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=fd)
        with os.fdopen(out, "wb") as handle:
            fill(handle)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
            if mtime_ns is not None:
                os.utime(handle.fileno(), ns=(mtime_ns, mtime_ns))
    except OSError as exc:
        raise _translate(exc, target) from exc


def rename_aside(root: str, source: str, target: str, *, expect: LocalFile) -> None:
    """Rename ``root/source`` to ``root/target`` if the source is still
    ``expect`` and the target does not exist (never overwrites; missing folders
    of the target are created). Raises LocalChanged when the source changed or
    is gone, UnsafeLocalPath when either path goes through a link."""
    src_parts, dst_parts = _parts(source), _parts(target)
    shown = os.path.join(root, *src_parts)
    try:
        with _folder(root, src_parts[:-1], create=False) as sfd, \
                _folder(root, dst_parts[:-1], create=True) as dfd:
            if not _matches(_lstat(sfd, src_parts[-1]), expect):
                raise LocalChanged(f"{shown} changed; conflict handling postponed", path=shown)
            try:
                try:
                    os.link(src_parts[-1], dst_parts[-1], src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    # the copy exists already (a previous attempt): same content name, keep it
                    if not _matches(_lstat(sfd, src_parts[-1]), expect):
                        return
                os.unlink(src_parts[-1], dir_fd=sfd)
            except OSError as exc:
                raise _translate(exc, shown) from exc
    except _Missing:
        raise LocalChanged(f"{shown} changed; conflict handling postponed", path=shown) from None


def delete_if_unchanged(root: str, rel: str, expect: LocalFile) -> bool:
    """Delete ``root/rel`` if it is still ``expect``; return whether it was
    deleted. Empty parent folders are left in place (they may be the user's).
    Raises UnsafeLocalPath when a parent component is a link."""
    parts = _parts(rel)
    try:
        with _folder(root, parts[:-1], create=False, what="delete") as fd:
            if not _matches(_lstat(fd, parts[-1]), expect):
                return False
            try:
                os.unlink(parts[-1], dir_fd=fd)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _translate(exc, os.path.join(root, *parts)) from exc
            return True
    except _Missing:
        return False


def open_for_push(root: str, rel: str, expect: LocalFile) -> BinaryIO:
    """Open ``root/rel`` for sending if it is still as scanned.

    The check is made on the opened file itself, so what is sent is what was
    checked. Raises LocalChanged (changed or gone since the scan),
    UnsafeLocalPath (a link on the way, or the file is a link),
    LocalUnreadable (exists but cannot be opened: permissions, I/O error).
    """
    parts = _parts(rel)
    full = os.path.join(root, *parts)
    try:
        with _folder(root, parts[:-1], create=False, what="read") as dfd:
            try:
                fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
            except FileNotFoundError:
                raise LocalChanged(f"{full} is gone since the scan", path=full) from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafeLocalPath(f"refusing to send the symbolic link {'/'.join(parts)} (in {root})",
                                          path=full) from None
                raise LocalUnreadable(f"cannot read {full}: {exc.strerror or exc}", path=full) from exc
    except _Missing:
        raise LocalChanged(f"{full} is gone since the scan", path=full) from None
    try:
        if not _matches(os.fstat(fd), expect):
            raise LocalChanged(f"{full} changed since the scan; it will be sent next pass", path=full)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=_WRITE_BUFFER)  # explicit: no terminal check, no second fstat
    except BaseException:
        os.close(fd)
        raise


def remove_leftovers(root: str, leftovers: Iterable[str]) -> int:
    """Remove escale's temporary ``.escale-part-…`` files (as found by the
    scanner in ``ScanResult.leftovers``); return how many were removed.

    Only call this while holding the client lock: only one process syncs a
    client at a time, so every part file found then is a leftover of a pass
    that was killed. Anything else is refused: a path whose last component
    does not start with ``.escale-part-``, one that is not a regular file, or
    one reached through a link. Failures are logged and skipped.
    """
    removed = 0
    for rel in leftovers:
        folder, _, name = rel.rpartition("/")
        if not name.startswith(PART_PREFIX) or name_problem(name) is not None or "/" in name:
            log.warning("not removing %s: not an escale temporary file", printable(rel))
            continue
        full = os.path.join(root, printable(rel))
        try:
            with _folder(root, _parts(folder) if folder else (), create=False, what="delete") as fd:
                st = _lstat(fd, name)
                if st is None:
                    continue
                if not stat_module.S_ISREG(st.st_mode):
                    log.warning("not removing %s: not a regular file", full)
                    continue
                os.unlink(name, dir_fd=fd)
        except (_Missing, FileNotFoundError):
            continue
        except OSError as exc:
            log.warning("cannot remove leftover temporary file %s: %s", full, exc.strerror or exc)
            continue
        except LocalError as exc:
            log.warning("cannot remove leftover temporary file %s: %s", full, exc)
            continue
        removed += 1
        log.info("removed leftover temporary file %s (%d bytes) from an interrupted pass", full, st.st_size)
    return removed


# --------------------------------------------------------------------------- keeping a copy elsewhere
# (versions kept, escale.sync.trash; the holding folder, escale.sync.handoff)


class KeptTargetExists(LocalError):
    """The place a file was to be kept at holds another file already."""

    transient = True


def current(root: str, rel: str) -> LocalFile | None:
    """The regular file at ``root/rel`` now (size and mtime, no checksum), or
    None when nothing is there. Raises UnsafeLocalPath when a parent component
    or the entry itself is a link, LocalError when it is not a regular file."""
    parts = _parts(rel)
    try:
        with _folder(root, parts[:-1], create=False, what="read") as fd:
            st = _lstat(fd, parts[-1])
    except _Missing:
        return None
    if st is None:
        return None
    full = os.path.join(root, *parts)
    if stat_module.S_ISLNK(st.st_mode):
        raise UnsafeLocalPath(f"{full} is a symbolic link", path=full)
    if not stat_module.S_ISREG(st.st_mode):
        raise LocalError(f"{full} is not a regular file", path=full)
    return LocalFile(st.st_size, st.st_mtime_ns)


def keep_copy(root: str, rel: str, expect: LocalFile, dest_root: str, dest_rel: str) -> os.stat_result:
    """Make ``dest_root/dest_rel`` a copy of ``root/rel``, which stays where it is.

    The source must still be ``expect`` (else :class:`LocalChanged`). The copy
    is a hard link when both are on one file system (instant, no extra space,
    nothing to verify); otherwise the content is copied to a temporary name
    beside the target, checked to be as long as ``expect``, synced to disk, and
    only then given its name. Missing folders of the target are created (mode
    0700 for ``dest_root`` itself). Nothing is ever overwritten: a target that
    is already this very file (same inode: an earlier attempt) counts as done,
    any other raises :class:`KeptTargetExists`. No component of either path,
    below its root, may be a symbolic link (:class:`UnsafeLocalPath`).
    Returns the target's stat.
    """
    src_parts, dst_parts = _parts(rel), _parts(dest_rel)
    shown = os.path.join(root, *src_parts)
    target = os.path.join(dest_root, *dst_parts)
    os.makedirs(dest_root, mode=0o700, exist_ok=True)
    try:
        with _folder(root, src_parts[:-1], create=False, what="read") as sfd, \
                _folder(dest_root, dst_parts[:-1], create=True) as dfd:
            st = _lstat(sfd, src_parts[-1])
            if not _matches(st, expect):
                raise LocalChanged(f"{shown} changed; not kept", path=shown)
            assert st is not None
            there = _lstat(dfd, dst_parts[-1])
            if there is not None:
                if (there.st_ino, there.st_dev) == (st.st_ino, st.st_dev):
                    return there
                raise KeptTargetExists(f"{target} exists already", path=target)
            try:
                os.link(src_parts[-1], dst_parts[-1], src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
                return os.stat(dst_parts[-1], dir_fd=dfd, follow_symlinks=False)
            except FileExistsError as exc:
                raise KeptTargetExists(f"{target} appeared meanwhile", path=target) from exc
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise _translate(exc, target) from exc
            return _copy_between(sfd, src_parts[-1], expect, dfd, dst_parts[-1], shown, target)
    except _Missing:
        raise LocalChanged(f"{shown} is gone; not kept", path=shown) from None


def _copy_between(sfd: int, name: str, expect: LocalFile, dfd: int, dest: str, shown: str,
                  target: str) -> os.stat_result:
    """:func:`keep_copy` across file systems: copy, check, sync, then name."""
    try:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sfd)
    except OSError as exc:
        raise LocalUnreadable(f"cannot read {shown}: {exc.strerror or exc}", path=shown) from exc
    temp = f"{PART_PREFIX}{secrets.token_hex(6)}"
    try:
        with os.fdopen(src, "rb") as reader:
            if not _matches(os.fstat(reader.fileno()), expect):
                raise LocalChanged(f"{shown} changed; not kept", path=shown)
            os.set_blocking(reader.fileno(), True)
            try:
                out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                              dir_fd=dfd)
                with os.fdopen(out, "wb") as writer:
                    copied = 0
                    while chunk := reader.read(1 << 20):
                        writer.write(chunk)
                        copied += len(chunk)
                    writer.flush()
                    os.fsync(writer.fileno())
                    os.utime(writer.fileno(), ns=(expect.mtime_ns, expect.mtime_ns))
            except OSError as exc:
                raise _translate(exc, target) from exc
            if copied != expect.size or not _matches(os.fstat(reader.fileno()), expect):
                raise LocalChanged(f"{shown} changed while it was copied; not kept", path=shown)
        try:
            os.link(temp, dest, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileExistsError as exc:
            raise KeptTargetExists(f"{target} appeared meanwhile", path=target) from exc
        except OSError as exc:
            raise _translate(exc, target) from exc
        return os.stat(dest, dir_fd=dfd, follow_symlinks=False)
    finally:
        try:
            os.unlink(temp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        except OSError as exc:  # pragma: no cover - the folder went read-only meanwhile
            log.warning("cannot remove temporary file %s: %s", temp, exc.strerror)


def remove_kept(dest_root: str, dest_rel: str) -> None:
    """Remove the regular file ``dest_root/dest_rel`` made by :func:`keep_copy`
    (nothing through a link; an absent file is fine)."""
    parts = _parts(dest_rel)
    try:
        with _folder(dest_root, parts[:-1], create=False, what="delete") as fd:
            st = _lstat(fd, parts[-1])
            if st is not None and stat_module.S_ISREG(st.st_mode):
                os.unlink(parts[-1], dir_fd=fd)
    except (_Missing, FileNotFoundError):
        pass
    except OSError as exc:
        raise _translate(exc, os.path.join(dest_root, *parts)) from exc
