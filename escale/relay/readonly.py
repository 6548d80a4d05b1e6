"""A relay wrapper that reads and never writes: for ``escale --once --dry-run``.

:class:`ReadOnlyRelay` forwards listings, stats, reads and usage to ``inner``;
every write (put, delete, rename, mkdir, rmdir, creating the repository folder,
deleting a temporary) is dropped: nothing reaches the relay, a DEBUG line says
what was left out, and the caller goes on as if the write had been done. A dry
run ends before anything it would have written is read back.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

from escale.relay.base import Capabilities, Entry, Relay, Usage

log = logging.getLogger(__name__)


class ReadOnlyRelay(Relay):
    """``inner`` with every write left out."""

    def __init__(self, inner: Relay) -> None:
        super().__init__()
        self.inner = inner
        self.scheme = inner.scheme
        #: what was left out, as ``"put NAME"`` lines (for tests and the dry-run report)
        self.dropped: list[str] = []

    @property
    def capabilities(self) -> Capabilities:
        """The inner backend's, read live (some learn theirs on open())."""
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self.inner.capabilities = value

    def describe(self) -> str:
        return self.inner.describe()

    def _drop(self, what: str) -> None:
        self.dropped.append(what)
        log.debug("dry run: %s on %s left out", what, self.describe())

    def _connect(self) -> None:
        self.inner.open()

    def _disconnect(self) -> None:
        self.inner.close()

    def _list(self, folder: str) -> list[Entry]:
        return self.inner.list_raw(folder)

    def _stat(self, name: str) -> Entry:
        return self.inner.stat(name)

    def _get(self, name: str, sink: BinaryIO) -> None:
        self.inner.get(name, sink)

    def _usage(self) -> Usage | None:
        return self.inner.usage()

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        self._drop(f"put {name}")

    def _delete(self, name: str) -> None:
        self._drop(f"delete {name}")

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        self._drop(f"rename {source} {target}")

    def _mkdir(self, name: str) -> None:
        self._drop(f"mkdir {name}")

    def _create_root(self) -> None:
        self._drop("create the repository folder")

    def _rmdir(self, name: str) -> None:
        self._drop(f"rmdir {name}")

    def _delete_temporary(self, name: str) -> None:
        self._drop(f"delete {name}")
