"""The relay backend interface: bytes at relative names, nothing more.

A backend knows nothing of placeholders, leases or encryption. It stores opaque
byte strings under relative, ``/``-separated names inside the repository folder
it was opened on, and it keeps the contracts stated on each method of
:class:`Relay`. Every backend runs the same conformance suite
(``tests/relay/test_conformance.py``), which also checks each declared
:class:`Capabilities` flag.

Errors are always from :mod:`escale.errors`: a backend translates every foreign
exception at its boundary. Any method may raise :class:`RelayConnectionError`
(transient) when the server cannot be reached; a method that raised it may or may
not have taken effect, as stated per method.
"""

from __future__ import annotations

import abc
import builtins
import io
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from escale.errors import EscaleError, ObjectTooLarge, RelayClosed, RelayError, RelayExists, RelayNotFound, UnsafeName

log = logging.getLogger(__name__)

#: Prefix of the temporary names a backend writes before renaming into place.
#: Names with this prefix are never accepted from callers and never listed by
#: :meth:`Relay.list`; :meth:`Relay.list_temporaries` lists them.
TEMP_PREFIX = ".escale-tmp-"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(name: str, *, allow_root: bool = False) -> str:
    """Return ``name`` if it is a safe relative relay name, else raise UnsafeName.

    Safe means: relative (no leading ``/``), ``/``-separated components that are
    neither empty, ``.`` nor ``..``, no backslash, no control character, and no
    component starting with the reserved :data:`TEMP_PREFIX`. With
    ``allow_root``, the empty string (the repository folder itself) is accepted.
    """
    if not isinstance(name, str):
        raise UnsafeName(f"relay name must be a string, got {type(name).__name__}")
    if name == "":
        if allow_root:
            return name
        raise UnsafeName("empty relay name", name=name)
    if name.startswith("/"):
        raise UnsafeName(f"absolute relay name refused: {name!r}", name=name)
    if "\\" in name:
        raise UnsafeName(f"backslash in relay name refused: {name!r}", name=name)
    if _CONTROL.search(name):
        raise UnsafeName(f"control character in relay name refused: {name!r}", name=name)
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise UnsafeName(f"unsafe component in relay name refused: {name!r}", name=name)
        if part.startswith(TEMP_PREFIX):
            raise UnsafeName(f"reserved temporary name refused: {name!r}", name=name)
    return name


def check_listed(parent: str, child: str) -> str:
    """Validate a single name as listed by a server inside ``parent``.

    A listed name must be one component (no ``/``) and safe by :func:`check_name`;
    a hostile server cannot make a client address anything outside the folder.
    """
    problem = listed_problem(child)
    if problem is not None:
        raise UnsafeName(f"server listed {problem} in {parent or '/'!r}: {child!r}", name=child)
    return child


def listed_problem(child: str, *, temporary: bool = False) -> str | None:
    """Why ``child``, one name listed by a server, is unusable; None when safe.

    Safe means one component that :func:`check_name` accepts and that is valid
    UTF-8 (no lone surrogate, as left by a server sending undecodable bytes).
    With ``temporary``, the name must instead start with :data:`TEMP_PREFIX`
    and be safe otherwise.
    """
    if not isinstance(child, str) or not child:
        return "an empty name"
    if "/" in child:
        return "a nested name"
    try:
        child.encode("utf-8")
    except UnicodeEncodeError:
        return "a name that is not UTF-8"
    if temporary:
        if not child.startswith(TEMP_PREFIX):
            return "a name that is not a temporary"
        child = child[len(TEMP_PREFIX):] or "x"
    try:
        check_name(child)
    except UnsafeName:
        return "an unsafe name"
    return None


def join(parent: str, child: str) -> str:
    """Join two relay names; ``parent`` may be the root ``""``."""
    return f"{parent}/{child}" if parent else child


def parent_of(name: str) -> str:
    """The folder part of a relay name (``""`` for a top-level name)."""
    return name.rpartition("/")[0]


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees, declared as data and checked by the suite.

    ``atomic_put``: readers see the whole old or whole new object, never a part.
    ``exclusive_create``: ``put(..., exclusive=True)`` fails with RelayExists when
    the name exists, atomically: of N concurrent creators exactly one succeeds.
    ``rename_overwrite``: ``rename(..., overwrite=True)`` replaces an existing
    target atomically.
    ``rename_exclusive``: ``rename(..., overwrite=False)`` refuses an existing
    target atomically (no check-then-move window).
    ``mtime_precision``: seconds of precision of ``stat().mtime``; None when the
    backend reports no modification time.
    ``usage``: ``usage()`` returns the server's free/total space.
    ``group_put``: :meth:`Relay.put_commits`, :meth:`Relay.put_fresh` and
    :meth:`Relay.put_many` cost a few requests for a whole group, not one put per item (a cost, not
    a guarantee: their contracts are the same everywhere). Callers with many
    small objects to write at once gather them into groups where it is set.
    ``group_get``: :meth:`Relay.get_many` costs a few round trips for a whole
    group of small objects, not one get (or more) per object; the same kind
    of flag as ``group_put`` (a cost: the contract of ``get_many`` is the
    same everywhere).
    ``group_delete``: :meth:`Relay.delete_many` costs a few round trips for a
    whole group, not one delete per object (a cost, as ``group_get``).

    The defaults describe the weakest server (no flag, no modification time):
    a backend declares what it has, and a flag left out is never assumed.
    """

    atomic_put: bool = False
    exclusive_create: bool = False
    rename_overwrite: bool = False
    rename_exclusive: bool = False
    mtime_precision: float | None = None
    usage: bool = False
    group_put: bool = False
    group_get: bool = False
    group_delete: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed or stat'ed object. ``name`` is the full relay name."""

    name: str
    size: int
    mtime: float | None
    is_dir: bool = False

    @property
    def basename(self) -> str:
        return self.name.rpartition("/")[2]


@dataclass(frozen=True)
class Usage:
    """Space on the relay, in bytes; either may be None when unknown."""

    used: int | None
    total: int | None

    @property
    def free(self) -> int | None:
        if self.used is None or self.total is None:
            return None
        return max(0, self.total - self.used)


class Relay(abc.ABC):
    """A connection to one repository folder on one relay.

    Usage: ``open()``, any operations, ``close()`` (or use as a context manager).
    Names are relative to the repository folder and checked with
    :func:`check_name` on the way in; listed names are checked with
    :func:`check_listed` on the way out. Using a relay after ``close()`` raises
    :class:`RelayClosed`. A relay object is not shared between threads unless its
    class says so; open one per thread.
    """

    #: Short protocol name used in logs ("file", "ftp", ...).
    scheme: str = "?"
    capabilities: Capabilities = Capabilities()

    def __init__(self) -> None:
        self._closed = True
        self._ever_opened = False

    # ----------------------------------------------------------- lifecycle

    def open(self) -> None:
        """Connect. The repository folder is not created (see :meth:`create_root`):
        when it is missing, reads raise RelayNotFound.

        Raises RelayConnectionError (transient) when the server cannot be reached,
        RelayPermissionDenied on bad credentials. Calling open() on an open relay
        reconnects.
        """
        self._connect()
        self._closed = False
        self._ever_opened = True

    def close(self) -> None:
        """Disconnect; never raises. Idempotent."""
        if not self._closed:
            self._closed = True
            try:
                self._disconnect()
            except Exception:  # noqa: BLE001 - close never raises by contract
                pass

    def __enter__(self) -> Relay:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise RelayClosed(f"{self.scheme} relay used while closed")

    # ----------------------------------------------------------- public API

    def list(self, folder: str = "", *, temporaries: builtins.list[Entry] | None = None) -> builtins.list[Entry]:
        """Direct children of ``folder``, sorted by name; temporary names excluded.

        Raises RelayNotFound when ``folder`` does not exist. A listed name that
        is not safe (see :func:`listed_problem`: a newline, ``..``, a nested or
        undecodable name...) or that does not lie directly in ``folder`` is
        skipped with one warning naming the folder and the name: a hostile
        server can neither stop a listing nor make a client address anything
        outside the folder. When ``temporaries`` is given, the safe temporary
        objects (not folders) of ``folder`` are appended to it (one listing for
        both). Read-only.
        """
        self._ensure_open()
        check_name(folder, allow_root=True)
        entries: builtins.list[Entry] = []
        for entry, temporary in self._checked(folder):
            if not temporary:
                entries.append(entry)
            elif temporaries is not None and not entry.is_dir:
                temporaries.append(entry)
        entries.sort(key=lambda e: e.name)
        return entries

    def list_temporaries(self, folder: str = "") -> builtins.list[Entry]:
        """The temporary objects (:data:`TEMP_PREFIX` names) directly in ``folder``,
        with their size and mtime, sorted by name.

        A temporary is what a ``put`` writes before renaming it into place: one
        in use by a put in progress, or left for good by an interrupted one.
        Folders (the FTP and WebDAV guards) are not listed: their backend removes
        stale ones itself. Raises RelayNotFound when ``folder`` does not exist.
        """
        found: builtins.list[Entry] = []
        self.list(folder, temporaries=found)
        found.sort(key=lambda e: e.name)
        return found

    def delete_temporary(self, name: str) -> None:
        """Delete the temporary object ``name`` (as listed by
        :meth:`list_temporaries`). Raises UnsafeName when ``name`` is not a safe
        temporary name, RelayNotFound when it is missing. A put that was still
        writing it fails (its writer retries); nothing else refers to it."""
        self._ensure_open()
        parent, _, base = name.rpartition("/")
        check_name(parent, allow_root=True)
        problem = listed_problem(base, temporary=True)
        if problem is not None:
            raise UnsafeName(f"not a relay temporary: {name!r} ({problem})", name=name)
        self._delete_temporary(name)

    def list_raw(self, folder: str = "") -> builtins.list[Entry]:
        """The backend's listing of ``folder`` as is (unchecked names,
        temporaries included). For wrappers of a backend only; everyone else
        uses :meth:`list`."""
        self._ensure_open()
        return self._list(check_name(folder, allow_root=True))

    def _checked(self, folder: str) -> Iterator[tuple[Entry, bool]]:
        """``(entry, is_temporary)`` for each safe listed child of ``folder``."""
        prefix = f"{folder}/" if folder else ""
        for entry in self._list(folder):
            name = entry.name if isinstance(entry.name, str) else repr(entry.name)
            child = name[len(prefix):] if name.startswith(prefix) else None
            problem = "a name outside the folder" if child is None else listed_problem(child)
            temporary = child is not None and child.startswith(TEMP_PREFIX)
            if temporary and child is not None:
                problem = listed_problem(child, temporary=True)
            if problem is not None:
                shown = name if child is None else child
                warned = self.__dict__.setdefault("_warned_names", set())
                if (folder, shown) not in warned and len(warned) < 10_000:
                    # once per name and connection: a listing repeated (lease polls) stays quiet
                    warned.add((folder, shown))
                    log.warning("%s: ignoring %s listed in folder %r: %r", self.describe(), problem,
                                folder or "/", shown)
                continue
            yield entry, temporary

    def stat(self, name: str) -> Entry:
        """Size and mtime of ``name``. Raises RelayNotFound when missing."""
        self._ensure_open()
        return self._stat(check_name(name))

    def exists(self, name: str) -> bool:
        """Whether ``name`` exists (object or folder)."""
        try:
            self.stat(name)
        except RelayNotFound:
            return False
        return True

    def get(self, name: str, sink: BinaryIO) -> None:
        """Stream the content of ``name`` into ``sink``.

        Raises RelayNotFound when missing. If it raises after starting, ``sink``
        holds a prefix of the content: callers write to a temporary file.
        """
        self._ensure_open()
        self._get(check_name(name), sink)

    def put(self, name: str, source: BinaryIO, *, exclusive: bool = False) -> None:
        """Store the rest of ``source`` under ``name``, atomically.

        Readers see the old content or the new one, never a part; a failed put
        leaves the old content (or nothing). Parent folders are created as
        needed. With ``exclusive``, raises RelayExists when ``name`` exists; this
        is race-free only where ``capabilities.exclusive_create`` says so. If it
        raised RelayConnectionError, the object may or may not have been stored.
        """
        self._ensure_open()
        self._put(check_name(name), source, exclusive)

    def put_commits(self, items: Sequence[tuple[str, bytes]]) -> builtins.list[bool]:
        """Exclusive puts of several small commit objects, in order; for each,
        whether it was created (False: the name existed, as RelayExists would
        say for one put; nothing was written under it).

        Each object is atomic, whole or absent, as with :meth:`put`. Backends
        that make writes durable at each exclusive put (a local folder) make
        them durable once for the whole group: everything written before the
        call, and every item, is durable before any item appears under its
        name. Elsewhere the items are put one after the other, or in
        batches. If it raises, any of the items may have been created (a
        retried call finds them and answers False for them: callers read such
        an object back to tell their own earlier attempt from another
        writer's)."""
        self._ensure_open()
        checked = [(check_name(name), data) for name, data in items]
        return self._put_commits(checked)

    def _put_commits(self, items: Sequence[tuple[str, bytes]]) -> builtins.list[bool]:
        """One exclusive :meth:`_put` after the other (names already checked);
        backends with a cheaper way, and wrappers that pass the group on whole,
        override it."""
        created = []
        for name, data in items:
            try:
                self._put(name, io.BytesIO(data), True)
            except RelayExists:
                created.append(False)
            else:
                created.append(True)
        return created

    def put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store several small objects under *fresh* names: names that nothing
        reads until a later write (a commit, such as a placeholder or an index
        delta) names them, made unique by a random part (payloads).

        Not atomic, and not exclusive: an object already under a name is
        replaced (a retried call writes the same items again). Once the call
        returns, every item is stored whole; if it raises, each item may be
        absent, stored whole, or stored in part under its name: an object
        that no commit names, which the caller treats as any orphan of an
        interrupted push. On a local folder, the items are durable at the
        next barrier, as a plain put's. Parent folders are created as
        needed; names are all checked before anything is written (UnsafeName
        raises). If it raised RelayConnectionError, any item may be stored.

        Backends write each item straight under its name where they can (no
        temporary name and move: one request or system call less per
        object); the default is :meth:`put_commits`, then a plain put of
        each name found taken."""
        self._ensure_open()
        checked = [(check_name(name), data) for name, data in items]
        if checked:
            self._put_fresh(checked)

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """:meth:`put_commits` of the group (names already checked), then a
        plain :meth:`_put` of each item whose name was taken."""
        self._commit_then_replace(items)

    def _commit_then_replace(self, items: Sequence[tuple[str, bytes]]) -> None:
        """:meth:`_put_commits` of ``items``, then a plain :meth:`_put` of
        each item whose name was taken: each name ends with its last item."""
        for (name, data), created in zip(items, self._put_commits(items), strict=True):
            if not created:
                self._put(name, io.BytesIO(data), False)

    def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Plain (replacing) puts of several small objects, in order.

        Each item is atomic as with :meth:`put`: readers see the object that
        was under its name, or the item whole, never a part; an object
        already under a name is replaced. A name given twice ends with its
        last item, as puts in a row would. Parent folders are created as
        needed; names are all checked before anything is written (UnsafeName
        raises). If it raises, each item may be stored whole or not at all
        (a retried call writes them again).

        The default is one plain :meth:`put` after the other; where
        ``capabilities.group_put`` is set, :meth:`put_commits` of the group,
        then a plain put of each item whose name was taken (cheap for
        objects that are usually new, such as acknowledgements). Backends
        with a cheaper way to replace a group override it, and wrappers pass
        the group on whole."""
        self._ensure_open()
        checked = [(check_name(name), data) for name, data in items]
        if checked:
            self._put_many(checked)

    def _put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """The group's items, names already checked: see :meth:`put_many`."""
        if self.capabilities.group_put:
            self._commit_then_replace(items)
            return
        for name, data in items:
            self._put(name, io.BytesIO(data), False)

    def delete(self, name: str) -> None:
        """Delete the object ``name``. Raises RelayNotFound when missing."""
        self._ensure_open()
        self._delete(check_name(name))

    def delete_many(self, names: Sequence[str]) -> builtins.list[EscaleError | None]:
        """Delete several objects; per name, in the order of ``names``, None
        when it was deleted, or what deleting that one object found as a
        value: RelayNotFound (missing: already deleted, or never there),
        RelayPermissionDenied, or another non-transient RelayError naming it
        (the server refused that object alone, a folder for instance). A
        failure of the connection (any transient error) raises for the whole
        call: any of the objects may then have been deleted (a retry finds
        those missing). Names are all checked before anything is deleted
        (UnsafeName raises). The deletes may run in any order.

        Backends delete one object after the other (:meth:`delete`); those
        whose ``capabilities.group_delete`` is set do it in a few round trips
        for the group, and wrappers pass the group on whole."""
        self._ensure_open()
        checked = [check_name(name) for name in names]
        if not checked:
            return []
        return self._delete_many(checked)

    def _delete_many(self, names: Sequence[str]) -> builtins.list[EscaleError | None]:
        """One :meth:`delete` after the other (names already checked), each
        per-object refusal kept as that name's value."""
        outcomes: builtins.list[EscaleError | None] = []
        for name in names:
            try:
                self.delete(name)
            except RelayError as exc:
                if not object_refusal(exc):
                    raise
                outcomes.append(exc)
            else:
                outcomes.append(None)
        return outcomes

    def rename(self, source: str, target: str, *, overwrite: bool) -> None:
        """Rename ``source`` to ``target`` (parent folders created as needed).

        Raises RelayNotFound when ``source`` is missing. With ``overwrite=False``
        raises RelayExists when ``target`` exists (race-free only where
        ``capabilities.rename_exclusive``); with ``overwrite=True`` replaces it
        (atomically where ``capabilities.rename_overwrite``).
        """
        self._ensure_open()
        self._rename(check_name(source), check_name(target), overwrite)

    def mkdir(self, name: str) -> None:
        """Create folder ``name`` and its parents; an existing folder is fine."""
        self._ensure_open()
        self._mkdir(check_name(name))

    def create_root(self) -> None:
        """Create the repository folder itself (and its parents); an existing
        folder is fine. :meth:`open` never creates it: a repository is created
        on purpose, never because its folder vanished (an unmounted disk)."""
        self._ensure_open()
        self._create_root()

    def _create_root(self) -> None:
        """Backends whose ``_mkdir`` takes ``""`` as the repository folder
        inherit this; the others (probing on creation) override it."""
        self._mkdir("")

    def rmdir(self, name: str) -> None:
        """Remove the empty folder ``name``. Raises RelayNotFound when missing."""
        self._ensure_open()
        self._rmdir(check_name(name))

    def usage(self) -> Usage | None:
        """Server-side space figures, or None when the server does not tell."""
        self._ensure_open()
        return self._usage()

    # ----------------------------------------------------------- conveniences

    def get_bytes(self, name: str, *, limit: int | None = None) -> bytes:
        """The whole content of ``name`` in memory (for small objects).

        With ``limit``, an object larger than ``limit`` bytes raises
        ObjectTooLarge naming it: backends that learn the size before the
        content (stat, Content-Length) refuse at once, the others stop reading
        as soon as the limit is passed, so at most ``limit`` bytes are ever
        held. Raises RelayNotFound when missing.
        """
        if limit is None:
            buffer = io.BytesIO()
            self.get(name, buffer)
            return buffer.getvalue()
        sink = BoundedSink(name, limit)
        self.get(name, sink)  # type: ignore[arg-type]
        return sink.getvalue()

    def get_many(self, names: Sequence[str], *, limit: int) -> builtins.list[bytes | EscaleError]:
        """Several small objects in memory, in the order of ``names``: per
        name, its content as stored, or what reading that one object found
        as a value: RelayNotFound (missing), ObjectTooLarge (above ``limit``
        bytes: refused without being read whole, as :meth:`get_bytes` with
        ``limit``), RelayPermissionDenied, or another non-transient
        RelayError naming it (the server refused that object alone). A
        failure of the connection (any transient error) raises, for the
        whole call; nothing of the group is then returned. Names are all
        checked before anything is read (UnsafeName raises). A name may be
        repeated. At most ``len(names) * limit`` bytes are held.

        Read-only, so a retried call is a plain repeat. Backends read one
        object after the other (:meth:`get_bytes`); those whose
        ``capabilities.group_get`` is set do it in a few round trips for the
        group, and wrappers pass the group on whole."""
        self._ensure_open()
        checked = [check_name(name) for name in names]
        if not checked:
            return []
        return self._get_many(checked, limit)

    def _get_many(self, names: Sequence[str], limit: int) -> builtins.list[bytes | EscaleError]:
        """One :meth:`get_bytes` after the other (names already checked),
        each per-object refusal kept as that name's value."""
        found: builtins.list[bytes | EscaleError] = []
        for name in names:
            try:
                found.append(self.get_bytes(name, limit=limit))
            except ObjectTooLarge as exc:
                found.append(exc)
            except RelayError as exc:
                if not object_refusal(exc):
                    raise
                found.append(exc)
        return found

    def put_bytes(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        """Store ``data`` under ``name``; same contract as :meth:`put`."""
        self.put(name, io.BytesIO(data), exclusive=exclusive)

    def walk(self, folder: str = "") -> Iterator[Entry]:
        """Every object (not folder) below ``folder``, depth first, sorted."""
        for entry in self.list(folder):
            if entry.is_dir:
                yield from self.walk(entry.name)
            else:
                yield entry

    def describe(self) -> str:
        """A human label for logs; never contains a password."""
        return self.scheme

    # ----------------------------------------------------------- for backends

    @abc.abstractmethod
    def _connect(self) -> None: ...

    @abc.abstractmethod
    def _disconnect(self) -> None: ...

    @abc.abstractmethod
    def _list(self, folder: str) -> builtins.list[Entry]: ...

    @abc.abstractmethod
    def _stat(self, name: str) -> Entry: ...

    @abc.abstractmethod
    def _get(self, name: str, sink: BinaryIO) -> None: ...

    @abc.abstractmethod
    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None: ...

    @abc.abstractmethod
    def _delete(self, name: str) -> None: ...

    @abc.abstractmethod
    def _rename(self, source: str, target: str, overwrite: bool) -> None: ...

    @abc.abstractmethod
    def _mkdir(self, name: str) -> None: ...

    @abc.abstractmethod
    def _rmdir(self, name: str) -> None: ...

    def _usage(self) -> Usage | None:
        return None

    def _delete_temporary(self, name: str) -> None:
        """Delete a temporary (name checked by :meth:`delete_temporary`)."""
        self._delete(name)


def object_refusal(exc: RelayError) -> bool:
    """Whether ``exc``, raised by a read of one object, is about that object
    alone (:meth:`Relay.get_many` hands it over as that name's value): not
    transient (the connection is fine), nor a misuse of the relay
    (RelayClosed, UnsafeName)."""
    return not exc.transient and not isinstance(exc, (RelayClosed, UnsafeName))


class BoundedSink:
    """An in-memory sink that refuses to hold more than ``limit`` bytes.

    A write past the limit raises ObjectTooLarge naming relay object ``name``.
    Backends that know an object's size before reading it call
    :func:`check_size` first. Seekable (the retry wrapper rewinds sinks).
    """

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._buffer = io.BytesIO()

    def too_large(self, size: int | None = None) -> ObjectTooLarge:
        what = f"{size} bytes" if size is not None else "more"
        return ObjectTooLarge(f"relay object {self.name}: {what} where at most {self.limit} bytes are "
                              "accepted for this kind of object; refused", name=self.name)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._buffer.tell() + len(data) > self.limit:
            raise self.too_large()
        return self._buffer.write(data)

    def getvalue(self) -> bytes:
        return self._buffer.getvalue()

    def tell(self) -> int:
        return self._buffer.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buffer.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._buffer.truncate(size)

    def flush(self) -> None:
        pass


def check_size(sink: object, size: int | None) -> None:
    """Raise ObjectTooLarge when ``sink`` is a :class:`BoundedSink` and the
    object about to be read into it is known to be ``size`` bytes, over its
    limit. Backends call it where they learn the size before the content."""
    if isinstance(sink, BoundedSink) and size is not None and size > sink.limit:
        raise sink.too_large(size)
