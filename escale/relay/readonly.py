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

from escale.relay.base import Relay
from escale.relay.delegating import DelegatingRelay

log = logging.getLogger(__name__)


class ReadOnlyRelay(DelegatingRelay):
    """``inner`` with every write left out."""

    def __init__(self, inner: Relay) -> None:
        super().__init__(inner)
        #: what was left out, as ``"put NAME"`` lines (for tests and the dry-run report)
        self.dropped: list[str] = []

    def _drop(self, what: str) -> None:
        self.dropped.append(what)
        log.debug("dry run: %s on %s left out", what, self.describe())

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
