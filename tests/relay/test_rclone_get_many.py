"""The rclone backend's group read (:meth:`Relay.get_many`): pipelined GETs
on the relay's kept-alive connection to a real ``rclone rcd``, with each
name's own answer kept whatever its neighbours found, on a current rclone
(unix socket) and on an old one (127.0.0.1 with credentials)."""

from __future__ import annotations

import os
import signal

import pytest

from escale.errors import ObjectTooLarge, RelayConnectionError, RelayError, RelayNotFound
from escale.relay.rclone import RcloneRelay
from tests.servers.rclone import old_rclone_relay
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(120)


def _open(target: RelayTarget) -> RcloneRelay:
    relay = target.relay(target.new_folder())
    assert isinstance(relay, RcloneRelay)
    relay.open()
    relay.create_root()
    return relay


def test_group_read_is_declared_and_each_name_keeps_its_own_answer(target_rclone_local: RelayTarget) -> None:
    """A group of more names than one pipelined round, with objects above the
    limit (refused unread: the names after them are still answered), a
    missing name and a folder among them: every name gets its own answer, in
    order, and the connection (and the rcd) serve on afterwards."""
    relay = _open(target_rclone_local)
    try:
        assert relay.capabilities.group_get
        pid = relay.rcd_pid
        big = os.urandom(50_000)
        names = [f"g/{i:03d}" for i in range(90)]
        for i, name in enumerate(names):
            relay.put_bytes(name, big if i in (5, 6, 40, 89) else b"%d" % i * (i + 1))
        relay.put_bytes("g/folder/inside", b"x")
        asked = [*names[:60], "g/missing", "g/folder", *names[60:], names[0]]
        got = relay.get_many(asked, limit=1000)
        assert len(got) == len(asked)
        for name, answer in zip(asked, got, strict=True):
            if name == "g/missing":
                assert isinstance(answer, RelayNotFound) and answer.name == name
            elif name == "g/folder":
                assert isinstance(answer, RelayError) and not answer.transient and answer.name == name
            elif int(name[2:]) in (5, 6, 40, 89):
                assert isinstance(answer, ObjectTooLarge) and answer.name == name
            else:
                i = int(name[2:])
                assert answer == b"%d" % i * (i + 1)
        assert relay.get_many(names[4:8], limit=len(big)) == [b"4" * 5, big, big, b"7" * 8]
        relay.put_bytes("g/after", b"after")
        assert relay.get_bytes("g/after") == b"after"
        assert relay.rcd_pid == pid
    finally:
        relay.close()


def test_group_read_when_the_rcd_dies_is_transient(target_rclone_local: RelayTarget) -> None:
    """The rcd gone: the whole group read fails with a transient error (no
    answer is made up), and a reopened relay reads the group again."""
    relay = _open(target_rclone_local)
    try:
        relay.put_bytes("d/a", b"a")
        relay.put_bytes("d/b", b"b")
        pid = relay.rcd_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the rcd this test's relay started
        with pytest.raises(RelayConnectionError) as raised:
            relay.get_many(["d/a", "d/b"], limit=100)
        assert raised.value.transient
        relay.open()
        assert relay.get_many(["d/a", "d/b", "d/a"], limit=100) == [b"a", b"b", b"a"]
    finally:
        relay.close()


def test_group_read_on_an_old_rclone(target_rclone_local: RelayTarget) -> None:
    """An rclone without unix sockets (its rc on 127.0.0.1, with credentials
    on every pipelined request) answers a group read the same way."""
    relay = old_rclone_relay(target_rclone_local)
    try:
        assert relay.capabilities.group_get
        names = [f"o/{i}" for i in range(40)]
        for i, name in enumerate(names):
            relay.put_bytes(name, b"%d" % i)
        relay.put_bytes("o/big", b"b" * 5000)
        got = relay.get_many(["o/big", *names, "o/none"], limit=100)
        assert isinstance(got[0], ObjectTooLarge) and isinstance(got[-1], RelayNotFound)
        assert got[1:-1] == [b"%d" % i for i in range(40)]
    finally:
        relay.close()
