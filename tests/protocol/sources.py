"""Test doubles for what an upload reads: a local file that changes (or
fails) while it is read, and a source that counts what was read of it."""

from __future__ import annotations

import io
import random
from typing import BinaryIO


class MovingFile(io.RawIOBase):
    """A file of ``size`` bytes that grows by ``extra`` (or shrinks) once half
    of it was read (rewinding to 0 reads it again, changed)."""

    def __init__(self, size: int, extra: int, *, fail: bool = False) -> None:
        self.data = random.Random(6).randbytes(size + max(extra, 0))
        if extra < 0:
            self.data = self.data[: size + extra]
        self.size = size
        self.fail = fail
        self.position = 0
        self.reads_after_failure = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset
        return offset

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self.position >= self.size // 2:
            if self.fail:
                self.reads_after_failure += 1
                raise OSError(5, "Input/output error")
            end = len(self.data)
        else:
            end = min(self.size, len(self.data))
        n = max(0, min(len(buffer), end - self.position))
        buffer[:n] = self.data[self.position:self.position + n]
        self.position += n
        return n


class CountedSource:
    """A source passed on as read (its announced length too), counting the
    bytes of its last attempt (a backend may rewind it)."""

    def __init__(self, inner: BinaryIO) -> None:
        self.inner = inner
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.count += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        at = self.inner.seek(offset, whence)
        self.count = at
        return at

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]
