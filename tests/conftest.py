"""Session-wide fixtures: relay targets on real servers, and helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from escale.relay import Relay
from tests.relay.backends import CONFORMANCE_BACKENDS
from tests.servers.local import file_target, memory_target
from tests.servers.target import RelayTarget

#: The server fixtures (``target_ftp``, ``sshd_server``, ...), registered by
#: module name: each module defines its session-scoped fixtures. A module
#: comes before the modules that import it (sshd before rclone), so that pytest
#: still rewrites its asserts.
pytest_plugins = [
    "tests.servers.sshd",
    "tests.servers.ftp",
    "tests.servers.rclone",
    "tests.servers.rclone_serve",
    "tests.servers.s3",
    "tests.servers.webdav",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--scale", action="store_true", default=False,
                     help="also run the tests marked 'scale' (100,000 files: minutes, not in the default run)")


#: The longest tests (minutes on SFTP: many short ``escale`` processes), longest
#: first: run first, so that the xdist workers are not left with one of them
#: alone at the end of the run (a test's place in the run changes nothing else).
#: ``tests/run.sh`` schedules with ``--dist worksteal``: with ``--dist load`` a
#: worker keeps the share of the first tests it was handed at the start, and
#: one that drew the longest tests ran minutes after the others had ended.
LONG_FIRST = (
    "tests/faults/test_index_crash.py::test_crash_during_parallel_big_transfers_in_the_index_layout",
    "tests/faults/test_crash.py::test_crash_on_network_relays",
    "tests/scenarios/test_convergence.py::test_random_operations_converge_without_loss",
    "tests/faults/test_crash.py::test_crash_at_every_step_loses_nothing",
    "tests/faults/test_index_crash.py::",
    "tests/faults/test_s3_many_clients.py::",
    "tests/scenarios/test_index_layout.py::test_five_clients_of_every_mode_converge",
    "tests/daemon/test_watch.py::",
)


def _long_rank(item: pytest.Item) -> int:
    return next((rank for rank, prefix in enumerate(LONG_FIRST) if item.nodeid.startswith(prefix)), len(LONG_FIRST))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_long_rank)  # stable: the others keep their order
    if config.getoption("--scale"):
        return
    skip = pytest.mark.skip(reason="a scale test: run with --scale")
    for item in items:
        if "scale" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def target_memory() -> RelayTarget:
    return memory_target()


@pytest.fixture(scope="session")
def target_file(tmp_path_factory: pytest.TempPathFactory) -> RelayTarget:
    return file_target(str(tmp_path_factory.mktemp("file-relay")))


@pytest.fixture(params=CONFORMANCE_BACKENDS)
def target(request: pytest.FixtureRequest) -> RelayTarget:
    """Each conformance backend in turn."""
    result: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    return result


@pytest.fixture
def relay(target: RelayTarget) -> Iterator[Relay]:
    """An open relay on a fresh repository folder of each backend (closed at
    the end of the test, whether it passed or not)."""
    r = target.relay()
    try:
        r.open()
        yield r
    finally:
        r.close()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read the developer's own configuration."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    os.environ.setdefault("ESCALE_TEST", "1")
