"""FTP/FTPS transfers: exact bytes in binary mode, on real pyftpdlib (with and
without MLSD, plain and explicit TLS) and ``rclone serve ftp``.

The backend sends no ``TYPE I`` before each transfer (the connection is put in
binary mode at login and never leaves it): these tests show that content full
of line ends survives listings, stats and a bounded read refused midway, and
that a multi-MiB object comes back byte for byte.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from escale.errors import ObjectTooLarge
from escale.relay import Relay, RelaySpec, make_relay
from tests.relay.conftest import OpenRelay
from tests.servers.ftp import FtpServer, ftp_server_process
from tests.servers.target import RelayTarget, assert_big_round_trip

pytestmark = pytest.mark.timeout(120)

#: bytes that an ASCII-mode transfer would change (CR LF, lone LF, lone CR)
LINE_ENDS = b"a\r\nb\nc\rd\r\r\n\n" * 4000 + bytes(range(256))


@pytest.fixture(scope="module")
def nomlst_ftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FtpServer]:
    """pyftpdlib without MLSD/MLST: listings go through LIST, stats through SIZE."""
    server = ftp_server_process(str(tmp_path_factory.mktemp("ftp-transfers-nomlst")), mlst=False)
    yield server
    server.process.shutdown()


@pytest.fixture(params=["target_ftp", "target_ftps", "target_ftp_rclone", "nomlst"])
def ftp_relay(request: pytest.FixtureRequest, open_relay: OpenRelay) -> Relay:
    if request.param == "nomlst":
        server: FtpServer = request.getfixturevalue("nomlst_ftp_server")
        spec = RelaySpec(protocol="ftp", host="127.0.0.1", port=server.port, directory=f"t{os.urandom(4).hex()}",
                         username=server.user, password=server.password, timeout=10.0)
        relay = make_relay(spec)
    else:
        target: RelayTarget = request.getfixturevalue(request.param)
        relay = target.relay()
    open_relay(relay)
    relay.create_root()
    return relay


def test_big_object_round_trip_is_exact(ftp_relay: Relay) -> None:
    """A multi-MiB object of random bytes, stored from the middle of its
    source, comes back byte for byte with its exact size."""
    assert_big_round_trip(ftp_relay)


def test_line_ends_survive_listings_and_a_refused_read(ftp_relay: Relay) -> None:
    """Content full of line ends stays exact before and after listings, a
    stat, and a bounded read stopped midway (the connection stays usable)."""
    ftp_relay.put_bytes("d/lines", LINE_ENDS)
    assert ftp_relay.get_bytes("d/lines") == LINE_ENDS
    assert [(e.basename, e.size) for e in ftp_relay.list("d")] == [("lines", len(LINE_ENDS))]
    assert ftp_relay.stat("d/lines").size == len(LINE_ENDS)
    with pytest.raises(ObjectTooLarge):
        ftp_relay.get_bytes("d/lines", limit=len(LINE_ENDS) - 1)
    ftp_relay.put_bytes("d/again", LINE_ENDS[::-1])
    assert ftp_relay.get_bytes("d/lines", limit=len(LINE_ENDS)) == LINE_ENDS
    assert ftp_relay.get_bytes("d/again") == LINE_ENDS[::-1]
    assert [e.basename for e in ftp_relay.list("d")] == ["again", "lines"]
