"""The ``file`` backend: a local or mounted folder as the relay.

Atomic put: the content is written to a temporary name (:data:`TEMP_PREFIX`) in
the target's own folder, then moved into place with ``os.replace`` (atomic on
POSIX file systems). Exclusive create and exclusive rename use ``os.link``,
which fails atomically when the target exists; on file systems without hard
links (some FUSE mounts) the capability is reported as missing and a
check-then-move is used instead.

Durability (what survives a power loss or a kernel crash; a crash of the
process alone loses nothing that ``put`` returned, the page cache keeps it).
The protocol's crash argument needs two things of the disk: a *commit* object
(one written with an exclusive put: a placeholder, a lease generation, the
repository header) is whole or absent, and everything written before it (the
payload it points to) is on disk before it can be. It does not need every
object durable the moment ``put`` returns. So:

* a plain (replacing) put is not flushed: payloads, acknowledgements, the
  change marker, registrations and lease renewals are renamed into place and
  the relay remembers that it has unflushed writes;
* an exclusive put is a *barrier*: its temporary file is written, then one
  ``syncfs()`` of the relay's file system (or, where there is none, an
  ``fsync`` of each unflushed file and of the temporary) makes it and every
  earlier write durable, and only then is it linked into place. One call per
  commit, instead of one per object; a group of commits
  (:meth:`Relay.put_commits`) writes every temporary first and shares one
  barrier before any of them is linked;
* objects under fresh names (:meth:`Relay.put_fresh`: small payloads) are
  written straight under their names, unflushed, like a plain put's;
* ``close()`` is a barrier too, so a pass that ends cleanly leaves nothing
  unflushed.

After a power loss, an object written by a plain put since the last barrier
may therefore be found empty or cut short under its name. Nothing durable
points to it (the commit that would comes after a barrier), and every such
object is authenticated and read as hostile input anyway: a damaged payload
is put again by its pusher (payload puts replace), a damaged acknowledgement,
marker, registration or lease record is refused with a warning, as one forged
by the relay would be, and is rewritten or goes stale; nothing is applied from
it. Deletions are not flushed either (as before): a delete that a power loss
undoes leaves an object that the next reclaim deletes again. The folder
holding a renamed object is flushed by ``syncfs`` at the next barrier; with
the per-file fallback, the parent folders written to are flushed as well.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Sequence
from typing import BinaryIO, TypeVar

from escale import flush
from escale.errors import (
    RelayConnectionError,
    RelayError,
    RelayExists,
    RelayNotFound,
    RelayPermissionDenied,
    RelayQuotaExceeded,
)
from escale.relay.base import TEMP_PREFIX, Capabilities, Entry, Relay, Usage, check_size
from escale.relay.spec import RelaySpec

T = TypeVar("T")

log = logging.getLogger(__name__)



_CHUNK = 1024 * 1024


def _translate(exc: OSError, name: str, root: str = "") -> RelayError:
    """Map an OSError on relay object ``name`` (in folder ``root``) to the
    escale exception tree; the message names the full path."""
    code = exc.errno
    where = (os.path.join(root, name) if name else root) if root else (name or "/")
    text = f"{where}: {exc.strerror or exc}"
    if code == errno.ENOENT:
        return RelayNotFound(f"no such relay object: {name or '/'}", name=name)
    if code == errno.EEXIST:
        return RelayExists(f"relay object exists: {name}", name=name)
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RelayPermissionDenied(f"permission denied on relay: {text}", name=name)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return RelayQuotaExceeded(f"relay folder is full: {text}", name=name)
    if code in (errno.EIO, errno.ENOTCONN, errno.ESTALE, errno.ETIMEDOUT):
        return RelayConnectionError(f"relay folder unavailable: {text}", name=name)
    return RelayError(f"relay folder error: {text}", name=name)


def _create(path: str, flags: int) -> int:
    """``os.open(path, flags, 0o666)``, its parent folders made only when the
    open fails for want of them (one call per object, not a walk up)."""
    try:
        return os.open(path, flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, flags, 0o666)


class FileRelay(Relay):
    """A repository in the local folder ``root`` (created on open)."""

    scheme = "file"

    def __init__(self, root: str) -> None:
        super().__init__()
        self.root = os.path.abspath(os.path.expanduser(root))
        self.capabilities = Capabilities(
            atomic_put=True,
            exclusive_create=True,
            rename_overwrite=True,
            rename_exclusive=True,
            mtime_precision=0.01,
            usage=True,
        )
        #: Files (and their folders) renamed into place but not yet flushed,
        #: where the next barrier flushes them one by one (no ``syncfs``) ...
        self._unflushed: set[str] = set()
        #: ... or whether any was, where the barrier is one ``syncfs`` (no path
        #: kept: a pass that writes an object per file would hold them all)
        self._dirty = False
        #: How many flushes (syncfs or fsync calls) this relay made: for benchmarks.
        self.flushes = 0

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/")) if name else self.root

    def _call(self, name: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except OSError as exc:
            raise _translate(exc, name, self.root) from exc

    # ----------------------------------------------------------- lifecycle

    def _connect(self) -> None:
        # the folder is not created here (see Relay.create_root): a missing one
        # is an unmounted disk as long as nobody asks to create a repository
        if os.path.lexists(self.root) and not os.path.isdir(self.root):
            raise RelayNotFound(f"relay folder is not a folder: {self.root}", name="")

    def _disconnect(self) -> None:
        try:
            self._barrier()
        except OSError as exc:  # close never raises: say it, and forget them
            log.warning("%s: could not flush the relay folder to disk: %s", self.describe(), exc)
            self._unflushed.clear()
            self._dirty = False

    def _barrier(self, *extra: int) -> None:
        """Make every unflushed write, and the open files ``extra``, durable.

        One ``syncfs`` when the platform has it and other writes are
        unflushed; else an ``fsync`` of each file in ``extra`` and of each
        unflushed file and its folder."""
        if not self._dirty and not self._unflushed and not extra:
            return
        if flush.AVAILABLE and (self._dirty or self._unflushed):
            fd = extra[0] if extra else os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                self.flushes += 1
                flush.syncfs(fd, self.root)
            finally:
                if not extra:
                    os.close(fd)
        else:
            for fd in extra:
                self.flushes += 1
                os.fsync(fd)
            for path in sorted(self._unflushed):
                try:
                    handle = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # deleted or replaced since: nothing of it to flush
                try:
                    self.flushes += 1
                    os.fsync(handle)
                finally:
                    os.close(handle)
        self._unflushed.clear()
        self._dirty = False

    # ----------------------------------------------------------- operations

    def _entry(self, name: str, st: os.stat_result) -> Entry:
        is_dir = stat.S_ISDIR(st.st_mode)
        return Entry(name=name, size=0 if is_dir else st.st_size, mtime=st.st_mtime, is_dir=is_dir)

    def _list(self, folder: str) -> list[Entry]:
        def scan() -> list[Entry]:
            out = []
            with os.scandir(self._path(folder)) as it:
                for item in it:
                    try:
                        st = item.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # removed while listing
                    child = f"{folder}/{item.name}" if folder else item.name
                    out.append(self._entry(child, st))
            return out

        return self._call(folder, scan)

    def _stat(self, name: str) -> Entry:
        return self._call(name, lambda: self._entry(name, os.stat(self._path(name))))

    def _get(self, name: str, sink: BinaryIO) -> None:
        def copy() -> None:
            # unbuffered: a small object takes one read (no buffer, no terminal probe)
            fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                check_size(sink, os.fstat(fd).st_size)
                while data := os.read(fd, _CHUNK):
                    sink.write(data)
            finally:
                os.close(fd)

        self._call(name, copy)

    def _temp_for(self, path: str) -> str:
        return os.path.join(os.path.dirname(path), TEMP_PREFIX + secrets.token_hex(8))

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        path = self._path(name)
        if not exclusive:
            self._call(name, lambda: self._put_plain(path, source))
            return

        def write() -> None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temp = self._temp_for(path)
            try:
                with open(temp, "xb") as handle:
                    shutil.copyfileobj(source, handle, _CHUNK)
                    handle.flush()
                    # a commit: it and all before it are durable first
                    self._barrier(handle.fileno())
                os.link(temp, path)  # atomic: EEXIST when the name exists
                os.unlink(temp)
                self._placed(path)
            except BaseException:
                self._discard(temp)
                raise

        self._call(name, write)

    def _placed(self, path: str) -> None:
        """``path`` was just renamed or linked into place: its data and
        folder entry are flushed at the next barrier."""
        if flush.AVAILABLE:
            self._dirty = True
        else:
            self._unflushed.add(path)
            self._unflushed.add(os.path.dirname(path))

    @staticmethod
    def _discard(temp: str) -> None:
        """Remove a temporary that will not be placed (it may be gone already)."""
        try:
            os.unlink(temp)
        except OSError:
            pass

    def _put_plain(self, path: str, source: BinaryIO) -> None:
        """A replacing put of ``source`` at ``path``: written to a temporary
        name, renamed into place, not flushed (the next barrier does it).
        The parent folders are made only when the temporary cannot be
        created for want of them (one call per object, not a walk up)."""
        temp = self._temp_for(path)
        fd = _create(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC)
        try:
            try:
                while data := source.read(_CHUNK):
                    done = 0
                    while done < len(data):
                        done += os.write(fd, data[done:] if done else data)
            finally:
                os.close(fd)
            os.replace(temp, path)
            self._placed(path)
        except BaseException:
            self._discard(temp)
            raise

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Each item written straight under its name (truncated if it exists;
        never through a symbolic link there), not flushed: the next barrier
        makes it durable, before the commit that names it. No temporary and
        no rename: a write cut short leaves a part under the name, which no
        commit names."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
        for name, data in items:
            path = self._path(name)

            def write(path: str = path, data: bytes = data) -> None:
                fd = _create(path, flags)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
                self._placed(path)

            self._call(name, write)

    def _put_commits(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Every item written to its temporary, one barrier for them all and
        for every earlier write, then each linked into place (EEXIST: False)."""
        temps: list[tuple[str, str]] = []  # (path, temporary) written
        created: list[bool] = []  # one per temporary linked (or found taken) and removed
        try:
            for name, data in items:
                path = self._path(name)

                def write(path: str = path, data: bytes = data) -> None:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    temp = self._temp_for(path)
                    with open(temp, "xb") as handle:
                        temps.append((path, temp))
                        handle.write(data)
                    self._placed(temp)  # flushed by the barrier below, before the link

                self._call(name, write)
            self._call(items[0][0] if items else "", self._barrier)
            for (name, _), (path, temp) in zip(items, temps, strict=True):
                def link(path: str = path, temp: str = temp) -> bool:
                    try:
                        os.link(temp, path)  # atomic: EEXIST when the name exists
                    except FileExistsError:
                        return False
                    finally:
                        os.unlink(temp)
                    self._placed(path)  # its folder entry, at the next barrier
                    return True

                try:
                    created.append(self._call(name, link))
                except BaseException:
                    self._discard(temp)
                    created.append(False)  # the later temporaries are discarded below
                    raise
        finally:
            for _, temp in temps[len(created):]:
                self._discard(temp)
        return created

    def _delete(self, name: str) -> None:
        path = self._path(name)

        def remove() -> None:
            if os.path.isdir(path) and not os.path.islink(path):
                raise IsADirectoryError(errno.EISDIR, "is a folder", path)
            os.unlink(path)

        self._call(name, remove)

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        src, dst = self._path(source), self._path(target)

        def move() -> None:
            if not os.path.lexists(src):
                raise FileNotFoundError(errno.ENOENT, "missing", src)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if overwrite:
                os.replace(src, dst)
            else:
                os.link(src, dst)  # atomic: EEXIST when the target exists
                os.unlink(src)
            self._placed(dst)  # flushed at the next barrier, as a plain put

        try:
            move()
        except FileNotFoundError as exc:
            raise RelayNotFound(f"no such relay object: {source}", name=source) from exc
        except FileExistsError as exc:
            raise RelayExists(f"relay object exists: {target}", name=target) from exc
        except OSError as exc:
            raise _translate(exc, source, self.root) from exc

    def _mkdir(self, name: str) -> None:
        self._call(name, lambda: os.makedirs(self._path(name), exist_ok=True))

    def _create_root(self) -> None:
        self._call("", lambda: os.makedirs(self.root, exist_ok=True))

    def _rmdir(self, name: str) -> None:
        self._call(name, lambda: os.rmdir(self._path(name)))

    def _usage(self) -> Usage | None:
        st = self._call("", lambda: os.statvfs(self.root))
        total = st.f_blocks * st.f_frsize
        return Usage(used=total - st.f_bavail * st.f_frsize, total=total)


def from_spec(spec: RelaySpec) -> FileRelay:
    """The file backend for ``spec.directory``."""
    return FileRelay(spec.directory)
