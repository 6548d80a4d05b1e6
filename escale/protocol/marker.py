"""The change marker: a cheap way for a reader to know that nothing changed.

One relay object, ``marker`` (next to ``escale.repo``), sealed and bound to its
name like every metadata object. Its JSON form (doc/protocol.rst, "The change
marker")::

    {"clean":true,"counter":42,"format":1,"token":"<32 hex>","type":"marker"}

Only the holder of the lease writes it, through
:class:`escale.protocol.repository.Repository`: before its first change to
``meta/`` or ``data/`` under a lease it writes ``counter + 1`` with
``clean = false`` and a fresh random token; after its last change (when it is
done, before releasing the lease) ``counter + 2`` with ``clean = true`` and
another fresh token. The counter never goes back; the token makes two writers'
markers with one counter (a lost lease, a restored backup) differ.

A reader reads the marker *before* it lists anything. When the marker is clean
and equal (counter and token) to the one it read before its last full read, no
commit, retire, reclaim or clean-up happened since that read: the reader reuses
what it knew of ``meta/`` and ``data/`` instead of listing and decoding them. A
marker that is missing, unreadable, not clean, or different means a full read.
A marker whose counter is below the one the reader recorded is a rollback (the
relay shows an older state than this client saw): it is reported, and the
reader does a full read and keeps its record. The marker is an optimisation
only: whenever in doubt, the reader does the full read.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from escale.errors import ProtocolError
from escale.protocol.objects import _dump as _dump_object
from escale.protocol.objects import _field, _load

#: The marker's relay object name (at the repository's root).
MARKER = "marker"
_HEX32_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ChangeMarker:
    """One state of the change marker: ``counter`` (never goes back),
    ``token`` (32 random hex characters, new at every write) and ``clean``
    (false while a writer changes ``meta/`` or ``data/``, or after it crashed
    doing so)."""

    counter: int
    token: str
    clean: bool

    @classmethod
    def next(cls, after: int, *, clean: bool) -> ChangeMarker:
        """A fresh marker above counter ``after``."""
        return cls(after + 1, secrets.token_hex(16), clean)

    def encode(self) -> bytes:
        return _dump_object("marker", {"clean": self.clean, "counter": self.counter, "token": self.token})

    @classmethod
    def decode(cls, data: bytes, name: str = MARKER) -> ChangeMarker:
        """The marker in ``data``; ProtocolError naming ``name`` for anything else."""
        doc = _load(data, name, "marker", ("clean", "counter", "token"))
        marker = cls(_field(doc, "counter", int, name), _field(doc, "token", str, name),
                     _field(doc, "clean", bool, name))
        if marker.counter < 1 or len(marker.token) != 32 or not set(marker.token) <= _HEX32_CHARS:
            raise ProtocolError(f"relay object {name}: bad counter or token", name=name)
        return marker

    def same(self, other: ChangeMarker | None) -> bool:
        """Whether ``other`` is this very write of the marker."""
        return other is not None and (other.counter, other.token) == (self.counter, self.token)
