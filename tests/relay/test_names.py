"""Name validation and the retry wrapper, independent of any server."""

from __future__ import annotations

import pytest

from escale.errors import RelayConnectionError, RelayNotFound, UnsafeName
from escale.relay.base import TEMP_PREFIX, check_listed, check_name
from escale.relay.memory import MemoryRelay
from escale.relay.retry import RetryingRelay


@pytest.mark.parametrize("name", ["a", "a/b", "é/ü x", "a.b-c_d"])
def test_safe_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "/a", "a/", "a//b", "..", "a/../b", "./a", "a\\b", "a\x00b", "a\nb", "x\x7f",
     TEMP_PREFIX + "1", "a/" + TEMP_PREFIX + "1"],
)
def test_unsafe_names(name: str) -> None:
    with pytest.raises(UnsafeName):
        check_name(name)


def test_root_allowed_only_when_asked() -> None:
    assert check_name("", allow_root=True) == ""


def test_listed_name_must_be_one_component() -> None:
    with pytest.raises(UnsafeName):
        check_listed("dir", "a/b")


class _Flaky(MemoryRelay):
    """Fails the first ``failures`` gets with a transient error."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.opens = 0

    def _connect(self) -> None:
        self.opens += 1

    def _get(self, name, sink):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            sink.write(b"partial garbage")
            raise RelayConnectionError("dropped")
        super()._get(name, sink)


def test_retry_reconnects_and_rewinds_sink() -> None:
    inner = _Flaky(failures=2)
    relay = RetryingRelay(inner, attempts=5, sleep=lambda s: None)
    relay.open()
    relay.put_bytes("obj", b"payload")
    assert relay.get_bytes("obj") == b"payload"
    assert relay.retries == 2
    assert inner.opens == 3


def test_retry_gives_up_after_attempts() -> None:
    inner = _Flaky(failures=10)
    relay = RetryingRelay(inner, attempts=3, sleep=lambda s: None)
    relay.open()
    relay.put_bytes("obj", b"payload")
    with pytest.raises(RelayConnectionError):
        relay.get_bytes("obj")
    assert relay.retries == 2


def test_retry_does_not_retry_permanent_errors() -> None:
    inner = _Flaky(failures=0)
    relay = RetryingRelay(inner, attempts=5, sleep=lambda s: None)
    relay.open()
    with pytest.raises(RelayNotFound):
        relay.get_bytes("missing")
    assert relay.retries == 0


def test_retry_wrapper_reports_capabilities_learnt_on_open() -> None:
    from escale.relay.base import Capabilities

    class Probing(MemoryRelay):
        def _connect(self) -> None:
            self.capabilities = Capabilities(exclusive_create=False, mtime_precision=5.0)

    relay = RetryingRelay(Probing(), sleep=lambda s: None)
    assert relay.capabilities.exclusive_create  # the memory relay's before open
    relay.open()
    assert not relay.capabilities.exclusive_create and relay.capabilities.mtime_precision == 5.0


def test_listed_entry_outside_its_folder_is_refused() -> None:
    from escale.relay.base import Entry

    class Lying(MemoryRelay):
        def _list(self, folder):  # type: ignore[no-untyped-def]
            return [Entry("elsewhere/x", 1, None)]

    relay = Lying()
    relay.open()
    with pytest.raises(UnsafeName):
        relay.list("dir")
