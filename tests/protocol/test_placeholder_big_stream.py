"""Big payloads of the placeholder layout move without spool files: sealed
while they are sent, opened and verified while they are received.

What these prove, on every conformance backend (real servers), both the
serial way (:meth:`Repository.commit_file`, :meth:`Repository.fetch`) and a
pass's workers' way (:meth:`Repository.reserve_stage` then
:meth:`Repository.send_reserved`, :meth:`Repository.fetch_on` on another
connection): a payload goes up and comes back whole, and no spool file is
made for it (the spool paths raise if reached); an upload or a download cut
off half-way is retried from its first byte and the result holds exactly the
content, once; a file that changes while it is sent is refused, nothing is
committed, and what went up is an orphan that clean-up removes; a local read
error comes out as such, and is not retried; an upload refused half-way
leaves no sealing thread running and no room reserved against the quota; a
payload flipped or cut on the relay is refused, and verification fails
before the caller's temporary file is of any use.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from escale.errors import (
    IntegrityError,
    ProtocolError,
    RelayConnectionError,
    RelayError,
    RelayPermissionDenied,
    RelayQuotaExceeded,
)
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.repository import SPOOL_IN_MEMORY, LocalVersion, Repository, StagedPayload
from escale.protocol.sealer import Sealer
from escale.relay import Relay
from escale.relay.delegating import DelegatingRelay
from escale.relay.retry import RetryingRelay
from tests.protocol.sources import CountedSource, MovingFile
from tests.servers.target import RelayTarget

A, B = "a" * 32, "b" * 32
SIZE = (2 << 20) + 12345  # above SMALL_PAYLOAD (1 MiB): received without the memory path
#: garbage a relay that never ends an object may hand over in these tests
ENDLESS_CAP = 64 << 20


class _Plan:
    """Shared by every connection of a test: the next payload upload
    (``cut_put``) or download (``cut_get``) stops half-way with a connection
    error, as a dropped link does; ``sent`` counts the bytes read from each
    payload upload's source."""

    def __init__(self) -> None:
        self.cut_put = False
        self.cut_get = False
        self.sent: list[int] = []
        #: the next payload download goes on after the object's end, with
        #: garbage, until the sink refuses it (or ENDLESS_CAP more bytes)
        self.endless_get = False
        #: bytes of garbage each such download managed to hand over
        self.garbage: list[int] = []
        #: the next payload upload is refused half-way (not transient: not retried)
        self.refuse_put = False


class _Cut(DelegatingRelay):
    """A real backend's connection, cut as ``plan`` says."""

    def __init__(self, inner: Relay, plan: _Plan) -> None:
        super().__init__(inner)
        self.plan = plan

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if not name.startswith("data/") or not hasattr(source, "__len__"):  # not a payload sealed while sent
            self.inner.put(name, source, exclusive=exclusive)
            return
        if self.plan.cut_put:
            self.plan.cut_put = False
            self.plan.sent.append(len(source.read(1 << 20)))
            raise RelayConnectionError("connection lost half-way (test)", name=name)
        if self.plan.refuse_put:
            self.plan.refuse_put = False
            self.plan.sent.append(len(source.read(1 << 20)))
            raise RelayPermissionDenied("refused half-way (test)", name=name)
        counted = CountedSource(source)
        try:
            self.inner.put(name, counted, exclusive=exclusive)  # type: ignore[arg-type]
        finally:
            self.plan.sent.append(counted.count)

    def _get(self, name: str, sink: BinaryIO) -> None:
        if name.startswith("data/") and self.plan.endless_get:
            self.plan.endless_get = False
            self.inner.get(name, sink)
            handed = 0
            self.plan.garbage.append(handed)
            while handed < ENDLESS_CAP:  # a relay that never ends the object (bounded here, for the test's sake)
                sink.write(bytes(1 << 20))
                handed += 1 << 20
                self.plan.garbage[-1] = handed
            return
        if not name.startswith("data/") or not self.plan.cut_get:
            self.inner.get(name, sink)
            return
        self.plan.cut_get = False
        whole = io.BytesIO()
        self.inner.get(name, whole)
        sink.write(whole.getvalue()[: len(whole.getvalue()) // 2])
        raise RelayConnectionError("connection lost half-way (test)", name=name)


@dataclass
class _World:
    a: Repository
    b: Repository
    cut: _Plan
    #: another connection of a's, and of b's (a pass's worker's)
    a_worker: Relay
    b_worker: Relay


def _no_spool(*_: object, **__: object) -> None:
    raise AssertionError("a big payload went through a spool file")


@pytest.fixture
def world(target: RelayTarget, sealer: Sealer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_World]:
    spool = str(tmp_path / "spool")
    os.makedirs(spool)
    folder = target.new_folder()
    monkeypatch.setattr(Repository, "_payload_spool", lambda self, size: _no_spool() if size > SPOOL_IN_MEMORY
                        else io.BytesIO())
    monkeypatch.setattr(Repository, "download_payload", _no_spool)

    def retrying(relay: Relay) -> Relay:
        return RetryingRelay(relay, base_delay=0.0, sleep=lambda _: None)

    plan = _Plan()
    relays = [retrying(_Cut(target.relay(folder), plan)) for _ in range(4)]  # a, b, a's worker, b's worker
    try:
        for relay in relays:
            relay.open()
        a, b = (Repository(relay, sealer, client_id=client, label=client[:4], receives=True, mode="shared",
                           meta_cache={}, spool_dir=spool) for relay, client in zip(relays[:2], (A, B), strict=True))
        a.prepare()
        b.prepare()
        yield _World(a, b, plan, relays[2], relays[3])
    finally:
        for relay in relays:
            relay.close()


def _lease(repo: Repository) -> Lease:
    return LeaseManager(repo.relay, repo.sealer, client_id=repo.client_id, label="t", timeout=600).acquire()


def _push(world: _World, path: str, source: BinaryIO, size: int, *, apart: bool) -> None:
    """Push ``source`` as ``path``: serially, or ``apart`` as a pass's worker does."""
    repo = world.a
    local = LocalVersion(path, size, 0, None)
    state = repo.read_state()
    with _lease(repo) as lease:
        if not apart:
            repo.commit_file(lease, state, local, source)
            return
        reserved = repo.reserve_stage(lease, state, local)
        try:
            sent: StagedPayload = repo.send_reserved(lease, reserved, local, source, world.a_worker)
        except BaseException:
            repo.release_staged(state, reserved)
            raise
        finally:
            reserved.close()
        repo.commit_staged(lease, state, sent)


def _receive(world: _World, path: str, *, apart: bool) -> bytes:
    repo = world.b
    placeholder = repo.read_state().latest[path]
    with tempfile.TemporaryFile() as sink:
        sink.write(b"kept before")  # the fetch writes from where the sink stands
        if apart:
            repo.fetch_on(placeholder, sink, world.b_worker)
        else:
            repo.fetch(placeholder, sink)
        sink.seek(0)
        data = sink.read()
    assert data.startswith(b"kept before")
    return data[len(b"kept before"):]


def _file(data: bytes) -> BinaryIO:
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - the caller closes it
    handle.write(data)
    handle.seek(0)
    return handle


@pytest.mark.parametrize("apart", [False, True], ids=["serial", "apart"])
def test_a_big_payload_goes_up_and_comes_back_without_spool_files(world: _World, apart: bool) -> None:
    data = random.Random(1).randbytes(SIZE)
    with _file(data) as source:
        _push(world, "big.bin", source, SIZE, apart=apart)
    assert world.cut.sent == [world.a.sealer.sealed_size(SIZE)]  # type: ignore[attr-defined]
    assert _receive(world, "big.bin", apart=apart) == data


@pytest.mark.parametrize("apart", [False, True], ids=["serial", "apart"])
def test_cut_half_way_an_upload_and_a_download_start_again_from_their_first_byte(world: _World,
                                                                                  apart: bool) -> None:
    data = random.Random(2).randbytes(SIZE)
    world.cut.cut_put = True
    with _file(data) as source:
        _push(world, "big.bin", source, SIZE, apart=apart)
    sealed = world.a.sealer.sealed_size(SIZE)  # type: ignore[attr-defined]
    first, again = world.cut.sent
    assert 0 < first < sealed and again == sealed  # the second attempt sent it all, from its first byte
    world.cut.cut_get = True
    assert _receive(world, "big.bin", apart=apart) == data
    assert not world.cut.cut_get  # it was cut


@pytest.mark.parametrize("apart", [False, True], ids=["serial", "apart"])
@pytest.mark.parametrize("extra", [70000, -70000], ids=["grows", "shrinks"])
def test_a_file_that_changes_while_sent_is_refused_and_its_orphan_removed(world: _World, extra: int,
                                                                          apart: bool) -> None:
    with pytest.raises(ProtocolError, match="changed while"):
        _push(world, "moving.bin", MovingFile(SIZE, extra), SIZE, apart=apart)  # type: ignore[arg-type]
    # exactly the announced size went up, and no placeholder names it
    assert world.cut.sent == [world.a.sealer.sealed_size(SIZE)]  # type: ignore[attr-defined]
    state = world.a.read_state()
    assert "moving.bin" not in state.latest and "moving.bin" not in world.b.read_state().latest
    assert len(state.unreferenced_payloads()) == 1
    with _lease(world.a) as lease:
        world.a.collect_garbage(lease, state)
    assert world.a.read_state().unreferenced_payloads() == set()


@pytest.mark.parametrize("apart", [False, True], ids=["serial", "apart"])
def test_a_local_read_error_comes_out_as_such_and_is_not_retried(world: _World, apart: bool) -> None:
    source = MovingFile(SIZE, 0, fail=True)
    with pytest.raises(OSError, match="Input/output error") as info:
        _push(world, "failing.bin", source, SIZE, apart=apart)  # type: ignore[arg-type]
    assert not isinstance(info.value, RelayError)
    assert source.reads_after_failure == 1
    assert len(world.cut.sent) == 1
    assert "failing.bin" not in world.b.read_state().latest


def _payload_file(world: _World, path: str) -> str:
    name = world.b.read_state().latest[path].payload
    assert name is not None
    return name


@pytest.mark.parametrize("apart", [False, True], ids=["serial", "apart"])
def test_a_flipped_or_cut_payload_is_refused(world: _World, apart: bool) -> None:
    data = random.Random(3).randbytes(SIZE)
    with _file(data) as source:
        _push(world, "big.bin", source, SIZE, apart=apart)
    name = _payload_file(world, "big.bin")
    relay = world.a.relay
    saved = relay.get_bytes(name)
    flipped = bytearray(saved)
    flipped[len(saved) // 2] ^= 1
    for altered in (bytes(flipped), saved[: len(saved) - 70000], saved[: len(saved) // 2], saved + b"more"):
        relay.put_bytes(name, altered)
        with pytest.raises(IntegrityError):
            _receive(world, "big.bin", apart=apart)
    relay.put_bytes(name, saved)
    assert _receive(world, "big.bin", apart=apart) == data


@pytest.mark.parametrize("apart", [False, True], ids=["serial", "apart"])
def test_a_payload_that_never_ends_is_stopped_and_refused(world: _World, apart: bool) -> None:
    """A relay that goes on sending after the payload's end is cut off once
    more than twice its sealed size (and a block) arrived, refused, and not
    asked again."""
    data = random.Random(4).randbytes(SIZE)
    with _file(data) as source:
        _push(world, "big.bin", source, SIZE, apart=apart)
    world.cut.endless_get = True
    with pytest.raises(IntegrityError, match="larger than a sealed"):
        _receive(world, "big.bin", apart=apart)
    assert len(world.cut.garbage) == 1  # refused at once, not retried
    assert world.cut.garbage[0] <= world.a.sealer.sealed_size(SIZE) + (2 << 20)  # type: ignore[attr-defined]
    assert _receive(world, "big.bin", apart=apart) == data  # a relay that behaves again is read as before


def test_apart_with_a_quota_the_sealed_size_is_checked_and_reserved_first(world: _World) -> None:
    """With ``disk quota``, a big file still goes up on a worker, sealed while
    sent: the pass checks the quota against its announced sealed size and
    reserves it, so that a second file that would not fit is refused before
    anything of it goes up; a small file is sealed by the pass itself."""
    repo = world.a
    sealed = repo.sealer.sealed_size(SIZE)  # type: ignore[attr-defined]
    repo.disk_quota = sealed + 1000  # room for one
    assert repo.seals_apart(SIZE) and not repo.seals_apart(SPOOL_IN_MEMORY)
    data = random.Random(9).randbytes(SIZE)
    one = LocalVersion("one.bin", SIZE, 0, None)
    state = repo.read_state()
    with _lease(repo) as lease, _file(data) as source:
        reserved = repo.reserve_stage(lease, state, one)
        assert reserved.stored == sealed and state.stored_bytes() >= sealed  # counted before it is sent
        with pytest.raises(RelayQuotaExceeded):
            repo.reserve_stage(lease, state, LocalVersion("two.bin", SIZE, 0, None))
        sent = repo.send_reserved(lease, reserved, one, source, world.a_worker)
        reserved.close()
        repo.commit_staged(lease, state, sent)
    assert world.cut.sent == [sealed]
    assert _receive(world, "one.bin", apart=True) == data


def _sealing_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "escale-seal"]


@pytest.mark.parametrize("apart", [False, True], ids=["serial", "apart"])
def test_an_upload_refused_half_way_leaves_no_thread_and_no_reservation(world: _World, apart: bool) -> None:
    """A relay that refuses a payload half-way (an error that is not
    retried): that error comes out as it is, the thread that sealed it is
    gone (before the file is closed: it was sealing ahead of the relay), the
    room reserved against ``disk quota`` is given back, nothing is
    committed; a file that fails to read half-way leaves no thread either.
    The file then goes up as usual."""
    repo = world.a
    size = 8 << 20  # more than the sealing thread queues ahead of the relay's reads
    sealed = repo.sealer.sealed_size(size)  # type: ignore[attr-defined]
    repo.disk_quota = 10 * sealed
    data = random.Random(5).randbytes(size)
    state = repo.read_state()
    stored = state.stored_bytes()
    world.cut.refuse_put = True
    local = LocalVersion("refused.bin", size, 0, None)

    def send(lease: Lease, source: BinaryIO) -> None:
        if not apart:
            repo.send_file(lease, state, local, source)
            return
        reserved = repo.reserve_stage(lease, state, local)
        try:
            repo.send_reserved(lease, reserved, local, source, world.a_worker)
        finally:
            repo.release_staged(state, reserved)  # as the pass's uploads do
            reserved.close()

    with _lease(repo) as lease, _file(data) as source:
        with pytest.raises(RelayPermissionDenied, match="refused half-way"):
            send(lease, source)
        assert not _sealing_threads()  # gone before the file is closed: it reads it no more
    assert len(world.cut.sent) == 1 and 0 < world.cut.sent[0] < sealed  # refused half-way, not retried
    assert state.stored_bytes() == stored
    with pytest.raises(OSError, match="Input/output error"):
        _push(world, "failing.bin", MovingFile(SIZE, 0, fail=True), SIZE, apart=apart)  # type: ignore[arg-type]
    assert not _sealing_threads()
    latest = world.b.read_state().latest
    assert "refused.bin" not in latest and "failing.bin" not in latest
    with _file(data) as source:
        _push(world, "refused.bin", source, size, apart=apart)
    assert _receive(world, "refused.bin", apart=apart) == data
