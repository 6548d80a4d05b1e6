"""Name validation and the retry wrapper, independent of any server."""

from __future__ import annotations

from typing import BinaryIO

import pytest

from escale.errors import RelayConnectionError, RelayNotFound, UnsafeName
from escale.relay.base import TEMP_PREFIX, check_listed, check_name, listed_problem
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

    def _get(self, name: str, sink: BinaryIO) -> None:
        if self.failures:
            self.failures -= 1
            sink.write(b"partial garbage")
            raise RelayConnectionError("dropped")
        super()._get(name, sink)


def test_retry_reconnects_and_rewinds_sink() -> None:
    inner = _Flaky(failures=2)
    waits: list[float] = []  # one wait before each retry
    relay = RetryingRelay(inner, attempts=5, sleep=waits.append)
    relay.open()
    relay.put_bytes("obj", b"payload")
    assert relay.get_bytes("obj") == b"payload"
    assert len(waits) == 2
    assert inner.opens == 3


def test_retry_gives_up_after_attempts() -> None:
    inner = _Flaky(failures=10)
    waits: list[float] = []
    relay = RetryingRelay(inner, attempts=3, sleep=waits.append)
    relay.open()
    relay.put_bytes("obj", b"payload")
    with pytest.raises(RelayConnectionError):
        relay.get_bytes("obj")
    assert len(waits) == 2


def test_retry_does_not_retry_permanent_errors() -> None:
    inner = _Flaky(failures=0)
    waits: list[float] = []
    relay = RetryingRelay(inner, attempts=5, sleep=waits.append)
    relay.open()
    with pytest.raises(RelayNotFound):
        relay.get_bytes("missing")
    assert waits == []


def test_retry_wrapper_reports_capabilities_learnt_on_open() -> None:
    from escale.relay.base import Capabilities

    class Probing(MemoryRelay):
        def _connect(self) -> None:
            self.capabilities = Capabilities(exclusive_create=False, mtime_precision=5.0)

    relay = RetryingRelay(Probing(), sleep=lambda s: None)
    assert relay.capabilities.exclusive_create  # the memory relay's before open
    relay.open()
    learnt = relay.capabilities  # read again: open() replaced them
    assert not learnt.exclusive_create and learnt.mtime_precision == 5.0


def test_listed_entry_outside_its_folder_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    from escale.relay.base import Entry

    class Lying(MemoryRelay):
        def _list(self, folder: str) -> list[Entry]:
            return [Entry("elsewhere/x", 1, None), Entry("dir/a/b", 1, None), Entry("dir/", 1, None),
                    Entry("dir/..", 0, None, True), Entry("dir/ok", 1, None), Entry("dir/\udcff", 1, None)]

    relay = Lying()
    relay.open()
    assert [e.name for e in relay.list("dir")] == ["dir/ok"]
    assert caplog.text.count("ignoring") == 5


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "a\nb", "\udcff", "a\\b", TEMP_PREFIX + "x"])
def test_listed_problem_names_the_reason(name: str) -> None:
    assert listed_problem(name) is not None


def test_listed_problem_of_temporaries() -> None:
    assert listed_problem(TEMP_PREFIX + "ab12", temporary=True) is None
    assert listed_problem(TEMP_PREFIX + "a\nb", temporary=True) is not None
    assert listed_problem("plain", temporary=True) is not None
