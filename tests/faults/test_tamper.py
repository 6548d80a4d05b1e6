"""An outsider writes to the relay: no client deletes or overwrites a local file.

The outsider has the relay's credentials but not the repository key. It plants,
replays, swaps and deletes objects through the relay's own protocol (the same
operations any FTP, WebDAV or SFTP user could make). After each forgery the
clients run passes; every local tree must be byte for byte what it was (sha256),
and the log must name the refused relay object.

Encrypted repositories: every object is authenticated and bound to its name,
so forged tombstones, forged newer placeholders with forged payloads, replayed
old placeholders (rollback), payloads swapped between two paths and forged
leases are all refused. A refused object must also never make a lease holder
remove genuine objects (a forged higher version used to make clean-up retire the
real one, see doc/testing.rst).

Plain repositories trust the relay's integrity: a placeholder forged by someone
who knows the format is indistinguishable from a real one (doc/security.rst).
What the protocol still catches there is tested: rollback, unsafe paths
(``../x``, absolute, ``.escale/…``) inside a placeholder, a payload whose size
or checksum differs from its placeholder, a placeholder whose payload name is
not its own, and a lease record with absurd numbers.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from escale.crypto import generate_key_file, plain_envelope
from escale.protocol import layout
from escale.protocol.objects import LeaseRecord, Placeholder
from escale.relay import Relay
from tests.faults.world import World, relay_names, tree, write

pytestmark = pytest.mark.timeout(180)


def _relay(world: World) -> Relay:
    relay = world.target.relay(world.folder)
    relay.open()
    return relay


def _setup(world: World, tmp_path: object, *, encrypted: bool) -> tuple[str, str]:
    if encrypted:
        key = os.path.join(str(tmp_path), "shared.key")
        generate_key_file(key)
        world.common.update({"encryption": "yes", "key": key})
    a = world.add("a", lock_timeout="3")
    b = world.add("b", lock_timeout="3")
    write(a, "keep.txt", "precious, must survive\n")
    write(a, "other.txt", "another file\n")
    world.quiesce(["a", "b"])
    return a, b


def _meta_of(world: World, before: list[str]) -> list[str]:
    return [n for n in relay_names(world, "meta") if n not in before]


def _passes(world: World, caplog: pytest.LogCaptureFixture) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            for name in ("a", "b"):
                world.sync(name)
    return caplog.text


def _latest_meta(world: World) -> dict[str, str]:
    """The highest listed placeholder name per key."""
    out: dict[str, str] = {}
    for name in relay_names(world, "meta"):
        ref = layout.parse_meta(name)
        if ref is not None and (ref.key not in out or out[ref.key] < name):
            out[ref.key] = name
    return out


# --------------------------------------------------------------------------- encrypted


def test_encrypted_forgeries_change_nothing(world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _setup(world, tmp_path, encrypted=True)
    trees = (tree(a), tree(b))
    genuine = relay_names(world, "meta")
    assert len(genuine) == 2
    relay = _relay(world)
    try:
        forged = []
        for name in genuine:  # a forged tombstone, and a newer version with a forged payload
            ref = layout.parse_meta(name)
            assert ref is not None
            meta = layout.meta_name(ref.key, ref.version + 1)
            payload = layout.data_name(ref.key, ref.version + 1)
            doc = {"format": 1, "type": "placeholder", "kind": "tombstone", "key": ref.key,
                   "version": ref.version + 1, "payload": None}
            relay.put_bytes(meta, json.dumps(doc).encode())
            relay.put_bytes(payload, os.urandom(500))
            forged.append(meta)
    finally:
        relay.close()
    log = _passes(world, caplog)
    assert (tree(a), tree(b)) == trees
    for name in forged:
        assert name in log, f"the refusal of {name} is not logged"
    assert all(n in relay_names(world, "meta") for n in genuine), "a forged version made clean-up retire a real one"

    # the clients still work: a real edit goes through, above the forged numbers
    write(a, "keep.txt", "edited after the forgery\n")
    world.quiesce(["a", "b"])
    assert tree(a) == tree(b) and tree(b)["keep.txt"] != trees[1]["keep.txt"]


def test_encrypted_rollback_and_swap_refused(world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _setup(world, tmp_path, encrypted=True)
    relay = _relay(world)
    try:
        old = {n: relay.get_bytes(n) for n in relay_names(world, "meta")}
    finally:
        relay.close()
    # new versions of both files; b has not received them yet
    write(a, "keep.txt", "version two of keep\n")
    write(a, "other.txt", "version two of other\n")
    world.sync("a")
    trees = (tree(a), tree(b))
    payloads = relay_names(world, "data")
    assert len(payloads) == 2
    relay = _relay(world)
    try:
        x, y = (relay.get_bytes(p) for p in payloads)  # swap the two payloads' contents
        relay.put_bytes(payloads[0], y)
        relay.put_bytes(payloads[1], x)
    finally:
        relay.close()
    log = _passes(world, caplog)
    assert (tree(a), tree(b)) == trees, "a swapped payload reached a local file"
    assert any(p in log for p in payloads), log[-2000:]

    # rollback: the outsider replaces the new placeholders by the old ones it kept
    world.sync("a")
    relay = _relay(world)
    try:
        for name in relay_names(world, "meta"):
            relay.delete(name)
        for name, data in old.items():
            relay.put_bytes(name, data)
    finally:
        relay.close()
    log = _passes(world, caplog)
    assert (tree(a), tree(b)) == trees, "a replayed old version reached a local file"
    assert "rolled back" in log


def test_encrypted_forged_lease_only_delays(world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _setup(world, tmp_path, encrypted=True)
    relay = _relay(world)
    try:
        forged = layout.lease_name(999_999_999_999)  # the highest number a lease name holds
        record = LeaseRecord(999_999_999_999, "f" * 32, "outsider", "nowhere", 1, "sync", "0" * 32, 10**30)
        relay.put_bytes(forged, record.encode())
    finally:
        relay.close()
    write(a, "new.txt", "waits for the forged lease to go stale\n")
    trees = tree(b)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        first = world.sync("a")
    assert first.busy and forged in caplog.text
    assert tree(b) == trees
    _push_through(world, "a")
    world.quiesce(["a", "b"])
    assert "new.txt" in tree(b)


def _push_through(world: World, name: str) -> None:
    """Passes of ``name`` until one is not refused by a busy lease (a forged
    lease goes stale after the lock timeout, 3 s, on the client's own clock)."""
    for _ in range(60):
        if not world.sync(name).busy:
            return
        time.sleep(0.5)
    raise AssertionError(f"{name} never got past the forged lease")


# --------------------------------------------------------------------------- plain


def _plant_placeholder(world: World, path: str, data: bytes, *, payload: str | None = None,
                       checksum: str | None = None, version: int = 1) -> str:
    sealer = plain_envelope()
    key = sealer.object_key(path)
    payload = payload or layout.data_name(key, version)
    import hashlib

    ph = Placeholder(path=path, key=key, version=version, generation=1, kind="file", pusher="e" * 32,
                     pusher_label="outsider", size=len(data), mtime_ns=1_700_000_000_000_000_000,
                     checksum=checksum or f"sha256:{hashlib.sha256(data).hexdigest()}", payload=payload,
                     receivers=())
    relay = _relay(world)
    try:
        relay.put_bytes(layout.meta_name(key, version), ph.encode())
        if payload.startswith("data/"):
            relay.put_bytes(payload, data)
    finally:
        relay.close()
    return layout.meta_name(key, version)


def test_plain_unsafe_paths_refused(world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _setup(world, tmp_path, encrypted=False)
    trees = (tree(a), tree(b))
    outside = os.path.join(os.path.dirname(a), "escaped.txt")
    planted = [_plant_placeholder(world, p, b"evil\n")
               for p in ("../escaped.txt", "/tmp/escale-absolute-escape.txt", ".escale/a/state.db",
                         "dir/../../escaped.txt")]
    log = _passes(world, caplog)
    assert (tree(a), tree(b)) == trees
    assert not os.path.exists(outside) and not os.path.exists("/tmp/escale-absolute-escape.txt")
    assert "unsafe path" in log
    assert all(name in relay_names(world, "meta") for name in planted)


def test_plain_payload_mismatch_and_foreign_payload_refused(world: World, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    a, b = _setup(world, tmp_path, encrypted=False)
    write(a, "keep.txt", "version two\n")
    world.sync("a")
    trees = (tree(a), tree(b))
    [payload] = relay_names(world, "data")
    relay = _relay(world)
    try:
        relay.put_bytes(payload, b"version tw0\n")  # same size, other bytes
    finally:
        relay.close()
    # a placeholder whose payload is another object of the repository
    foreign = _plant_placeholder(world, "header-copy.txt", b"", payload=layout.HEADER)
    log = _passes(world, caplog)
    assert (tree(a), tree(b)) == trees
    assert payload in log and "checksum" in log
    assert foreign in log
    assert layout.HEADER in [e.name for e in _list_root(world)], "a forged payload name made a client delete it"


def _list_root(world: World) -> list:  # type: ignore[type-arg]
    relay = _relay(world)
    try:
        return relay.list()
    finally:
        relay.close()


def test_plain_rollback_and_absurd_lease(world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = _setup(world, tmp_path, encrypted=False)
    relay = _relay(world)
    try:
        old = {n: relay.get_bytes(n) for n in relay_names(world, "meta")}
    finally:
        relay.close()
    write(a, "keep.txt", "version two\n")
    world.quiesce(["a", "b"])
    trees = (tree(a), tree(b))
    relay = _relay(world)
    try:
        for name in relay_names(world, "meta"):
            relay.delete(name)
        for name, data in old.items():
            relay.put_bytes(name, data)
        gen = max(layout.parse_lease(n) or 0 for n in relay_names(world, "lease")) + 1
        relay.put_bytes(layout.lease_name(gen), LeaseRecord(
            gen, "f" * 32, "outsider", "nowhere", 1, "sync", "0" * 32, 10**30).encode())
    finally:
        relay.close()
    log = _passes(world, caplog)
    assert (tree(a), tree(b)) == trees
    assert "rolled back" in log
    # the forged lease (absurd beat) only delays a writer; it never crashes a pass
    write(a, "later.txt", "pushed once the forged lease is stale\n")
    _push_through(world, "a")
    world.quiesce(["a", "b"])
    assert "later.txt" in tree(b)


def test_encrypted_oversized_payload_of_a_small_file_refused(world: World, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A small file's payload is read into memory whole: a payload replaced
    on the relay by one far larger than any sealed form of that file is
    refused as tampered (the receiver reports it, writes nothing, keeps no
    partial file), and the genuine version goes through once it is back."""
    key = os.path.join(str(tmp_path), "shared.key")
    generate_key_file(key)
    world.common.update({"encryption": "yes", "key": key})
    a = world.add("a")
    b = world.add("b")
    write(a, "small.txt", "a small file\n")
    world.sync("a")
    [payload] = relay_names(world, "data")
    relay = _relay(world)
    try:
        genuine = relay.get_bytes(payload)
        relay.put_bytes(payload, os.urandom(5 << 20))
    finally:
        relay.close()
    with caplog.at_level(logging.WARNING):
        report = world.sync("b")
    assert len(report.errors) == 1 and "small.txt" in report.errors[0], report.errors
    assert payload in report.errors[0]
    assert tree(b) == {}  # nothing written, not even a partial file

    relay = _relay(world)
    try:
        relay.put_bytes(payload, genuine)
    finally:
        relay.close()
    world.quiesce(["a", "b"])
    assert tree(b) == tree(a)
