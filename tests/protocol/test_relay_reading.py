"""Reading the relay in the placeholder layout: the snapshot of a full read,
and the clean-up under the lease.

What these prove: a second full read under the same clean change marker (the
relay phase's, under the lease) leaves the snapshot of the first as it was,
and a later reader still skips ``meta/`` and ``data/`` with it; a full read
under a new marker writes a new snapshot; a snapshot stored in the state
database (written there in pieces) holds what one kept in a plain mapping
holds. Under the lease, an unreferenced payload and the acknowledgements of a
superseded version are removed, and the latest version's payload and
acknowledgements are kept.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Generator, Iterator, MutableMapping, Sequence
from pathlib import Path

import pytest

from escale.errors import EscaleError
from escale.protocol import layout
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.objects import Placeholder
from escale.protocol.repository import READER_MIN, LocalVersion, Repository
from escale.protocol.sealer import Sealer
from escale.relay.file import FileRelay
from escale.sync.state import StateDB

A, B = "a" * 32, "b" * 32
_SNAPSHOT = "marker@snapshot"


@pytest.fixture
def relay_root(tmp_path: Path) -> str:
    root = str(tmp_path / "relay")
    os.makedirs(root)
    return root


@pytest.fixture
def database(tmp_path: Path) -> Iterator[StateDB]:
    db = StateDB(str(tmp_path / "state.db"))
    yield db
    db.close()


def _repo(root: str, sealer: Sealer, client: str, cache: MutableMapping[str, bytes]) -> Repository:
    relay = FileRelay(root)
    relay.open()
    repo = Repository(relay, sealer, client_id=client, label=client[:4], receives=True, mode="shared",
                      meta_cache=cache)
    repo.prepare()
    return repo


def _lease(repo: Repository) -> Lease:
    return LeaseManager(repo.relay, repo.sealer, client_id=repo.client_id, label="t", timeout=600).acquire()


def _push(repo: Repository, files: dict[str, bytes]) -> None:
    """Commit ``files`` under a lease, as a pass's relay phase does (the
    marker is clean again at the end)."""
    lease = _lease(repo)
    try:
        state = repo.read_state()
        for path, data in files.items():
            repo.commit_file(lease, state, LocalVersion(path, len(data), 1_000_000_000, None), io.BytesIO(data))
        repo.finish_changes(lease)
    finally:
        lease.release(None)


def _snapshot(cache: MutableMapping[str, bytes]) -> dict[str, object]:
    doc = json.loads(cache[_SNAPSHOT])
    assert isinstance(doc, dict)
    return doc


def test_a_second_full_read_under_one_marker_keeps_the_snapshot(
        relay_root: str, sealer: Sealer, database: StateDB) -> None:
    pusher = _repo(relay_root, sealer, A, {})
    _push(pusher, {f"f{i}.txt": b"x" * i for i in range(5)})
    cache = database.meta_cache()
    reader = _repo(relay_root, sealer, B, cache)
    first = reader.read_state()
    taken = cache[_SNAPSHOT]
    again = reader.read_state_again(first)
    assert again is first and sorted(again.latest) == [f"f{i}.txt" for i in range(5)]
    assert cache[_SNAPSHOT] == taken  # not written again
    # a later reader of the same marker skips meta/ and data/ with it
    later = _repo(relay_root, sealer, B, cache).read_state(use_marker=True)
    assert later.from_snapshot
    assert {p: ph.version for p, ph in later.latest.items()} == {p: ph.version for p, ph in again.latest.items()}
    assert later.payloads == again.payloads
    # a new marker: the same reader's next full read writes a new snapshot
    _push(pusher, {"f0.txt": b"changed"})
    reader.prepare()
    newer = reader.read_state()
    assert newer.latest["f0.txt"].version == 2
    assert _snapshot(cache)["counter"] != json.loads(taken)["counter"]
    fresh = _repo(relay_root, sealer, B, cache).read_state(use_marker=True)
    assert fresh.from_snapshot and fresh.latest["f0.txt"].version == 2


class _Asked(dict[str, bytes]):
    """A placeholder cache that records the names it was asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[str] = []

    def get(self, key: str, default: bytes | None = None) -> bytes | None:  # type: ignore[override]
        self.asked.append(key)
        return super().get(key, default)


def test_placeholders_read_on_other_connections_are_not_looked_up_in_the_cache(
        relay_root: str, sealer: Sealer) -> None:
    # the reader is given the names the cache does not hold: each is opened
    # from what was read and cached, without a lookup of its own
    pusher = _repo(relay_root, sealer, A, {})
    _push(pusher, {f"f{i}.txt": b"x" * i for i in range(2 * READER_MIN)})
    cache = _Asked()
    reader = _repo(relay_root, sealer, B, cache)
    read: list[str] = []

    def object_reader(names: Sequence[str], limit: int) -> Generator[tuple[str, bytes | EscaleError], None, None]:
        for name in names:
            read.append(name)
            yield name, reader.relay.get_bytes(name, limit=limit)

    reader.object_reader = object_reader
    state = reader.read_state()
    assert sorted(state.latest) == sorted(f"f{i}.txt" for i in range(2 * READER_MIN))
    assert len(read) == 2 * READER_MIN and set(read) <= set(cache)
    assert not set(cache.asked) & set(read)
    # the next read finds them all in the cache
    cache.asked.clear()
    read.clear()
    reader.prepare()
    again = reader.read_state()
    assert read == [] and sorted(again.latest) == sorted(state.latest)
    assert set(cache.asked) >= {n for n in cache if n.startswith(layout.META + "/")}


def test_a_first_read_asks_the_cache_once_per_placeholder(relay_root: str, sealer: Sealer) -> None:
    # read on this connection (no object reader): the chunk's look-up already
    # said which placeholders the cache does not hold; opening them asks
    # again only for a version below a refused one
    pusher = _repo(relay_root, sealer, A, {})
    _push(pusher, {f"f{i}.txt": b"x" * i for i in range(5)})
    newest = layout.meta_name(sealer.object_key("f0.txt"), 2)
    with open(os.path.join(relay_root, newest), "wb") as forged:
        forged.write(b"not a placeholder")
    cache = _Asked()
    reader = _repo(relay_root, sealer, B, cache)
    state = reader.read_state()
    assert {path: p.version for path, p in state.latest.items()} == {f"f{i}.txt": 1 for i in range(5)}
    assert newest in state.rejected
    asked = [name for name in cache.asked if name.startswith(layout.META + "/")]
    assert len(asked) == 6 and sorted(asked) == sorted({*asked})  # once each
    assert layout.meta_name(sealer.object_key("f0.txt"), 1) in asked  # the fallback, asked when it came


def test_a_snapshot_in_the_state_database_holds_what_a_mapping_holds(
        relay_root: str, sealer: Sealer, database: StateDB) -> None:
    pusher = _repo(relay_root, sealer, A, {})
    _push(pusher, {f"d{i // 10}/f{i}.txt": bytes([i]) * (i + 1) for i in range(40)})
    stored = database.meta_cache()
    kept: dict[str, bytes] = {}
    _repo(relay_root, sealer, B, stored).read_state()
    _repo(relay_root, sealer, B, kept).read_state()
    from_db, from_dict = _snapshot(stored), _snapshot(kept)
    del from_db["time"], from_dict["time"]
    assert from_db == from_dict
    assert len(from_db["meta"]) == 40 and len(from_db["payloads"]) == 40  # type: ignore[arg-type]


def test_clean_up_removes_orphans_and_old_acknowledgements_only(relay_root: str, sealer: Sealer) -> None:
    pusher = _repo(relay_root, sealer, A, {})
    receiver = _repo(relay_root, sealer, B, {})
    _push(pusher, {"f.txt": b"one", "g.txt": b"two"})
    state = receiver.read_state()
    first = state.latest["f.txt"]
    receiver.acknowledge(first)
    receiver.acknowledge(state.latest["g.txt"])
    receiver.flush_acks()
    old_ack = layout.ack_name(first.key, first.version, B)
    kept_ack = layout.ack_name(state.latest["g.txt"].key, state.latest["g.txt"].version, B)
    planted_ack = pusher.relay.get_bytes(old_ack)
    _push(pusher, {"f.txt": b"one, again"})  # retires version 1 of f.txt, its acknowledgement too
    assert old_ack not in [e.name for e in pusher.relay.list(layout.ACKS)]
    # leftovers of an interrupted operation: the old version's acknowledgement and an orphan payload
    pusher.relay.put_bytes(old_ack, planted_ack)
    orphan = layout.data_name("c" * 32, 1)
    pusher.relay.put_bytes(orphan, b"orphan")
    lease = _lease(pusher)
    try:
        state = pusher.read_state()
        latest_payloads = {ph.payload for ph in state.latest.values()}
        removed = pusher.collect_garbage(lease, state)
        pusher.finish_changes(lease)
    finally:
        lease.release(None)
    assert removed == 2
    acks = [e.name for e in pusher.relay.list(layout.ACKS)]
    assert old_ack not in acks and kept_ack in acks
    payloads = {e.name for e in pusher.relay.list(layout.DATA)}
    assert orphan not in payloads and payloads == latest_payloads
    assert set(state.payloads) == latest_payloads


def test_a_full_read_takes_cached_placeholders_from_their_json_and_still_checks_their_names(
        relay_root: str, sealer: Sealer, monkeypatch: pytest.MonkeyPatch) -> None:
    pusher = _repo(relay_root, sealer, A, {})
    _push(pusher, {f"f{i}.txt": b"x" * (i + 1) for i in range(3)})
    cache: dict[str, bytes] = {}
    reader = _repo(relay_root, sealer, B, cache)
    first = reader.read_state()
    names = {ph.path: layout.meta_name(ph.key, ph.version) for ph in first.latest.values()}
    assert set(names.values()) <= set(cache)
    decoded: list[str] = []
    strict = Placeholder.decode

    def counted(data: bytes, name: str = "?") -> Placeholder:
        decoded.append(name)
        return strict(data, name)

    monkeypatch.setattr(Placeholder, "decode", staticmethod(counted))
    reader.prepare()
    again = reader.read_state()  # a full read (no use of the snapshot): every placeholder cached
    assert decoded == [] and not again.rejected
    assert {p: (ph.version, ph.checksum) for p, ph in again.latest.items()} == {
        p: (ph.version, ph.checksum) for p, ph in first.latest.items()}
    # a cached copy that names another placeholder (a damaged state database) is refused
    cache[names["f0.txt"]] = cache[names["f1.txt"]]
    reader.prepare()
    damaged = reader.read_state()
    assert names["f0.txt"] in damaged.rejected and "f0.txt" not in damaged.latest
    # one that no longer reads as JSON is opened whole, and refused when it does not open
    cache[names["f2.txt"]] = b"not a placeholder"
    reader.prepare()
    broken = reader.read_state()
    assert names["f2.txt"] in broken.rejected and decoded == [names["f2.txt"]]
