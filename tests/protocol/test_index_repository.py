"""The index layout's repository, driven directly on a local-folder relay.

What these prove: pages hold compressible members deflated and incompressible
ones as is; a big file streams through its own object in constant memory; a
tampered, cut or swapped page is refused; an index rolled back, or with a delta
missing, or replayed under another name, is refused and nothing is applied; a
page is reclaimed only once every receiver acknowledged every live member, with
one acknowledgement record per receiver; a read with nothing new costs two
relay requests; deltas are compacted into checkpoints.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from bench.counting import CountingRelay
from escale.errors import IntegrityError, ProtocolError, RelayNotFound
from escale.protocol.index import local_copy
from escale.protocol.index import objects as io_names
from escale.protocol.index import repository as index_repository
from escale.protocol.index.pages import open_page
from escale.protocol.index.repository import IndexRepository
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.repository import LocalVersion, RelayState, Repository
from escale.protocol.sealer import Sealer
from escale.relay.file import FileRelay

A, B, C = "a" * 32, "b" * 32, "c" * 32


class Setup:
    def __init__(self, root: str, sealer: Sealer) -> None:
        self.root = os.path.join(root, "relay")
        os.makedirs(self.root, exist_ok=True)
        self.sealer = sealer
        self.caches: dict[str, dict[str, bytes]] = {}
        self.spool = os.path.join(root, "spool")
        os.makedirs(self.spool, exist_ok=True)

    def repo(self, client: str, *, receives: bool = True, maxpagesize: int = 1 << 20,
             counts: Counter[str] | None = None) -> IndexRepository:
        relay = FileRelay(self.root) if counts is None else CountingRelay(FileRelay(self.root), counts)
        relay.open()
        repo = IndexRepository(relay, self.sealer, client_id=client, label=client[:4], receives=receives,
                               mode="shared", meta_cache=self.caches.setdefault(client, {}), spool_dir=self.spool,
                               maxpagesize=maxpagesize)
        repo.prepare()
        return repo

    def lease(self, repo: IndexRepository) -> Lease:
        return LeaseManager(repo.relay, repo.sealer, client_id=repo.client_id, label="t", timeout=600).acquire()

    def push(self, repo: IndexRepository, files: dict[str, bytes]) -> None:
        """A pass's relay phase pushing ``files``: commits, then the end of
        the lease's changes (as ``run_relay_phase`` does)."""
        state = repo.read_state()
        with self.lease(repo) as lease:
            for path, data in files.items():
                repo.commit_file(lease, state, LocalVersion(path, len(data), 0, None), io.BytesIO(data))
            repo.commit_pending(lease, state)
            repo.finish_changes(lease)

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)


@pytest.fixture
def setup(tmp_path, sealer: Sealer) -> Setup:  # type: ignore[no-untyped-def]
    return Setup(str(tmp_path), sealer)


def _fetch(repo: IndexRepository, path: str) -> bytes:
    state = repo.read_state()
    sink = io.BytesIO()
    repo.fetch(state.latest[path], sink)
    return sink.getvalue()


def test_compress_only_where_it_pays(setup: Setup) -> None:
    a, b = setup.repo(A), setup.repo(B)
    text = b"the same words again and again " * 200
    noise = random.Random(1).randbytes(5000)
    setup.push(a, {"text.txt": text, "noise.bin": noise, "empty": b""})
    state = b.read_state()
    page_name = state.latest["text.txt"].payload
    assert page_name is not None and page_name == state.latest["noise.bin"].payload  # one page
    page = open_page(b.relay.get, b.sealer, page_name, setup.spool)
    try:
        members = {m.size: m for m in page.members.values()}
        assert members[len(text)].compression == "zlib" and members[len(text)].length < len(text) // 10
        assert members[len(noise)].compression == "none" and members[len(noise)].length == len(noise)
    finally:
        page.close()
    assert _fetch(b, "text.txt") == text and _fetch(b, "noise.bin") == noise and _fetch(b, "empty") == b""


def test_a_full_page_is_committed_before_the_next_file(setup: Setup) -> None:
    a, b = setup.repo(A, maxpagesize=64 * 1024), setup.repo(B)
    files = {f"f{i:03d}": random.Random(i).randbytes(10_000) for i in range(20)}
    setup.push(a, files)
    state = b.read_state()
    pages = {ph.payload for ph in state.latest.values()}
    assert len(pages) >= 3 and all(size <= 80 * 1024 for size in state.payloads.values())
    assert all(_fetch(b, p) == d for p, d in files.items())


class _Stream(io.RawIOBase):
    """``size`` bytes of a repeating pseudo-random block, produced on demand."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = random.Random(7).randbytes(1 << 16)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left, len(self.block))
        buffer[:n] = self.block[:n]
        self.left -= n
        return n


class _Discard(io.RawIOBase):
    def __init__(self) -> None:
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        self.count += len(data)
        return len(data)


@pytest.mark.parametrize("size", [40 << 20, 120 << 20])
def test_a_big_file_streams_in_constant_memory(setup: Setup, size: int) -> None:
    a, b = setup.repo(A), setup.repo(B)
    state = a.read_state()
    tracemalloc.start()
    try:
        with setup.lease(a) as lease:
            a.commit_file(lease, state, LocalVersion("big.bin", size, 0, None),
                          io.BufferedReader(_Stream(size)))
            a.commit_pending(lease, state)
        _, peak_push = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        sink = _Discard()
        state_b = b.read_state()
        b.fetch(state_b.latest["big.bin"], sink)  # type: ignore[arg-type]
        _, peak_pull = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.count == size
    assert state_b.latest["big.bin"].payload.startswith("big/")  # type: ignore[union-attr]
    # the same bound for 40 and 120 MiB: memory does not follow the file size
    assert peak_push < 12 << 20 and peak_pull < 12 << 20


def _flip(path: str, at: int = -100) -> None:
    with open(path, "r+b") as handle:
        handle.seek(at, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(at, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 1]))


def test_a_tampered_cut_or_swapped_page_is_refused(setup: Setup) -> None:
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {"one": b"first page " * 100})
    setup.push(a, {"two": b"second page " * 100})
    state = b.read_state()
    one, two = state.latest["one"].payload, state.latest["two"].payload
    assert one and two and one != two
    saved = Path(setup.path(one)).read_bytes()
    _flip(setup.path(one))
    with pytest.raises(IntegrityError):
        b.fetch(state.latest["one"], io.BytesIO())
    b.flush_acks()  # forgets the pages opened this pass
    with open(setup.path(one), "wb") as handle:
        handle.write(saved[:-5000] if len(saved) > 5000 else saved[: len(saved) // 2])
    with pytest.raises(IntegrityError):
        b.fetch(state.latest["one"], io.BytesIO())
    b.flush_acks()
    shutil.copyfile(setup.path(two), setup.path(one))  # another page under this page's name
    with pytest.raises(IntegrityError):
        b.fetch(state.latest["one"], io.BytesIO())


def test_rollback_missing_delta_and_replay_are_refused(setup: Setup) -> None:
    a, b = setup.repo(A), setup.repo(B)
    for i in range(3):
        setup.push(a, {f"f{i}": b"x" * i})
    assert len(b.read_state().latest) == 3
    third = setup.path(io_names.delta_name(3))
    saved = Path(third).read_bytes()
    os.remove(third)  # the relay lost (or rolled back) its newest generation
    with pytest.raises(ProtocolError, match="rolled back"):
        b.read_state()
    # a fresh reader cannot fill the hole either
    os.remove(setup.path(io_names.delta_name(2)))
    with open(third, "wb") as handle:
        handle.write(saved)
    with pytest.raises(ProtocolError, match="missing"):
        setup.repo(C).read_state()
    # replay: an old delta served under the next generation's name
    with open(setup.path(io_names.delta_name(2)), "wb") as handle:
        handle.write(Path(setup.path(io_names.delta_name(1))).read_bytes())
    with pytest.raises(IntegrityError):
        setup.repo("d" * 32).read_state()


def test_a_tampered_delta_applies_nothing(setup: Setup) -> None:
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {"f": b"one"})
    assert set(b.read_state().latest) == {"f"}
    setup.push(a, {"g": b"two"})
    _flip(setup.path(io_names.delta_name(2)), -20)
    with pytest.raises(IntegrityError):
        b.read_state()
    assert b.head == 1 and set(b.entries) == {"f"}


def _records(setup: Setup) -> list[str]:
    """The acknowledgement records in ``clients/``."""
    return sorted(n for n in os.listdir(setup.path("clients")) if ".ack." in n)


def test_reclaim_waits_for_every_receiver_of_every_live_member(setup: Setup) -> None:
    a, b, c = setup.repo(A), setup.repo(B), setup.repo(C)
    for repo in (a, b, c):
        repo.read_state()  # registered: both b and c must receive
    setup.push(a, {"x": b"x" * 100, "y": b"y" * 100})
    for repo, paths in ((b, ["x", "y"]), (c, ["x"])):
        state = repo.read_state()
        for path in paths:
            repo.fetch(state.latest[path], io.BytesIO())
            repo.acknowledge(state.latest[path])
        repo.flush_acks()
    state = a.read_state()
    with setup.lease(a) as lease:
        assert a.reclaim(lease, state) == []  # c still lacks y: the page stays
    state = c.read_state()
    c.acknowledge(state.latest["y"])
    c.flush_acks()
    state = a.read_state()
    with setup.lease(a) as lease:
        assert sorted(a.reclaim(lease, state)) == ["x", "y"]
    assert os.listdir(setup.path(io_names.PAGES)) == []
    state = b.read_state()
    assert not state.has_payload(state.latest["x"])  # known, content gone
    with pytest.raises(RelayNotFound):
        b.fetch(state.latest["x"], io.BytesIO())
    # one record per receiver (each rewrite replaces the previous one)
    assert [n.partition(".")[0] for n in _records(setup)] == [B, C]


def _reclaim_due(repo: IndexRepository, state: RelayState) -> bool:
    """Whether something can be reclaimed: the index layout's answer, after
    checking it against the placeholder layout's walk over every version."""
    answer = repo.anything_reclaimable(state)
    assert answer == Repository.anything_reclaimable(repo, state)
    return answer


def test_anything_reclaimable_as_the_walk_over_every_version_says(setup: Setup) -> None:
    a, b, c = setup.repo(A), setup.repo(B), setup.repo(C)
    for repo in (a, b, c):
        repo.read_state()
    assert not _reclaim_due(a, a.read_state())  # nothing on the relay
    setup.push(a, {"x": b"x" * 100, "y": b"y" * 100})
    setup.push(a, {"z": b"z" * 100})  # a second page
    assert not _reclaim_due(a, a.read_state())
    for repo, paths in ((b, ["x", "y", "z"]), (c, ["x", "z"])):
        state = repo.read_state()
        for path in paths:
            repo.acknowledge(state.latest[path])
        repo.flush_acks()
    for repo in (a, b, c):  # the second page is done, the first waits for c's y
        assert _reclaim_due(repo, repo.read_state())
    with setup.lease(a) as lease:
        assert a.reclaim(lease, a.read_state()) == ["z"]
    assert not _reclaim_due(a, a.read_state())
    state = c.read_state()
    c.acknowledge(state.latest["y"])
    c.flush_acks()
    assert _reclaim_due(a, a.read_state())
    with setup.lease(a) as lease:
        assert sorted(a.reclaim(lease, a.read_state())) == ["x", "y"]
    for repo in (a, b, c):
        assert not _reclaim_due(repo, repo.read_state())


def test_a_record_that_would_acknowledge_nothing_is_not_written(setup: Setup) -> None:
    """A receiver that read an empty index, and a pusher that read only its
    own versions, write no acknowledgement record; a registered receiver
    without one still holds every page (absent acknowledges nothing)."""
    a, b = setup.repo(A), setup.repo(B)
    for repo in (a, b):
        repo.read_state()
        repo.flush_acks()
    assert _records(setup) == []  # both read an empty index
    setup.push(a, {"x": b"x" * 100})
    for _ in range(2):  # the pusher reads only its own version, twice (the second time without a walk)
        state = a.read_state()
        a.flush_acks()
        assert _records(setup) == []
        with setup.lease(a) as lease:
            assert a.reclaim(lease, state) == []  # b is registered: its lack of a record keeps the page
    state = b.read_state()
    b.fetch(state.latest["x"], io.BytesIO())
    b.acknowledge(state.latest["x"])
    b.flush_acks()
    assert [n.partition(".")[0] for n in _records(setup)] == [B]
    state = a.read_state()
    with setup.lease(a) as lease:
        assert a.reclaim(lease, state) == ["x"]


def test_a_receiver_behind_on_another_clients_version_writes_a_record(setup: Setup) -> None:
    """A receiver that has not yet taken another client's version still
    writes a record at once (it lists that version as missing)."""
    a, b = setup.repo(A), setup.repo(B)
    setup.push(a, {"x": b"x" * 100})
    b.read_state()
    b.flush_acks()
    (name,) = _records(setup)
    assert name.startswith(B)


def test_a_read_with_nothing_new_costs_two_requests(setup: Setup) -> None:
    a = setup.repo(A)
    setup.push(a, {f"d/f{i}": b"%d" % i for i in range(500)})
    counts: Counter[str] = Counter()
    b = setup.repo(B, counts=counts)
    for _ in range(2):  # registration and first acknowledgement record, then read once more
        b.read_state()
        b.flush_acks()
    counts.clear()
    b.read_state()
    b.flush_acks()
    assert sum(counts.values()) == 2, counts


def test_superseded_pages_go_and_checkpoints_replace_old_deltas(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_repository, "CHECKPOINT_EVERY", 4)
    a, b = setup.repo(A, receives=False), setup.repo(B)
    b.read_state()
    for i in range(10):
        setup.push(a, {"same": b"version %d" % i})
        state = a.read_state()
        with setup.lease(a) as lease:
            a.collect_garbage(lease, state)
    assert len(os.listdir(setup.path(io_names.PAGES))) == 1  # only the live version's page
    names = sorted(os.listdir(setup.path(io_names.INDEX)))
    assert any(n.endswith(".full") for n in names) and len(names) < 12
    fresh = setup.repo(C)
    assert _fetch(fresh, "same") == b"version 9"
    assert _fetch(b, "same") == b"version 9"




def test_the_local_copy_of_the_index_is_trusted_only_while_its_digest_matches(
        setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    a = setup.repo(A)
    files = {f"d/f{i}": b"%d" % i for i in range(5)}
    setup.push(a, files)
    setup.repo(B).read_state()
    cache = setup.caches[B]
    good = cache["index@materialised"]
    assert good.startswith(index_repository._PACKED_MAGIC)

    # a damaged copy is noticed and the index is read again from the relay
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0x01
    cache["index@materialised"] = bytes(damaged)
    counts: Counter[str] = Counter()
    with caplog.at_level("WARNING"):
        state = setup.repo(B, counts=counts).read_state()
    assert "the local copy of the index is unreadable" in caplog.text
    assert set(state.latest) == set(files) and counts["get"] >= 1
    assert cache["index@materialised"] == good  # written again, whole

    # a copy of the JSON form (an older escale's, or one of an index holding an entry that does not
    # pack) is read as it is, its digest checked
    loaded = setup.repo(B)
    loaded.read_state()
    bare = io_names.Checkpoint(generation=loaded.head, entries=tuple(loaded.entries.values()),
                               objects=dict(loaded.objects)).encode()
    for kept in (index_repository._sealed_copy(bare), bare):
        caplog.clear()
        cache["index@materialised"] = kept
        counts.clear()
        with caplog.at_level("WARNING"):
            state = setup.repo(B, counts=counts).read_state()
        assert "unreadable" not in caplog.text and set(state.latest) == set(files)
        # a copy kept before digests (the bare checkpoint) is checked field by field, then kept with its digest
        assert counts["get"] == 0 and cache["index@materialised"] == index_repository._sealed_copy(bare)


def test_a_push_of_many_deltas_writes_the_local_copy_once(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits the local journal cannot take leave the copy stale (the
    highest generation known still moves at each): it is written whole once,
    when the lease's changes end, not once per delta. A client stopped
    before that reads the deltas after its older copy from the relay."""
    monkeypatch.setattr(index_repository, "DELTA_ENTRIES", 10)
    monkeypatch.setattr(index_repository, "JOURNAL_MIN_ENTRIES", 1)  # no delta fits the journal
    written: list[int] = []
    for module, writer in ((io_names, "checkpoint_pieces"), (local_copy, "packed_copy_pieces")):
        pieces = getattr(module, writer)

        def counted(generation, objects, entries, pieces=pieces):  # type: ignore[no-untyped-def]
            written.append(generation)
            return pieces(generation, objects, entries)

        monkeypatch.setattr(module, writer, counted)
    a = setup.repo(A)
    files = {f"d/f{i:02d}": b"%d" % i for i in range(50)}
    state = a.read_state()
    with setup.lease(a) as lease:
        for path, data in files.items():
            a.commit_file(lease, state, LocalVersion(path, len(data), 0, None), io.BytesIO(data))
        a.commit_pending(lease, state)
        assert a.head == 5 and a.known == 5 and written == []
        # stopped here: a new process of this client reads the five deltas from the relay
        counts: Counter[str] = Counter()
        again = setup.repo(A, counts=counts)
        assert set(again.read_state().latest) == set(files)
        assert counts["get"] == 6, counts  # the five deltas and this client's registration
        assert written == [5]  # that reading wrote the copy whole (its deltas did not fit the journal)
        written.clear()
        a.finish_changes(lease)
    assert written == [5]
    counts = Counter()
    loaded = setup.repo(A, counts=counts)
    assert set(loaded.read_state().latest) == set(files) and loaded.head == 5
    assert counts["get"] == 0, counts


def test_a_client_that_caught_up_from_a_checkpoint_numbers_and_counts_from_that_index(
        setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    # the deltas before the checkpoint are gone: a new client reads the
    # checkpoint (a new materialised index); its relay state must read the
    # versions and acknowledgements from that index, not from the empty one
    # it had before, or its next commit would reuse a version number
    monkeypatch.setattr(index_repository, "CHECKPOINT_EVERY", 4)
    a = setup.repo(A)
    for i in range(10):
        setup.push(a, {"same": b"version %d" % i})
        state = a.read_state()
        with setup.lease(a) as lease:
            a.collect_garbage(lease, state)
    assert not os.path.exists(setup.path(io_names.delta_name(1)))
    c = setup.repo(C)
    state = c.read_state()
    latest = state.latest["same"]
    assert latest.version == 10
    assert state.versions == {latest.key: 10} and state.lists(latest.key, "same")
    assert state.next_version(latest.key, "same") == 11
    c.acknowledge(latest)
    c.flush_acks()
    assert C in a.read_state().acks_of(latest)
    with setup.lease(c) as lease:
        c.commit_file(lease, state, LocalVersion("same", 5, 0, None), io.BytesIO(b"mine!"))
        c.commit_pending(lease, state)
    assert a.read_state().latest["same"].version == 11
    assert _fetch(a, "same") == b"mine!"
