"""Fixtures shared by the relay tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Protocol, TypeVar

import pytest

from escale.relay import Relay

R = TypeVar("R", bound=Relay)


class OpenRelay(Protocol):
    """The ``open_relay`` fixture's function: opens a relay and returns it."""

    def __call__(self, relay: R, /) -> R: ...


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


@pytest.fixture
def open_relay() -> Iterator[OpenRelay]:
    """``open_relay(relay)`` opens ``relay`` and returns it; every relay given
    is closed at the end of the test, whether the test passed, failed or
    skipped (closing twice is harmless: ``Relay.close`` is idempotent)."""
    opened: list[Relay] = []

    def open_one(relay: R) -> R:
        opened.append(relay)
        relay.open()
        return relay

    yield open_one
    for relay in reversed(opened):
        relay.close()
