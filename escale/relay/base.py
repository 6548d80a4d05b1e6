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
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from escale.errors import RelayClosed, RelayNotFound, UnsafeName

#: Prefix of the temporary names a backend writes before renaming into place.
#: Names with this prefix are never accepted from callers and never listed.
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
    if "/" in child:
        raise UnsafeName(f"server listed a nested name in {parent or '/'!r}: {child!r}")
    check_name(child)
    return child


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
    """

    atomic_put: bool = True
    exclusive_create: bool = False
    rename_overwrite: bool = True
    rename_exclusive: bool = False
    mtime_precision: float | None = 1.0
    usage: bool = False


@dataclass(frozen=True)
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
        """Connect, and create the repository folder if it does not exist.

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

    def __enter__(self) -> "Relay":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure_open(self) -> None:
        if self._closed:
            raise RelayClosed(f"{self.scheme} relay used while closed")

    # ----------------------------------------------------------- public API

    def list(self, folder: str = "") -> list[Entry]:
        """Direct children of ``folder``, sorted by name; temporary names excluded.

        Raises RelayNotFound when ``folder`` does not exist, UnsafeName when the
        server lists a name that is not safe. Read-only.
        """
        self._ensure_open()
        check_name(folder, allow_root=True)
        entries: builtins.list[Entry] = []
        for entry in self._list(folder):
            if entry.basename.startswith(TEMP_PREFIX):
                continue
            check_listed(folder, entry.basename)
            if entry.name != join(folder, entry.basename):
                raise UnsafeName(f"server listed {entry.name!r} as a child of {folder or '/'!r}", name=entry.name)
            entries.append(entry)
        entries.sort(key=lambda e: e.name)
        return entries

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

    def delete(self, name: str) -> None:
        """Delete the object ``name``. Raises RelayNotFound when missing."""
        self._ensure_open()
        self._delete(check_name(name))

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

    def rmdir(self, name: str) -> None:
        """Remove the empty folder ``name``. Raises RelayNotFound when missing."""
        self._ensure_open()
        self._rmdir(check_name(name))

    def usage(self) -> Usage | None:
        """Server-side space figures, or None when the server does not tell."""
        self._ensure_open()
        return self._usage()

    # ----------------------------------------------------------- conveniences

    def get_bytes(self, name: str) -> bytes:
        """The whole content of ``name`` in memory (for small objects)."""
        buffer = io.BytesIO()
        self.get(name, buffer)
        return buffer.getvalue()

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
