"""Planted names in ``lease/`` delay a writer at most; they never stop the lease.

Issue 9, item 8: a junk ``lease/999999999999999999`` made the next generation
``10**18``, a 19-digit name that was never listed, so the relay stayed busy for
good; a folder named ``lease/000000000777`` made writers fail. Here, over the
memory relay and a local-folder relay (both real :class:`Relay` backends), a
planted record is held by "an unknown client" until it is stale on the
observer's clock (a clock the test moves, so no test waits), and then the
next generation is one that is written, listed and parsed. Folders and
foreign names (non-canonical digits, numbers beyond 63 bits) are ignored with
one warning each.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from escale.crypto import plain_envelope
from escale.errors import LeaseBusy, ProtocolError
from escale.protocol import layout
from escale.protocol.lease import LeaseManager, highest_generation, list_leases
from escale.relay import Relay
from tests.servers.target import RelayTarget

TIMEOUT = 30.0
MAX = layout.MAX_LEASE_GENERATION


class Clock:
    """A boot-time clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "file"])
def relay(request: pytest.FixtureRequest) -> Iterator[Relay]:
    target: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    r = target.relay()
    try:
        r.open()
        r.mkdir(layout.LEASES)
        yield r
    finally:
        r.close()


def _manager(relay: Relay, clock: Clock, client: str = "a" * 32) -> LeaseManager:
    return LeaseManager(relay, plain_envelope(), client_id=client, label="writer", timeout=TIMEOUT, clock=clock)


def _take_after_stale(manager: LeaseManager, clock: Clock) -> int:
    """Acquire: refused while the planted record is fresh, taken once stale;
    returns the generation taken (and gives it back)."""
    with pytest.raises(LeaseBusy, match="unknown client"):
        manager.acquire()
    clock.now += TIMEOUT + 1
    lease = manager.acquire()
    generation = lease.generation
    lease.release()
    return generation


@pytest.mark.parametrize(("name", "expected"), [
    ("lease/000000000001", 1),
    ("lease/999999999999", 999_999_999_999),
    ("lease/1000000000000", 10**12),
    ("lease/1000000000000000000", 10**18),
    (f"lease/{MAX}", MAX),
    (f"lease/{MAX + 1}", None),  # beyond 63 bits (SQLite keeps observations)
    ("lease/99999999999999999999999", None),
    ("lease/000000000000", None),  # generations start at 1
    ("lease/7", None),  # not the canonical spelling of 7: would alias 000000000007
    ("lease/0001000000000000", None),
    ("lease/\u0663\u0663\u0663\u0663\u0663\u0663\u0663\u0663\u0663\u0663\u0663\u0663", None),  # Arabic-Indic digits
    ("lease/00000000001a", None),
    ("lease/+00000000001", None),
])
def test_generation_names(name: str, expected: int | None) -> None:
    assert layout.parse_lease(name) == expected
    if expected is not None:
        assert layout.lease_name(expected) == name


TOKEN = "0123456789abcdef" * 2


@pytest.mark.parametrize(("name", "expected"), [
    (f"lease/000000000001-{TOKEN}", (1, TOKEN)),
    (f"lease/1000000000000-{TOKEN}", (10**12, TOKEN)),
    (f"lease/7-{TOKEN}", None),  # the generation must be spelled canonically
    (f"lease/000000000000-{TOKEN}", None),
    (f"lease/{MAX + 1}-{TOKEN}", None),
    (f"lease/000000000001-{TOKEN.upper()}", None),
    (f"lease/000000000001-{TOKEN[:-1]}", None),
    (f"lease/000000000001-{TOKEN}-x", None),
    ("lease/000000000001", None),  # a record, not a claim
])
def test_claim_names(name: str, expected: tuple[int, str] | None) -> None:
    assert layout.parse_lease_claim(name) == expected
    if expected is not None:
        assert layout.lease_claim_name(*expected) == name
        assert layout.parse_lease(name) is None  # never taken for a record


def test_a_foreign_name_shaped_like_a_claim_of_a_far_generation_only_delays(relay: Relay) -> None:
    """A planted claim (no record) of a far generation is held like a
    record by an unknown client: it goes stale, and the next generation
    goes above it."""
    relay.put_bytes(f"lease/000000000500-{TOKEN}", b"junk, not a sealed record")
    clock = Clock()
    manager = _manager(relay, clock)
    with pytest.raises(LeaseBusy, match="generation 500 is being claimed"):
        manager.acquire()
    clock.now += TIMEOUT + 1
    lease = manager.acquire()
    assert lease.generation == 501
    lease.release()


def test_junk_at_10_to_the_18_only_delays(relay: Relay) -> None:
    """The reported case: the successor of a planted 18-digit name is 19 digits
    long, and it is listed, parsed and taken like any other generation."""
    relay.put_bytes("lease/999999999999999999", b"junk, not a sealed record")
    clock = Clock()
    manager = _manager(relay, clock)
    assert _take_after_stale(manager, clock) == 10**18
    assert highest_generation(relay) == 10**18
    lease = manager.acquire()  # released: the next one follows at once
    assert lease.generation == 10**18 + 1
    lease.release()


def test_folder_and_foreign_names_are_ignored(relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    """A folder with a generation's name, foreign names and numbers beyond 63
    bits neither block nor crash a writer; each is logged once. The next
    generation goes above the folder's name, so it can always be written."""
    relay.mkdir("lease/000000000777")
    relay.put_bytes(f"lease/{MAX + 1}", b"x")
    relay.put_bytes("lease/7", b"x")
    relay.put_bytes("lease/notes.txt", b"x")
    clock = Clock()
    manager = _manager(relay, clock)
    with caplog.at_level(logging.WARNING, logger="escale.protocol.lease"):
        lease = manager.acquire()
        assert lease.generation == 778
        lease.release()
        second = manager.acquire()
        assert second.generation == 779
        second.release()
    assert list_leases(relay).generations == [778, 779]
    for name in ("lease/000000000777", f"lease/{MAX + 1}", "lease/7", "lease/notes.txt"):
        assert sum(name in r.getMessage() for r in caplog.records) == 1, name
        assert relay.exists(name), "a foreign object was touched"


def test_planted_last_generation_is_reported_not_overflowed(relay: Relay) -> None:
    """The one name with no successor (only a plant can get there): once stale,
    taking the lease fails with a clear error naming the object, and nothing
    that could not be listed back is written."""
    relay.put_bytes(layout.lease_name(MAX), b"junk")
    clock = Clock()
    manager = _manager(relay, clock)
    with pytest.raises(LeaseBusy):
        manager.acquire()
    clock.now += TIMEOUT + 1
    with pytest.raises(ProtocolError, match=f"lease/{MAX}") as caught:
        manager.acquire()
    assert not isinstance(caught.value, LeaseBusy)
    assert [e.name for e in relay.list(layout.LEASES)] == [f"lease/{MAX}"]
    relay.delete(f"lease/{MAX}")  # what the message asks for
    lease = manager.acquire()
    assert lease.generation == 1
    lease.release()
