"""Regression tests of issue 9, items 6, 7, 8 (names) and 17 (relay temporaries),
through real passes on a local-folder relay.

Encryption is off, so that forged placeholders open (with encryption on, a
forgery does not even authenticate): what is left to refuse them is the
validation of every object when it is read. Each forged object must be refused
alone, with a log line naming it, while every other file keeps syncing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import resource
import sys
import time

import pytest

from escale.crypto import plain_envelope
from escale.protocol import layout
from escale.protocol.objects import MAX_OBJECT_BYTES, Placeholder
from escale.relay.base import TEMP_PREFIX
from tests.faults.world import World, relay_names, sha, tree, write

pytestmark = pytest.mark.timeout(300)

OUTSIDER = "e" * 32
GIB = 1024**3


def _root(world: World) -> str:
    directory = world.target.spec_for(world.folder).directory
    assert directory is not None
    return directory


def _setup(world: World) -> tuple[str, str]:
    a = world.add("a", lock_timeout="3")
    b = world.add("b", lock_timeout="3")
    write(a, "keep.txt", "precious\n")
    world.quiesce(["a", "b"])
    return a, b


def _forge(world: World, path: str, *, checksum: str | None = None, data: bytes = b"evil\n") -> str:
    """Plant a plain placeholder (and its payload) for ``path``; return its name."""
    key = plain_envelope().object_key(path)
    payload = layout.data_name(key, 1)
    placeholder = Placeholder(
        path=path, key=key, version=1, generation=1, kind="file", pusher=OUTSIDER, pusher_label="outsider",
        size=len(data), mtime_ns=1_700_000_000_000_000_000,
        checksum=checksum or f"sha256:{hashlib.sha256(data).hexdigest()}", payload=payload, receivers=())
    name = layout.meta_name(key, 1)
    assert world.target.plant is not None
    world.target.plant(world.folder, name, placeholder.encode())
    world.target.plant(world.folder, payload, data)
    return name


def _passes(world: World, caplog: pytest.LogCaptureFixture, rounds: int = 2) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(rounds):
            for name in ("a", "b"):
                world.sync(name)
    return caplog.text


def test_forged_placeholders_refused_one_by_one(file_world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Item 6: each used to crash every pass of the receiver (ValueError,
    TypeError, OSError, RecursionError)."""
    world = file_world
    a, b = _setup(world)
    forged = {
        "bad algorithm": _forge(world, "x/nosuchalgo.txt", checksum="nosuchalgo:" + "0" * 64),
        "variable digest": _forge(world, "x/shake.txt", checksum="shake_128:" + "0" * 64),
        "long name": _forge(world, "x/" + "n" * 256),
        "deep": _forge(world, "d/" * 2000 + "f"),
    }
    write(a, "after.txt", "sent after the forgeries\n")
    log = _passes(world, caplog)
    assert tree(b) == tree(a) == {"keep.txt": sha(b"precious\n"), "after.txt": sha(b"sent after the forgeries\n")}
    for why, name in forged.items():
        assert f"ignoring relay object {name}" in log, why
    assert "checksum algorithm 'nosuchalgo'" in log and "'shake_128'" in log
    assert "longer than 255 bytes" in log and "deeper than 256" in log
    assert "Traceback" not in log


def test_path_impossible_here_skipped(file_world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A path within the protocol's bounds that this machine cannot create
    (longer than PATH_MAX once under the local folder) fails that path alone."""
    world = file_world
    a, b = _setup(world)
    long_path = "/".join(["p" * 250] * 16)  # 4015 bytes: valid, too long below any local folder
    _forge(world, long_path)
    write(a, "after.txt", "still synced\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        world.sync("a")
        world.sync("b")
    assert tree(b)["after.txt"] == sha(b"still synced\n")
    assert "Traceback" not in caplog.text


def _sparse(world: World, name: str, size: int = GIB) -> None:
    path = os.path.join(_root(world), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)


def test_oversized_metadata_refused_unread(file_world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Item 7: a planted sparse 1 GiB placeholder, registration and
    acknowledgement are refused from their size, and a real pass stays small."""
    world = file_world
    a, b = _setup(world)
    key = plain_envelope().object_key("keep.txt")
    planted = [layout.meta_name("f" * 32, 3), layout.client_name("f" * 32), layout.ack_name(key, 1, "f" * 32)]
    for name in planted:
        _sparse(world, name)
    write(a, "after.txt", "sent after\n")
    log = _passes(world, caplog, rounds=1)
    assert tree(b)["after.txt"] == sha(b"sent after\n")
    for name in planted[:2]:
        assert f"{name}: {GIB} bytes where at most {MAX_OBJECT_BYTES}" in log
    # a real process: its peak memory stays far below the object's size
    write(a, "later.txt", "later\n")
    world.run("a")
    world.run("b")
    assert tree(b)["later.txt"] == sha(b"later\n")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    assert peak < 400 * 1024 * 1024, peak


def test_hostile_names_and_folders_ignored(file_world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Item 8 (names): a name with a newline in any folder used to make every
    pass exit 76; a folder named like a placeholder is not an object."""
    world = file_world
    a, b = _setup(world)
    assert world.target.plant is not None
    for folder in ("", "meta", "data", "acks", "clients", "lease"):
        world.target.plant(world.folder, f"{folder}/evil\nname" if folder else "evil\nname", b"x")
    os.makedirs(os.path.join(_root(world), layout.meta_name("f" * 32, 1)))
    write(a, "after.txt", "synced despite the names\n")
    log = _passes(world, caplog)
    assert tree(b)["after.txt"] == sha(b"synced despite the names\n")
    assert "ignoring an unsafe name listed in folder 'meta': 'evil\\nname'" in log
    world.run("a")  # a real process exits 0
    world.run("b")


def test_planted_ten_digit_version_is_passed(file_world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Item 8/2: a junk meta/<key>.9999999999 makes the next commit
    10000000000, which is listed and parsed: the receiver gets it."""
    world = file_world
    a, b = _setup(world)
    key = plain_envelope().object_key("keep.txt")
    assert world.target.plant is not None
    world.target.plant(world.folder, layout.meta_name(key, 9_999_999_999), b"junk")
    write(a, "keep.txt", "version two\n")
    _passes(world, caplog)
    assert tree(b)["keep.txt"] == sha(b"version two\n")
    assert layout.meta_name(key, 10_000_000_000) in relay_names(world, "meta")


def test_stale_temporaries_removed_and_counted(file_world: World) -> None:
    """Item 17 (relay): a temporary left by a killed upload counts in the
    quota and is removed by the next lease holder once stale; a fresh one stays."""
    world = file_world
    a, _ = _setup(world)
    assert world.target.plant is not None
    stale, fresh = f"data/{TEMP_PREFIX}0123456789abcdef", f"data/{TEMP_PREFIX}fedcba9876543210"
    world.target.plant(world.folder, stale, b"s" * 5000)
    world.target.plant(world.folder, fresh, b"f" * 300)
    day_ago = time.time() - 86400
    os.utime(os.path.join(_root(world), stale), (day_ago, day_ago))
    before = world.sync("b")
    assert before.relay_bytes >= 5300
    write(a, "push.txt", "takes the lease\n")
    world.sync("a")
    left = sorted(os.listdir(os.path.join(_root(world), "data")))
    assert os.path.basename(stale) not in left and os.path.basename(fresh) in left


def test_fix_removes_temporaries_of_every_folder(file_world: World) -> None:
    """``escalectl fix`` removes the temporaries left in any layout folder
    (a dry run counts them and removes nothing)."""
    from escale.ops.fix import fix_client

    world = file_world
    _setup(world)
    assert world.target.plant is not None
    planted = [f"{folder}/{TEMP_PREFIX}00ff00ff00ff00ff" if folder else f"{TEMP_PREFIX}00ff00ff00ff00ff"
               for folder in ("", *layout.FOLDERS)]
    old = time.time() - 3600
    for name in planted:
        world.target.plant(world.folder, name, b"plaintext of a killed upload")
        os.utime(os.path.join(_root(world), name), (old, old))
    dry = fix_client(world.settings("a"), dry_run=True, lease_wait=10)
    assert dry.removed >= len(planted)
    assert all(os.path.exists(os.path.join(_root(world), n)) for n in planted)
    report = fix_client(world.settings("a"), lease_wait=10)
    assert report.removed >= len(planted)
    assert not any(os.path.exists(os.path.join(_root(world), n)) for n in planted)


@pytest.mark.parametrize("mtime_ns", [-(2**63), 2**63 - 1, 0])
def test_extreme_mtimes_received_and_settle(file_world: World, mtime_ns: int) -> None:
    """A placeholder's mtime at either end of 64 bits reaches os.utime (the
    kernel clamps it): the file is received and the clients settle."""
    world = file_world
    a, b = _setup(world)
    data = b"extreme mtime\n"
    key = plain_envelope().object_key("t.txt")
    payload = layout.data_name(key, 1)
    placeholder = Placeholder(
        path="t.txt", key=key, version=1, generation=1, kind="file", pusher=OUTSIDER, pusher_label="outsider",
        size=len(data), mtime_ns=mtime_ns, checksum=f"sha256:{hashlib.sha256(data).hexdigest()}",
        payload=payload, receivers=())
    assert world.target.plant is not None
    world.target.plant(world.folder, layout.meta_name(key, 1), placeholder.encode())
    world.target.plant(world.folder, payload, data)
    world.quiesce(["a", "b"])
    assert tree(a)["t.txt"] == tree(b)["t.txt"] == sha(data)
