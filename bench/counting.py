"""A relay that counts the requests made through it.

:class:`CountingRelay` wraps any backend and adds one to a shared
:class:`collections.Counter` for each call of ``list``, ``stat``, ``get``,
``put``, ``delete``, ``rename``, ``mkdir``, ``rmdir``, ``usage`` and ``open``
(each connection or reconnection). It sits below the retry wrapper, so a
retried operation counts once per attempt: the figure is what the server saw
from escale's relay layer. One backend call may be several protocol commands
(an FTP put is a STOR and a RNFR/RNTO); the count is of relay operations.
"""

from __future__ import annotations

from collections import Counter
from typing import BinaryIO

from escale.relay import Capabilities, Entry, Relay, Usage

#: The operations counted, in the order tables show them.
OPERATIONS = ("open", "list", "stat", "get", "put", "delete", "rename", "mkdir", "rmdir", "usage")


class CountingRelay(Relay):
    """``inner``, with every operation counted into ``counts``.

    Contracts are those of ``inner``: each call is passed on unchanged and its
    result or exception returned as is; a call is counted before it is made, so
    a call that raised counts too.
    """

    def __init__(self, inner: Relay, counts: Counter[str]) -> None:
        super().__init__()
        self.inner = inner
        self.counts = counts
        self.scheme = inner.scheme

    @property
    def capabilities(self) -> Capabilities:
        """The inner backend's, read live: some backends learn theirs on open()."""
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self.inner.capabilities = value

    def describe(self) -> str:
        return self.inner.describe()

    def _connect(self) -> None:
        self.counts["open"] += 1
        self.inner.open()

    def _disconnect(self) -> None:
        self.inner.close()

    def _list(self, folder: str) -> list[Entry]:
        self.counts["list"] += 1
        return self.inner.list(folder)

    def _stat(self, name: str) -> Entry:
        self.counts["stat"] += 1
        return self.inner.stat(name)

    def _get(self, name: str, sink: BinaryIO) -> None:
        self.counts["get"] += 1
        self.inner.get(name, sink)

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        self.counts["put"] += 1
        self.inner.put(name, source, exclusive=exclusive)

    def _delete(self, name: str) -> None:
        self.counts["delete"] += 1
        self.inner.delete(name)

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        self.counts["rename"] += 1
        self.inner.rename(source, target, overwrite=overwrite)

    def _mkdir(self, name: str) -> None:
        self.counts["mkdir"] += 1
        self.inner.mkdir(name)

    def _create_root(self) -> None:
        self.counts["mkdir"] += 1
        self.inner.create_root()

    def _rmdir(self, name: str) -> None:
        self.counts["rmdir"] += 1
        self.inner.rmdir(name)

    def _usage(self) -> Usage | None:
        self.counts["usage"] += 1
        return self.inner.usage()
