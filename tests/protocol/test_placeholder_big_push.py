"""A big file pushed in the placeholder layout is read once when the scan's
identity still holds.

What these prove: a file as the scan saw it (size, mtime, inode, ctime, and
its checksum) goes up under the scan's checksum and arrives whole, whether it
is sealed by :meth:`Repository.commit_file` or apart
(:meth:`Repository.reserve_stage` then :meth:`Repository.seal_reserved`); a
checksum claimed for another identity is not taken (the content is hashed,
and its own checksum is committed); a file rewritten in place while it is
read, same size and mtime set back, is refused and nothing is committed (the
content read no longer is the one the scan's checksum names), whether it is
sealed into a spool file or while it is sent.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import pytest

from escale.errors import ProtocolError
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.repository import LocalVersion, Repository
from escale.protocol.sealer import Sealer
from escale.relay.file import FileRelay
from tests.protocol.rewrites import rewrite_keeping_size_and_mtime

A, B = "a" * 32, "b" * 32
SIZE = 3 << 20  # above the scanner's IDENTITY_MIN_SIZE: a file that carries its identity


class _ReadHook:
    """The opened local file, passed on as read (with its descriptor), that
    runs ``hook`` once, after its first read: the file can be changed on
    disk while it is being read."""

    def __init__(self, inner: BinaryIO, hook: Callable[[], None]) -> None:
        self.inner = inner
        self.hook: Callable[[], None] | None = hook

    def _after_read(self) -> None:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self._after_read()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        got = self.inner.readinto(buffer)  # type: ignore[attr-defined]
        self._after_read()
        return int(got)

    def fileno(self) -> int:
        return self.inner.fileno()


class _RewindableReadHook(_ReadHook):
    """A :class:`_ReadHook` that tells where it stands and rewinds: the file
    is sealed while it is sent (:meth:`Repository.send_file`), by a thread,
    without a spool file."""

    def tell(self) -> int:
        return self.inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.inner.seek(offset, whence)

    def seekable(self) -> bool:
        return True


def _repo(root: str, spool: str, sealer: Sealer, client: str) -> Repository:
    relay = FileRelay(root)
    relay.open()
    repo = Repository(relay, sealer, client_id=client, label=client[:4], receives=True, mode="shared",
                      meta_cache={}, spool_dir=spool)
    repo.prepare()
    return repo


def _lease(repo: Repository) -> Lease:
    return LeaseManager(repo.relay, repo.sealer, client_id=repo.client_id, label="t", timeout=600).acquire()


def _receive(repo: Repository, path: str) -> bytes:
    state = repo.read_state()
    with tempfile.TemporaryFile() as sink:
        repo.fetch(state.latest[path], sink)
        sink.seek(0)
        return sink.read()


@pytest.fixture
def scanned(tmp_path: Path, sealer: Sealer) -> tuple[Repository, Repository, Path, bytes, LocalVersion]:
    """Two repositories on a local-folder relay, and a big local file as the
    scan saw it (its checksum and identity)."""
    root, spool = str(tmp_path / "relay"), str(tmp_path / "spool")
    os.makedirs(root)
    os.makedirs(spool)
    a = _repo(root, spool, sealer, A)
    b = _repo(root, spool, sealer, B)
    path = tmp_path / "big.bin"
    data = random.Random(11).randbytes(SIZE)
    path.write_bytes(data)
    st = os.stat(path)
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    assert a.checksum == "sha256"
    return a, b, path, data, LocalVersion("big.bin", SIZE, st.st_mtime_ns, checksum, st.st_ino, st.st_ctime_ns)


def _commit(repo: Repository, local: LocalVersion, source: BinaryIO) -> None:
    state = repo.read_state()
    with _lease(repo) as lease:
        repo.commit_file(lease, state, local, source)


def test_a_big_file_as_scanned_goes_up_under_the_scans_checksum(scanned) -> None:  # type: ignore[no-untyped-def]
    a, b, path, data, local = scanned
    with open(path, "rb") as source:
        _commit(a, local, source)
    assert b.read_state().latest["big.bin"].checksum == local.checksum
    assert _receive(b, "big.bin") == data


def test_a_big_file_sealed_apart_goes_up_under_the_scans_checksum(scanned) -> None:  # type: ignore[no-untyped-def]
    """The way a pass's transfers push it: reserved on the pass's thread,
    sealed by a worker, uploaded, committed."""
    a, b, path, data, local = scanned
    state = a.read_state()
    with _lease(a) as lease:
        reserved = a.reserve_stage(lease, state, local)
        with open(path, "rb") as source:
            sealed = a.seal_reserved(reserved, local, source)
        try:
            a.upload_staged(lease, sealed)
        finally:
            sealed.close()
        a.commit_staged(lease, state, sealed)
    assert b.read_state().latest["big.bin"].checksum == local.checksum
    assert _receive(b, "big.bin") == data


@pytest.mark.parametrize("other", ["inode", "ctime_ns", "none"])
def test_a_file_that_is_not_the_one_scanned_is_hashed_again(scanned, other: str) -> None:  # type: ignore[no-untyped-def]
    """Another identity (another inode, a ctime moved since, or none
    recorded): the checksum claimed is not taken; the content's own is."""
    a, b, path, data, local = scanned
    claimed = replace(local, checksum="sha256:" + "0" * 64)
    if other == "none":
        claimed = replace(claimed, inode=0, ctime_ns=0)
    else:
        claimed = replace(claimed, **{other: getattr(local, other) + 1})
    with open(path, "rb") as source:
        _commit(a, claimed, source)
    assert b.read_state().latest["big.bin"].checksum == local.checksum
    assert _receive(b, "big.bin") == data


def test_a_big_file_rewritten_while_read_under_the_scans_checksum_is_refused(scanned) -> None:  # type: ignore[no-untyped-def]
    """Rewritten in place while it is read (same size, mtime set back): the
    push is refused and no version is committed, under any checksum."""
    a, b, path, _, local = scanned

    def rewrite() -> None:
        rewrite_keeping_size_and_mtime(path, local)

    with open(path, "rb") as handle:
        source = _ReadHook(handle, rewrite)
        with pytest.raises(ProtocolError, match="changed while"):
            _commit(a, local, source)  # type: ignore[arg-type]
    assert source.hook is None  # it ran
    assert "big.bin" not in b.read_state().latest
    assert "big.bin" not in a.read_state().latest


def test_a_big_file_rewritten_while_sealed_and_sent_under_the_scans_checksum_is_refused(scanned) -> None:  # type: ignore[no-untyped-def]
    """The same, sealed while it is sent (no spool file: the sealing thread
    reads the file a few pieces ahead of the relay): refused, and no version
    names what went up (an orphan, which clean-up removes)."""
    a, b, path, _, local = scanned
    assert a.seals_while_sent(local.size)

    def rewrite() -> None:
        rewrite_keeping_size_and_mtime(path, local)

    with open(path, "rb") as handle:
        source = _RewindableReadHook(handle, rewrite)
        with pytest.raises(ProtocolError, match="changed while"):
            _commit(a, local, source)  # type: ignore[arg-type]
    assert source.hook is None  # it ran
    assert "big.bin" not in b.read_state().latest
    state = a.read_state()
    assert "big.bin" not in state.latest
    assert len(state.unreferenced_payloads()) == 1  # it went up whole, as an orphan
