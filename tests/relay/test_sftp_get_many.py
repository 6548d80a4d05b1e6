"""The sftp backend's group read (:meth:`Relay.get_many`) on real OpenSSH
servers: each name's refusal (a missing object, a dangling link, a folder,
a read the server refuses) comes back as that name's own error while the
others are read, an object over the limit is refused alone, and the
session stays in step for the requests that follow."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from escale.errors import ObjectTooLarge, RelayError, RelayNotFound, RelayPermissionDenied
from escale.relay import make_relay
from escale.relay.base import Relay
from escale.relay.sftp import LARGEST_REQUEST, SftpRelay
from tests.servers.sshd import SshServer, sshd_refusing

pytestmark = pytest.mark.timeout(120)


def _open(server: SshServer, folder: str) -> Relay:
    relay = make_relay(server.spec_for(folder))
    assert isinstance(relay, SftpRelay)
    relay.open()
    relay.create_root()
    return relay


def test_each_name_answers_alone_and_the_session_stays_in_step(sshd_server: SshServer) -> None:
    relay = _open(sshd_server, "get-many-refusals")
    try:
        assert relay.capabilities.group_get and relay.capabilities.group_delete
        relay.put_bytes("g/a", b"a" * 100)
        relay.put_bytes("g/folder/inside", b"x")
        big = os.urandom(3 * LARGEST_REQUEST + 11)
        relay.put_bytes("g/big", big)
        relay.put_bytes("g/medium", big[:LARGEST_REQUEST + 5])  # more than one read request
        os.symlink("nowhere", os.path.join(sshd_server.remote_directory("get-many-refusals"), "g", "dangling"))
        names = ["g/a", "g/dangling", "g/folder", "g/big", "g/medium", "g/missing", "g/a"]
        got = relay.get_many(names, limit=2 * LARGEST_REQUEST)
        assert got[0] == got[6] == b"a" * 100
        assert isinstance(got[1], RelayNotFound) and got[1].name == "g/dangling"
        assert isinstance(got[2], RelayError) and not got[2].transient and got[2].name == "g/folder"
        assert isinstance(got[3], ObjectTooLarge) and got[3].name == "g/big"
        assert got[4] == big[:LARGEST_REQUEST + 5]
        assert isinstance(got[5], RelayNotFound) and got[5].name == "g/missing"
        # the answers left unread and the closes sent without waiting leave the session usable
        assert [e.name for e in relay.list("g")] == ["g/a", "g/big", "g/dangling", "g/folder", "g/medium"]
        assert relay.get_many(["g/big", "g/a"], limit=len(big)) == [big, b"a" * 100]
    finally:
        relay.close()


def test_groups_in_a_row_close_their_handles(sshd_server: SshServer) -> None:
    relay = _open(sshd_server, "get-many-handles")
    try:
        names = [f"h/{i}" for i in range(40)]
        for name in names:
            relay.put_bytes(name, name.encode())
        for _ in range(60):  # 2,400 opens: a handle left open each time would exhaust the server's
            assert relay.get_many(names, limit=100) == [name.encode() for name in names]
        relay.put_bytes("h/0", b"changed")
        assert relay.get_many(["h/0", "h/1"], limit=100) == [b"changed", b"h/1"]
    finally:
        relay.close()


@pytest.fixture(scope="module")
def read_refusing_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An OpenSSH sshd whose sftp-server refuses every READ request (``-P
    read``) while it opens and stats files as usual: a refusal that shows
    only in the answers to the group's pipelined reads."""
    with sshd_refusing(str(tmp_path_factory.mktemp("sshd-no-read")), "read") as server:
        yield server


def test_refused_reads_are_each_names_permission_error(read_refusing_sshd: SshServer) -> None:
    relay = _open(read_refusing_sshd, "no-read")
    try:
        relay.put_bytes("r/one", b"1")
        relay.put_bytes("r/two", b"22")
        got = relay.get_many(["r/one", "r/missing", "r/two"], limit=100)
        assert isinstance(got[0], RelayPermissionDenied) and got[0].name == "r/one"
        assert isinstance(got[1], RelayNotFound) and got[1].name == "r/missing"
        assert isinstance(got[2], RelayPermissionDenied) and got[2].name == "r/two"
        with pytest.raises(RelayPermissionDenied):  # the same refusal as one read
            relay.get_bytes("r/one")
        relay.put_bytes("r/three", b"3")  # the connection goes on
        assert [e.name for e in relay.list("r")] == ["r/one", "r/three", "r/two"]
    finally:
        relay.close()
