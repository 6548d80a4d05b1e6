"""WebDAV object bodies: exact bytes whatever the server's content coding,
and a body cut short refused.

On real WsgiDAV and ``rclone serve webdav`` (which compresses small bodies
when the client allows it), plus one deliberately broken HTTP server on
127.0.0.1 that announces more bytes than it sends (a hostile relay, not a
stand-in for a real one).
"""

from __future__ import annotations

import http.server
import io
import threading
from collections.abc import Iterator

import pytest

from escale.errors import ObjectTooLarge, RelayConnectionError
from escale.relay import RelaySpec, make_relay
from escale.relay.webdav import WebdavRelay
from tests.relay.conftest import OpenRelay
from tests.servers.target import RelayTarget, assert_big_round_trip

pytestmark = pytest.mark.timeout(120)

TARGETS = ["target_webdav", "target_webdav_rclone"]


def _relay(request: pytest.FixtureRequest, target_fixture: str, open_relay: OpenRelay) -> WebdavRelay:
    target: RelayTarget = request.getfixturevalue(target_fixture)
    relay = open_relay(target.relay())
    assert isinstance(relay, WebdavRelay)
    return relay


@pytest.mark.parametrize("target_fixture", TARGETS)
def test_a_bounded_read_takes_the_object_size_not_a_compressed_length(
    request: pytest.FixtureRequest, target_fixture: str, open_relay: OpenRelay
) -> None:
    """A 1-byte object read with a limit of 1 byte is accepted (rclone's server
    would gzip it to 25 bytes if allowed, and that length is not the object's);
    one byte more than the limit is still refused."""
    relay = _relay(request, target_fixture, open_relay)
    relay.put_bytes("one", b"1")
    relay.put_bytes("text", b"abc" * 20_000)  # compresses well
    assert relay.get_bytes("one", limit=1) == b"1"
    assert relay.get_bytes("text", limit=60_000) == b"abc" * 20_000
    with pytest.raises(ObjectTooLarge):
        relay.get_bytes("text", limit=59_999)
    with pytest.raises(ObjectTooLarge):
        relay.get_bytes("one", limit=0)


@pytest.mark.parametrize("target_fixture", TARGETS)
def test_big_object_round_trip_is_exact(
    request: pytest.FixtureRequest, target_fixture: str, open_relay: OpenRelay, tmp_path: object
) -> None:
    """A multi-MiB object of random bytes, put from a file and got into a file,
    comes back byte for byte (sizes not a multiple of any block size)."""
    relay = _relay(request, target_fixture, open_relay)
    assert_big_round_trip(relay)


class _ShortBodyHandler(http.server.BaseHTTPRequestHandler):
    """A WebDAV server that lists its folder, then answers every GET with a
    Content-Length of 1000 and only 10 bytes before closing."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PROPFIND(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (
            b'<?xml version="1.0" encoding="utf-8"?><D:multistatus xmlns:D="DAV:"><D:response>'
            b"<D:href>/repo/</D:href><D:propstat><D:prop><D:resourcetype><D:collection/></D:resourcetype>"
            b"</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response></D:multistatus>"
        )
        self._reply(207, body, {"Content-Type": "application/xml"})

    def do_OPTIONS(self) -> None:
        self._reply(200, b"", {"DAV": "1"})

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def short_body_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ShortBodyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_body_shorter_than_announced_is_refused(short_body_port: int, open_relay: OpenRelay) -> None:
    """A server that stops sending before its Content-Length: the read fails
    as a transient connection error (retried by the caller), never as a
    shorter object."""
    spec = RelaySpec(protocol="webdav", host="127.0.0.1", port=short_body_port, directory="repo", timeout=10.0)
    relay = open_relay(make_relay(spec))
    sink = io.BytesIO()
    with pytest.raises(RelayConnectionError) as caught:
        relay.get("object", sink)
    assert caught.value.transient
    with pytest.raises(RelayConnectionError):
        relay.get_bytes("object", limit=1000)
