"""The sealer: what the protocol needs from the crypto layer, as a structural type.

:mod:`escale.crypto` provides the implementations (plain and encrypted); the
protocol only relies on this shape, so it never depends on an algorithm. The
envelope format itself (what a sealed object holds) is :mod:`escale.crypto.envelope`.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol


class Sealer(Protocol):
    """Seals relay objects (encrypts and authenticates, or passes through).

    ``identity`` is the relay object name: sealed bytes only open under the name
    they were sealed for, so a relay swapping two objects is detected.
    ``open``/``open_stream`` raise IntegrityError on any alteration; ``open_stream``
    may have written a prefix to ``sink`` before raising.
    """

    @property
    def encrypted(self) -> bool: ...

    def seal(self, identity: str, data: bytes) -> bytes: ...

    def open(self, identity: str, data: bytes) -> bytes: ...

    def seal_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int: ...

    def open_stream(self, identity: str, source: BinaryIO, sink: BinaryIO) -> int: ...

    def object_key(self, path: str) -> str: ...
