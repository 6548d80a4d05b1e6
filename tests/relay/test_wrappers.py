"""The bandwidth and dry-run wrappers over every backend: a throttled relay
carries contents unchanged (each backend streams its own way: copyfileobj,
STOR/RETR blocks, SFTP chunks, an HTTP body), and a read-only relay reads
everything and writes nothing."""

from __future__ import annotations

import io
import os
from typing import BinaryIO

from escale.crypto.envelope import PlainEnvelope
from escale.errors import RelayNotFound
from escale.protocol.streams import send_sealing
from escale.relay import Relay
from escale.relay.delegating import DelegatingRelay
from escale.relay.readonly import ReadOnlyRelay
from escale.relay.retry import RetryingRelay
from escale.relay.throttle import ThrottledRelay, TokenBucket
from tests.servers.target import RelayTarget


def test_throttled_relay_round_trip(relay: Relay) -> None:
    data = os.urandom(300_000)
    throttled = RetryingRelay(ThrottledRelay(relay, TokenBucket(100_000_000)))
    throttled.open()
    try:
        throttled.put("a/big", io.BytesIO(data))
        sink = io.BytesIO()
        throttled.get("a/big", sink)
        assert sink.getvalue() == data
        assert [e.name for e in throttled.list("a")] == ["a/big"]
    finally:
        throttled.close()


def test_read_only_relay_reads_and_writes_nothing(relay: Relay) -> None:
    relay.put_bytes("kept", b"original")
    read_only = ReadOnlyRelay(relay)
    read_only.open()
    try:
        assert read_only.get_bytes("kept") == b"original"
        read_only.put_bytes("kept", b"changed")
        read_only.put_bytes("new/object", b"x")
        read_only.delete("kept")
        read_only.rename("kept", "moved", overwrite=True)
        read_only.mkdir("folder")
        assert read_only.dropped == ["put kept", "put new/object", "delete kept", "rename kept moved",
                                     "mkdir folder"]
        assert [e.name for e in read_only.list()] == ["kept"]
    finally:
        read_only.close()
    relay.open()
    assert relay.get_bytes("kept") == b"original"
    assert [e.name for e in relay.list()] == ["kept"]


class _Counted:
    """A bucket that only adds up what it is asked to let through."""

    def __init__(self) -> None:
        self.taken = 0

    def take(self, amount: int) -> None:
        self.taken += amount


def test_group_reads_through_the_wrappers(relay: Relay) -> None:
    """A group read through the bandwidth limit pays for every byte it
    carries (one object after the other, through the bucket), and through
    the read-only wrapper reads as the backend does."""
    relay.put_bytes("g/one", b"1" * 1000)
    relay.put_bytes("g/two", b"2" * 3000)
    bucket = _Counted()
    throttled = ThrottledRelay(relay, bucket)  # type: ignore[arg-type]
    throttled.open()
    try:
        got = throttled.get_many(["g/one", "g/gone", "g/two"], limit=10_000)
        assert got[0] == b"1" * 1000 and got[2] == b"2" * 3000
        assert bucket.taken >= 4000
    finally:
        throttled.close()
    read_only = ReadOnlyRelay(relay)
    read_only.open()
    try:
        assert read_only.get_many(["g/two", "g/one"], limit=10_000) == [b"2" * 3000, b"1" * 1000]
    finally:
        read_only.close()


def test_group_puts_under_fresh_names_through_the_wrappers(relay: Relay) -> None:
    """A fresh group put through the bandwidth limit pays for every byte and
    stores each item; through the read-only wrapper it writes nothing and
    says so per item; through a wrapper that changes single puts, each item
    goes through that wrapper's put."""
    bucket = _Counted()
    with ThrottledRelay(relay, bucket) as throttled:  # type: ignore[arg-type]
        throttled.put_fresh([("p/one", b"1" * 1000), ("p/two", b"2" * 3000)])
        assert bucket.taken >= 4000
    read_only = ReadOnlyRelay(relay)
    with read_only:
        read_only.put_fresh([("p/one", b"changed"), ("p/three", b"3")])
        assert read_only.dropped == ["put p/one", "put p/three"]
    announced = _Announced(relay)
    with announced:
        announced.put_fresh([("p/four", b"44"), ("p/five", b"5")])
        assert len(announced.lengths) == 2  # one put each, through the wrapper
    relay.open()
    assert [relay.get_bytes(n) for n in ("p/one", "p/two", "p/four", "p/five")] == [b"1" * 1000, b"2" * 3000,
                                                                                   b"44", b"5"]
    assert not relay.exists("p/three")


def test_group_deletes_through_the_wrappers(relay: Relay) -> None:
    """A group delete through the read-only wrapper deletes nothing and says
    so per name; through the bandwidth limit (which moves no content) the
    group reaches the backend whole and deletes each object."""
    relay.open()
    relay.put_fresh([("d/one", b"1"), ("d/two", b"2")])
    relay.close()
    read_only = ReadOnlyRelay(relay)
    with read_only:
        assert read_only.delete_many(["d/one", "d/two"]) == [None, None]
        assert read_only.dropped == ["delete d/one", "delete d/two"]
    with ThrottledRelay(relay, _Counted()) as throttled:  # type: ignore[arg-type]
        assert throttled.exists("d/one")
        got = throttled.delete_many(["d/one", "d/gone", "d/two"])
        assert got[0] is None and got[2] is None and isinstance(got[1], RelayNotFound)
        assert not throttled.exists("d/one") and not throttled.exists("d/two")


class _Announced(DelegatingRelay):
    """A relay that records the length each put's source announces (None:
    it announces none)."""

    def __init__(self, inner: Relay) -> None:
        super().__init__(inner)
        self.lengths: list[int | None] = []

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        self.lengths.append(len(source) if hasattr(source, "__len__") else None)
        self.inner.put(name, source, exclusive=exclusive)


def test_throttled_relay_passes_on_the_length_a_source_announces(target_file: RelayTarget) -> None:
    """A payload sealed while sent announces its sealed size beforehand,
    which an HTTP backend sends as Content-Length; through the bandwidth limit
    the backend is told it still (without it a WebDAV body goes chunked,
    which some servers refuse). A source that announces no length still
    announces none."""
    data = os.urandom(300_000)
    envelope = PlainEnvelope()
    announced = _Announced(target_file.relay())
    throttled = RetryingRelay(ThrottledRelay(announced, TokenBucket(100_000_000)))
    throttled.open()
    try:
        _, exact = send_sealing(throttled, "a/sealed", envelope.sealed_size(len(data)), io.BytesIO(data), 0, None,
                                envelope.seal_pieces, lambda reader: reader)
        throttled.put("a/spooled", io.BytesIO(data))
        assert exact and announced.lengths == [envelope.sealed_size(len(data)), None]
        assert throttled.get_bytes("a/sealed") == data
    finally:
        throttled.close()


def test_replacing_group_puts_through_the_wrappers(relay: Relay) -> None:
    """A replacing group put through the bandwidth limit pays for every
    byte and replaces each object; through the read-only wrapper it writes
    nothing and says so per item; through a wrapper that changes single
    puts, each item goes through that wrapper's put."""
    relay.put_bytes("q/one", b"old")
    relay.close()
    bucket = _Counted()
    with ThrottledRelay(relay, bucket) as throttled:  # type: ignore[arg-type]
        throttled.put_many([("q/one", b"1" * 1000), ("q/two", b"2" * 3000)])
        assert bucket.taken >= 4000
    read_only = ReadOnlyRelay(relay)
    with read_only:
        read_only.put_many([("q/one", b"changed"), ("q/three", b"3")])
        assert read_only.dropped == ["put q/one", "put q/three"]
    announced = _Announced(relay)
    with announced:
        announced.put_many([("q/two", b"22"), ("q/four", b"4")])
        assert len(announced.lengths) == 2  # one put each, through the wrapper
    relay.open()
    assert [relay.get_bytes(n) for n in ("q/one", "q/two", "q/four")] == [b"1" * 1000, b"22", b"4"]
    assert not relay.exists("q/three")
