"""A relay that passes every operation to another: the base of relay wrappers.

:class:`DelegatingRelay` forwards each backend operation of :class:`Relay` to
``inner`` unchanged (opening and closing it with itself), so that a wrapper
(:class:`~escale.relay.throttle.ThrottledRelay`,
:class:`~escale.relay.readonly.ReadOnlyRelay`, the benchmarks' counting relay)
overrides only the operations it changes (a wrapper that changes single reads
also sees each read of a group: see :meth:`DelegatingRelay._get_many`). Names are checked twice, by the
wrapper's public method and by ``inner``'s; listings go through
:meth:`Relay.list_raw`, so that the wrapper's own :meth:`Relay.list` checks
names and sees temporaries exactly as ``inner`` lists them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import BinaryIO

from escale.errors import EscaleError
from escale.relay.base import Capabilities, Entry, Relay, Usage

__all__ = ["DelegatingRelay"]


class DelegatingRelay(Relay):
    """``inner``, every operation passed on as is.

    ``scheme`` is ``inner``'s; :attr:`capabilities` and :meth:`describe` are
    ``inner``'s, read live (some backends learn their capabilities on
    ``open()``). Each call's result or exception is ``inner``'s.
    """

    def __init__(self, inner: Relay) -> None:
        super().__init__()
        self.inner = inner
        self.scheme = inner.scheme

    @property
    def capabilities(self) -> Capabilities:
        """The inner backend's, read live (some learn theirs on open())."""
        return self.inner.capabilities

    @capabilities.setter
    def capabilities(self, value: Capabilities) -> None:
        self.inner.capabilities = value

    def describe(self) -> str:
        return self.inner.describe()

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

    def _get_many(self, names: Sequence[str], limit: int) -> list[bytes | EscaleError]:
        """The group passed on whole, unless the wrapper changes single reads
        (it overrides ``_get`` and not this): then one read after the other
        through its ``_get``, so that a group read is never a way around it."""
        if type(self)._get is not DelegatingRelay._get:
            return Relay._get_many(self, names, limit)
        return self.inner.get_many(names, limit=limit)

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        self.inner.put(name, source, exclusive=exclusive)

    def _put_fresh(self, items: Sequence[tuple[str, bytes]]) -> None:
        """The group passed on whole, unless the wrapper changes single puts
        (it overrides ``_put`` and not this): then one plain put after the
        other through its ``_put``, so that a group is never a way around it."""
        if type(self)._put is not DelegatingRelay._put:
            for name, data in items:
                self._put(name, io.BytesIO(data), False)
            return
        self.inner.put_fresh(items)

    def _put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """The group passed on whole, unless the wrapper changes single puts
        (then one plain put after the other through its ``_put``)."""
        if type(self)._put is not DelegatingRelay._put:
            for name, data in items:
                self._put(name, io.BytesIO(data), False)
            return
        self.inner.put_many(items)

    def _delete(self, name: str) -> None:
        self.inner.delete(name)

    def _delete_many(self, names: Sequence[str]) -> list[EscaleError | None]:
        """The group passed on whole, unless the wrapper changes single
        deletes (it overrides ``_delete`` and not this): then one delete
        after the other through its ``_delete``."""
        if type(self)._delete is not DelegatingRelay._delete:
            return Relay._delete_many(self, names)
        return self.inner.delete_many(names)

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        self.inner.rename(source, target, overwrite=overwrite)

    def _mkdir(self, name: str) -> None:
        self.inner.mkdir(name)

    def _create_root(self) -> None:
        self.inner.create_root()

    def _rmdir(self, name: str) -> None:
        self.inner.rmdir(name)

    def _delete_temporary(self, name: str) -> None:
        self.inner.delete_temporary(name)

    def _usage(self) -> Usage | None:
        return self.inner.usage()
