"""A relay that counts the requests made through it.

:class:`CountingRelay` wraps any backend and adds one to a shared
:class:`collections.Counter` for each call of ``list``, ``stat``, ``get``,
``put``, ``delete``, ``rename``, ``mkdir``, ``rmdir``, ``usage`` and ``open``
(each connection or reconnection); a group read or a group put counts one
get or put per object. It sits below the retry wrapper, so a
retried operation counts once per attempt: the figure is what the server saw
from escale's relay layer. One backend call may be several protocol commands
(an FTP put is a STOR and a RNFR/RNTO); the count is of relay operations.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import BinaryIO

from escale.errors import EscaleError
from escale.relay import Entry, Relay, Usage
from escale.relay.delegating import DelegatingRelay

#: The operations counted, in the order tables show them.
OPERATIONS = ("open", "list", "stat", "get", "put", "delete", "rename", "mkdir", "rmdir", "usage")


class CountingRelay(DelegatingRelay):
    """``inner``, with every operation counted into ``counts``.

    Contracts are those of ``inner``: each call is passed on unchanged and its
    result or exception returned as is; a call is counted before it is made, so
    a call that raised counts too. Deleting a temporary counts as a delete.
    """

    def __init__(self, inner: Relay, counts: Counter[str]) -> None:
        super().__init__(inner)
        self.counts = counts

    def _connect(self) -> None:
        self.counts["open"] += 1
        super()._connect()

    def _list(self, folder: str) -> list[Entry]:
        self.counts["list"] += 1
        return super()._list(folder)

    def _stat(self, name: str) -> Entry:
        self.counts["stat"] += 1
        return super()._stat(name)

    def _get(self, name: str, sink: BinaryIO) -> None:
        self.counts["get"] += 1
        super()._get(name, sink)

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        if type(self)._get is not CountingRelay._get:
            # a subclass that changes single reads (a test's gate) sees each read of the group
            return Relay._get_many(self, names, limit)
        self.counts["get"] += len(names)
        return self.inner.get_many(names, limit=limit)

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        self.counts["put"] += 1
        super()._put(name, source, exclusive)

    def _put_commits(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        self.counts["put"] += len(items)
        return self.inner.put_commits(items)

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        if type(self)._put is not CountingRelay._put:
            # a subclass that changes single puts (a test's gate) sees each put of the group
            super()._put_fresh(items)
            return
        self.counts["put"] += len(items)
        self.inner.put_fresh(items)

    def _put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if type(self)._put is not CountingRelay._put:
            super()._put_many(items)
            return
        self.counts["put"] += len(items)
        self.inner.put_many(items)

    def _delete(self, name: str) -> None:
        self.counts["delete"] += 1
        super()._delete(name)

    def _delete_many(self, names: Sequence[str]) -> list[EscaleError | None]:
        if type(self)._delete is not CountingRelay._delete:
            # a subclass that changes single deletes (a test's gate) sees each delete of the group
            return Relay._delete_many(self, names)
        self.counts["delete"] += len(names)
        return self.inner.delete_many(names)

    def _delete_temporary(self, name: str) -> None:
        self.counts["delete"] += 1
        super()._delete_temporary(name)

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        self.counts["rename"] += 1
        super()._rename(source, target, overwrite)

    def _mkdir(self, name: str) -> None:
        self.counts["mkdir"] += 1
        super()._mkdir(name)

    def _create_root(self) -> None:
        self.counts["mkdir"] += 1
        super()._create_root()

    def _rmdir(self, name: str) -> None:
        self.counts["rmdir"] += 1
        super()._rmdir(name)

    def _usage(self) -> Usage | None:
        self.counts["usage"] += 1
        return super()._usage()
