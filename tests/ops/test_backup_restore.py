"""Backup and restore on real relays with real sync passes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escale.config.settings import ClientSettings
from escale.errors import (
    KeyFileError,
    LeaseBusy,
    OperationError,
    RelayConnectionError,
    TargetNotEmpty,
    UsageError,
    WrongKeyError,
)
from escale.ops.archive import verify_archive
from escale.ops.backup import backup
from escale.ops.fix import fix_client
from escale.ops.restore import restore
from escale.relay import RelaySpec
from escale.sync.client import SyncClient
from tests.ops.helpers import key_file, make_settings, relay_objects, sync, tree, wipe, write

Pair = tuple[str, RelaySpec, ClientSettings, ClientSettings]


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    """Two encrypted clients of one file relay, in sync on three files (one still
    waiting on the relay for a third client that registered but never ran)."""
    base = str(tmp_path)
    spec = RelaySpec(protocol="file", directory=os.path.join(base, "relay"))
    key = key_file(base)
    alice = make_settings(base, "alice", spec, key_file=key)
    bob = make_settings(base, "bob", spec, key_file=key)
    write(alice.local_path, {"a.txt": b"alpha", "docs/b.bin": os.urandom(70_000)})
    write(bob.local_path, {"c.txt": b"from bob"})
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)
    return base, spec, alice, bob


def _without_leases(objects: dict[str, str]) -> dict[str, str]:
    return {n: h for n, h in objects.items() if not n.startswith("lease/")}


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".tar.bz2"])
def test_backup_wipe_restore_and_clients_converge(pair: Pair, suffix: str) -> None:
    base, spec, alice, bob = pair
    archive = os.path.join(base, "backup" + suffix)
    before = relay_objects(spec)
    report = backup(alice, archive)
    assert report.consistent and report.objects == len(_without_leases(before))
    manifest = verify_archive(archive)
    assert {o.name for o in manifest.objects} == set(_without_leases(before))

    wipe(spec)
    assert relay_objects(spec) == {}
    restored = restore(bob, archive)
    assert restored.objects == report.objects
    assert _without_leases(relay_objects(spec)) == _without_leases(before)  # names and sealed bytes

    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)
    write(bob.local_path, {"after.txt": b"written after the restore"})
    sync(bob, alice)
    assert tree(alice.local_path)["after.txt"] == b"written after the restore"
    assert tree(alice.local_path) == tree(bob.local_path)


def test_restore_continues_lease_generations(pair: Pair) -> None:
    base, spec, alice, bob = pair
    archive = os.path.join(base, "b.tar")
    backup(alice, archive)
    generation = verify_archive(archive).lease_generation
    wipe(spec)
    restore(bob, archive)
    leases = sorted(n for n in relay_objects(spec) if n.startswith("lease/"))
    assert int(leases[-1].rpartition("/")[2]) > generation


def test_a_new_client_receives_pending_files_after_restore(pair: Pair) -> None:
    base, spec, alice, _bob = pair
    # carol registers (so payloads are kept for her) but receives nothing yet
    carol = make_settings(base, "carol", spec, key_file=alice.key_file)
    os.makedirs(carol.local_path)
    write(alice.local_path, {"late.txt": b"carol needs this"})
    sync(alice, rounds=1)
    archive = os.path.join(base, "pending.tar.gz")
    backup(alice, archive)
    wipe(spec)
    restore(alice, archive)
    sync(carol, rounds=1)
    assert tree(carol.local_path)["late.txt"] == b"carol needs this"


def test_backup_holds_the_lease_and_fast_does_not(pair: Pair) -> None:
    base, _spec, alice, bob = pair
    busy: list[bool] = []

    def push_meanwhile(done: int, total: int) -> None:
        if done == 1:
            write(bob.local_path, {f"meanwhile{len(busy)}.txt": b"x"})
            busy.append(SyncClient(bob).run_pass().busy)

    backup(alice, os.path.join(base, "held.tar"), on_progress=push_meanwhile)
    assert busy == [True]  # bob could not commit while the backup ran
    backup(alice, os.path.join(base, "fast.tar"), fast=True, on_progress=push_meanwhile)
    assert busy == [True, False]


def test_fast_backup_and_restore_need_no_key(pair: Pair) -> None:
    base, spec, alice, bob = pair
    from dataclasses import replace

    keyless = replace(alice, key_file=os.path.join(base, "no-such-key"))
    archive = os.path.join(base, "fast.tar.bz2")
    report = backup(keyless, archive, fast=True)
    assert not report.consistent and not verify_archive(archive).consistent
    with pytest.raises(KeyFileError, match="no-such-key"):  # the lease needs the key
        backup(keyless, os.path.join(base, "held.tar"))
    wipe(spec)
    restore(keyless, archive, fast=True)
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path)


def test_restore_refuses_a_relay_that_holds_a_repository(pair: Pair) -> None:
    base, spec, alice, _ = pair
    archive = os.path.join(base, "b.tar")
    backup(alice, archive)
    before = relay_objects(spec)
    with pytest.raises(TargetNotEmpty, match=r"already holds an escale repository.*--force") as caught:
        restore(alice, archive)
    assert caught.value.exit_code == 73
    assert relay_objects(spec) == before


def test_restore_refuses_a_partial_repository_too(pair: Pair) -> None:
    base, spec, alice, _ = pair
    archive = os.path.join(base, "b.tar")
    backup(alice, archive)
    wipe(spec, "meta")
    wipe(spec, "lease")
    os.remove(os.path.join(spec.directory, "escale.repo"))
    before = relay_objects(spec)
    assert before  # payloads, acks, registrations remain
    with pytest.raises(TargetNotEmpty):
        restore(alice, archive)
    assert relay_objects(spec) == before
    restore(alice, archive, force=True)
    sync(alice, rounds=1)


def test_restore_with_the_wrong_key_writes_nothing(pair: Pair, tmp_path: Path) -> None:
    base, _spec, alice, _ = pair
    archive = os.path.join(base, "b.tgz")
    backup(alice, archive)
    other = RelaySpec(protocol="file", directory=str(tmp_path / "other"))
    os.makedirs(tmp_path / "s")
    stranger = make_settings(str(tmp_path / "s"), "stranger", other, key_file=key_file(str(tmp_path / "s")))
    with pytest.raises(WrongKeyError):
        restore(stranger, archive)
    assert relay_objects(other) == {}


def test_backup_refuses_existing_archive_and_writes_atomically(pair: Pair) -> None:
    base, _spec, alice, _ = pair
    archive = os.path.join(base, "keep.tar.gz")
    with open(archive, "wb") as handle:
        handle.write(b"precious")
    with pytest.raises(UsageError, match="exists; use --force"):
        backup(alice, archive)
    with open(archive, "rb") as handle:
        assert handle.read() == b"precious"
    backup(alice, archive, force=True)
    verify_archive(archive)
    assert [n for n in os.listdir(base) if n.startswith(".escale-part-")] == []


def test_failed_backup_leaves_no_archive(pair: Pair, tmp_path: Path) -> None:
    base, _spec, alice, _ = pair
    empty = RelaySpec(protocol="file", directory=str(tmp_path / "nothing-here"))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OperationError, match="holds no escale repository"):
        backup(make_settings(base, "x", empty), str(out / "b.tar"))
    from dataclasses import replace

    unreachable = replace(alice, relay=RelaySpec(protocol="ftp", host="127.0.0.1", port=1, directory="r",
                                                 timeout=2.0))
    with pytest.raises(RelayConnectionError):
        backup(unreachable, str(out / "b.tar"))
    assert os.listdir(out) == []


def test_backup_waits_then_gives_up_on_a_busy_lease(pair: Pair) -> None:
    base, spec, alice, bob = pair
    from escale.ops.common import existing_sealer, held_lease, open_relay
    from escale.protocol.layout import new_client_id

    relay = open_relay(spec)
    try:
        sealer = existing_sealer(relay, alice)
        with held_lease(relay, spec, sealer, operation="test", client_id=new_client_id(), label="other",
                        timeout=60, wait=0):
            with pytest.raises(LeaseBusy) as caught:
                backup(bob, os.path.join(base, "busy.tar"), lease_wait=0.5)
            assert caught.value.exit_code == 75
    finally:
        relay.close()
    assert not os.path.exists(os.path.join(base, "busy.tar"))


def test_restoring_an_older_backup_then_fix_keeps_newer_files(pair: Pair) -> None:
    """After an old backup is restored the relay serves older versions than the
    clients saw; they refuse them as a rollback. fix commits above what they saw."""
    base, spec, alice, bob = pair
    archive = os.path.join(base, "old.tar.bz2")
    backup(alice, archive)
    write(alice.local_path, {"a.txt": b"alpha, second version", "new.txt": b"born after the backup"})
    sync(alice, bob)
    expected = tree(alice.local_path)
    assert tree(bob.local_path) == expected

    wipe(spec)
    restore(alice, archive)
    sync(alice, bob)  # rolled-back paths are frozen: nothing is lost, nothing changes
    assert tree(alice.local_path) == tree(bob.local_path) == expected

    report = fix_client(alice)
    # a.txt shows an older version than seen; new.txt (born after the backup)
    # is missing although both clients synced it: neither is re-sent by a
    # normal pass (another client may hold newer), fix commits both above
    assert [(i.path, i.reason, i.version) for i in report.recreated] == [
        ("a.txt", "rolled back on the relay", 3), ("new.txt", "missing on the relay", 2)]
    sync(alice, bob)
    assert tree(alice.local_path) == tree(bob.local_path) == expected
    write(bob.local_path, {"a.txt": b"alpha, third version from bob"})
    sync(bob, alice)
    assert tree(alice.local_path)["a.txt"] == b"alpha, third version from bob"
