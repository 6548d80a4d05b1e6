"""Big objects of the index layout move without spool files where they can:
a download is opened, inflated and hashed as it arrives, into the caller's
temporary file; content stored as is is sealed while it is uploaded.

What these prove: the content arrives whole (compressible or not); a download
or an upload cut off half-way is retried from the start by the retry wrapper
and the result holds exactly the content, once; a big object flipped, cut or
swapped on the relay is refused; a file that changes while it is uploaded is
refused and what was sent is never named by the index; the disk quota is
checked before anything is sent; memory stays flat whatever the size.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from escale.errors import IntegrityError, ProtocolError, RelayConnectionError, RelayError, RelayQuotaExceeded
from escale.protocol.index.repository import IndexRepository
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.repository import LocalVersion
from escale.protocol.sealer import Sealer
from escale.relay import Relay
from escale.relay.delegating import DelegatingRelay
from escale.relay.file import FileRelay
from escale.relay.retry import RetryingRelay
from tests.protocol.rewrites import rewrite_keeping_size_and_mtime
from tests.protocol.sources import CountedSource, MovingFile
from tests.servers.target import RelayTarget

A, B = "a" * 32, "b" * 32
SIZE = 20 << 20  # above the 16 MiB threshold: a big object


class _CutOnce(DelegatingRelay):
    """The local-folder relay, except that the first download, and the first
    upload, of a big object stop half-way with a connection error (as a
    dropped link does)."""

    def __init__(self, inner: Relay) -> None:
        super().__init__(inner)
        self.cuts = 0
        self.upload_cuts = 0
        #: bytes read from the source of each attempt at uploading a big object
        self.sent: list[int] = []

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if not name.startswith("big/"):
            self.inner.put(name, source, exclusive=exclusive)
            return
        if not self.upload_cuts:
            self.upload_cuts += 1
            self.sent.append(len(source.read(5 << 20)))
            raise RelayConnectionError("connection lost half-way", name=name)
        counted = CountedSource(source)
        try:
            self.inner.put(name, counted, exclusive=exclusive)  # type: ignore[arg-type]
        finally:
            self.sent.append(counted.count)



    def _get(self, name: str, sink: BinaryIO) -> None:
        if not name.startswith("big/") or self.cuts:
            self.inner.get(name, sink)
            return
        self.cuts += 1
        whole = io.BytesIO()
        self.inner.get(name, whole)
        sink.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        raise RelayConnectionError("connection lost half-way", name=name)


def _repo(root: str, spool: str, sealer: Sealer, client: str, relay: Relay, cache: dict[str, bytes]) -> IndexRepository:
    relay.open()
    repo = IndexRepository(relay, sealer, client_id=client, label=client[:4], receives=True, mode="shared",
                           meta_cache=cache, spool_dir=spool)
    repo.prepare()
    return repo


def _lease(repo: IndexRepository) -> Lease:
    return LeaseManager(repo.relay, repo.sealer, client_id=repo.client_id, label="t", timeout=600).acquire()


def _push(repo: IndexRepository, path: str, data: bytes) -> str:
    state = repo.read_state()
    with _lease(repo) as lease, tempfile.TemporaryFile() as source:
        source.write(data)
        source.seek(0)
        repo.commit_file(lease, state, LocalVersion(path, len(data), 0, None), source)
        repo.commit_pending(lease, state)
    name = repo.read_state().latest[path].payload
    assert name is not None and name.startswith("big/")
    return name


@pytest.fixture
def world(tmp_path, sealer: Sealer):  # type: ignore[no-untyped-def]
    root, spool = str(tmp_path / "relay"), str(tmp_path / "spool")
    os.makedirs(root)
    os.makedirs(spool)
    caches: dict[str, dict[str, bytes]] = {A: {}, B: {}}
    cut = _CutOnce(FileRelay(root))
    a = _repo(root, spool, sealer, A, RetryingRelay(cut, base_delay=0.0, sleep=lambda _: None), caches[A])
    b = _repo(root, spool, sealer, B, RetryingRelay(cut, base_delay=0.0, sleep=lambda _: None), caches[B])
    return a, b, cut, root


def _receive(repo: IndexRepository, path: str) -> bytes:
    state = repo.read_state()
    with tempfile.TemporaryFile() as sink:
        sink.write(b"kept before")  # the fetch writes from where the sink stands
        repo.fetch(state.latest[path], sink)
        sink.seek(0)
        data = sink.read()
    assert data.startswith(b"kept before")
    return data[len(b"kept before"):]


@pytest.mark.parametrize("compressible", [False, True])
def test_a_download_cut_half_way_is_received_whole_once(world, compressible: bool) -> None:  # type: ignore[no-untyped-def]
    a, b, cut, _ = world
    block = b"some words, again " * 100 if compressible else random.Random(3).randbytes(1 << 16)
    data = (block * (SIZE // len(block) + 1))[:SIZE]
    _push(a, "big.bin", data)
    assert _receive(b, "big.bin") == data
    assert (cut.cuts, cut.upload_cuts, len(cut.sent)) == (1, 1, 2)


def _flip(path: str, at: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(at)
        byte = handle.read(1)
        handle.seek(at)
        handle.write(bytes([byte[0] ^ 1]))


def test_a_flipped_cut_or_swapped_big_object_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    a, b, cut, root = world
    cut.cuts = 1  # no cut: tampering only
    data = random.Random(4).randbytes(SIZE)
    one = _push(a, "one.bin", data)
    two = _push(a, "two.bin", data[::-1])
    path = os.path.join(root, one)
    saved = Path(path).read_bytes()
    _flip(path, len(saved) // 2)
    with pytest.raises(IntegrityError):
        _receive(b, "one.bin")
    with open(path, "wb") as handle:
        handle.write(saved[: len(saved) - 70000])
    with pytest.raises(IntegrityError):
        _receive(b, "one.bin")
    Path(path).write_bytes(Path(os.path.join(root, two)).read_bytes())
    with pytest.raises(IntegrityError):
        _receive(b, "one.bin")
    with open(path, "wb") as handle:
        handle.write(saved)
    assert _receive(b, "one.bin") == data


class _Discard(io.RawIOBase):
    """A seekable sink that keeps nothing (so that only escale's memory counts)."""

    def __init__(self) -> None:
        self.position = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        self.position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset
        return offset

    def tell(self) -> int:
        return self.position

    def truncate(self, size: int | None = None) -> int:
        return self.position


def test_receiving_a_big_object_takes_flat_memory(world) -> None:  # type: ignore[no-untyped-def]
    a, b, cut, _ = world
    cut.cuts = 1
    data = random.Random(5).randbytes(SIZE)
    _push(a, "big.bin", data)
    del data
    state = b.read_state()
    tracemalloc.start()
    try:
        sink = _Discard()
        b.fetch(state.latest["big.bin"], sink)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.position == SIZE
    assert peak < 8 << 20


@pytest.mark.parametrize("extra", [70000, -70000])
def test_a_file_that_changes_while_uploaded_is_refused(world, extra: int) -> None:  # type: ignore[no-untyped-def]
    a, b, cut, _ = world
    cut.upload_cuts = 1
    source = MovingFile(SIZE, extra)  # grows, or shrinks
    state = a.read_state()
    with _lease(a) as lease, pytest.raises(ProtocolError, match="changed while"):
        a.commit_file(lease, state, LocalVersion("moving.bin", SIZE, 0, None), source)
    # what went up has exactly the announced size, and no index names it
    assert cut.sent == [a.sealer.sealed_size(SIZE)]
    assert "moving.bin" not in b.read_state().latest


def test_the_quota_is_checked_before_anything_is_sent(world) -> None:  # type: ignore[no-untyped-def]
    a, _, cut, _ = world
    cut.upload_cuts = 1
    a.disk_quota = SIZE // 2
    state = a.read_state()
    with _lease(a) as lease, tempfile.TemporaryFile() as source:
        source.write(random.Random(8).randbytes(SIZE))
        source.seek(0)
        with pytest.raises(RelayQuotaExceeded):
            a.commit_file(lease, state, LocalVersion("big.bin", SIZE, 0, None), source)
    assert cut.sent == []


def test_sending_a_big_object_takes_flat_memory(world) -> None:  # type: ignore[no-untyped-def]
    a, _, cut, _ = world
    cut.upload_cuts = 1
    state = a.read_state()
    with tempfile.TemporaryFile() as source:
        for _ in range(SIZE // (1 << 20)):
            source.write(random.Random(9).randbytes(1 << 20))
        source.seek(0)
        cut.sent.clear()
        tracemalloc.start()
        try:
            with _lease(a) as lease:
                a.commit_file(lease, state, LocalVersion("big.bin", SIZE, 0, None), source)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert cut.sent == [a.sealer.sealed_size(SIZE)]
    assert peak < 8 << 20


def test_big_objects_go_up_and_come_back_on_every_backend(target: RelayTarget, sealer: Sealer,
                                                          tmp_path: Path) -> None:
    """Each backend reads the sealing upload as it is produced (its own way:
    a length announced first, a chunked body, FTP blocks) and delivers the
    download in its own pieces."""
    spool = str(tmp_path / "spool")
    os.makedirs(spool)
    folder = target.new_folder()
    caches: dict[str, dict[str, bytes]] = {A: {}, B: {}}
    kwargs = {"maxpagesize": 64 * 1024}  # a big object above 16 KiB: small, so quick on slow servers
    a = IndexRepository(target.relay(folder), sealer, client_id=A, label="a", receives=True, mode="shared",
                        meta_cache=caches[A], spool_dir=spool, **kwargs)
    b = IndexRepository(target.relay(folder), sealer, client_id=B, label="b", receives=True, mode="shared",
                        meta_cache=caches[B], spool_dir=spool, **kwargs)
    try:
        for repo in (a, b):
            repo.relay.open()
            repo.prepare()
        noise = random.Random(10).randbytes(300_000)
        text = b"compressible, stored deflated " * 10_000
        for path, data in (("noise.bin", noise), ("text.txt", text)):
            assert _push(a, path, data).startswith("big/")
            assert _receive(b, path) == data
    finally:
        a.relay.close()
        b.relay.close()


def test_a_file_that_fails_to_read_while_uploaded_raises_its_own_error(world) -> None:  # type: ignore[no-untyped-def]
    """The local error comes out as such (not as the relay's), and the retry
    wrapper does not read the failing file again."""
    a, b, cut, _ = world
    cut.upload_cuts = 1
    state = a.read_state()
    with _lease(a) as lease, pytest.raises(OSError, match="Input/output error") as info:
        a.commit_file(lease, state, LocalVersion("failing.bin", SIZE, 0, None), MovingFile(SIZE, 0, fail=True))
    assert not isinstance(info.value, RelayError)
    assert len(cut.sent) == 1
    assert "failing.bin" not in b.read_state().latest


# --------------------------------------------------------------------------- the scan's checksum, trusted


class _Midway(DelegatingRelay):
    """A relay that runs ``hook`` once, after the first read of a big
    object's upload (the local file can then be changed while it is sent)."""

    def __init__(self, inner: Relay) -> None:
        super().__init__(inner)
        self.hook: Callable[[], None] | None = None

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if not name.startswith("big/") or self.hook is None:
            self.inner.put(name, source, exclusive=exclusive)
            return
        hook: Callable[[], None] = self.hook
        self.hook = None

        class Source:
            def __init__(self) -> None:
                self.first = True

            def read(self, size: int = -1) -> bytes:
                data = source.read(size)
                if self.first:
                    self.first = False
                    hook()
                return data

            def tell(self) -> int:
                return source.tell()

            def seek(self, offset: int, whence: int = 0) -> int:
                return source.seek(offset, whence)

            def __len__(self) -> int:
                return len(source)  # type: ignore[arg-type]

        self.inner.put(name, Source(), exclusive=exclusive)  # type: ignore[arg-type]


@pytest.fixture
def scanned(tmp_path, sealer: Sealer):  # type: ignore[no-untyped-def]
    """Two repositories on a local-folder relay that can change a file while
    it is sent, and a big local file as the scan saw it (its checksum and
    identity)."""
    import hashlib

    root, spool = str(tmp_path / "relay"), str(tmp_path / "spool")
    os.makedirs(root)
    os.makedirs(spool)
    midway = _Midway(FileRelay(root))
    a = _repo(root, spool, sealer, A, RetryingRelay(midway, base_delay=0.0, sleep=lambda _: None), {})
    b = _repo(root, spool, sealer, B, RetryingRelay(FileRelay(root), base_delay=0.0, sleep=lambda _: None), {})
    path = tmp_path / "big.bin"
    data = random.Random(21).randbytes(SIZE)
    path.write_bytes(data)
    st = os.stat(path)
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    local = LocalVersion("big.bin", SIZE, st.st_mtime_ns, checksum, st.st_ino, st.st_ctime_ns)
    assert a.checksum == "sha256"
    return a, b, midway, path, data, local


def _push_local(repo: IndexRepository, local: LocalVersion, path: Path) -> None:
    state = repo.read_state()
    with _lease(repo) as lease, open(path, "rb") as source:
        repo.commit_file(lease, state, local, source)
        repo.commit_pending(lease, state)


def test_a_big_file_as_scanned_goes_up_under_the_scans_checksum(scanned) -> None:  # type: ignore[no-untyped-def]
    a, b, _, path, data, local = scanned
    _push_local(a, local, path)
    assert b.read_state().latest["big.bin"].checksum == local.checksum
    assert _receive(b, "big.bin") == data


def test_a_file_that_is_not_the_one_scanned_is_hashed_again(scanned) -> None:  # type: ignore[no-untyped-def]
    """Another identity (the file replaced since, or another inode): the
    checksum the scan claims is not taken; the content's own is."""
    from dataclasses import replace

    a, b, _, path, data, local = scanned
    claimed = replace(local, checksum="sha256:" + "0" * 64, inode=local.inode + 1)
    _push_local(a, claimed, path)
    assert b.read_state().latest["big.bin"].checksum == local.checksum
    assert _receive(b, "big.bin") == data


def test_a_big_file_rewritten_while_sent_under_the_scans_checksum_is_refused(scanned) -> None:  # type: ignore[no-untyped-def]
    """Rewritten in place while it is sent (same size, mtime set back): what
    went up is not named by the index, under any checksum."""
    a, b, midway, path, _, local = scanned

    def rewrite() -> None:
        rewrite_keeping_size_and_mtime(path, local)

    midway.hook = rewrite
    state = a.read_state()
    with _lease(a) as lease, open(path, "rb") as source, pytest.raises(ProtocolError, match="changed while"):
        a.commit_file(lease, state, local, source)
    assert midway.hook is None  # it ran
    assert "big.bin" not in b.read_state().latest


class _Endless(DelegatingRelay):
    """The local-folder relay, except that a big object's download goes on
    after its end with zeros, until the sink refuses them (or 64 MiB more:
    bounded for the test's sake); ``garbage`` counts what each handed over."""

    CAP = 64 << 20

    def __init__(self, inner: Relay) -> None:
        super().__init__(inner)
        self.endless = False
        self.garbage: list[int] = []

    def _get(self, name: str, sink: BinaryIO) -> None:
        self.inner.get(name, sink)
        if not name.startswith("big/") or not self.endless:
            return
        self.garbage.append(0)
        while self.garbage[-1] < self.CAP:
            sink.write(bytes(1 << 20))
            self.garbage[-1] += 1 << 20


def test_a_big_object_that_never_ends_is_stopped_and_refused(tmp_path, sealer: Sealer) -> None:  # type: ignore[no-untyped-def]
    root, spool = str(tmp_path / "relay"), str(tmp_path / "spool")
    os.makedirs(root)
    os.makedirs(spool)
    endless = _Endless(FileRelay(root))
    a = _repo(root, spool, sealer, A, RetryingRelay(endless, base_delay=0.0, sleep=lambda _: None), {})
    b = _repo(root, spool, sealer, B, RetryingRelay(endless, base_delay=0.0, sleep=lambda _: None), {})
    data = random.Random(8).randbytes(SIZE)
    _push(a, "big.bin", data)
    endless.endless = True
    with pytest.raises(IntegrityError, match="longer than"):
        _receive(b, "big.bin")
    assert len(endless.garbage) == 1  # refused at once, not retried
    assert endless.garbage[0] <= sealer.sealed_size(SIZE) + (2 << 20)  # type: ignore[attr-defined]
    endless.endless = False
    assert _receive(b, "big.bin") == data
