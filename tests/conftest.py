"""Session-wide fixtures: relay targets on real servers, and helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.relay.backends import CONFORMANCE_BACKENDS
from tests.servers.ftp import *  # noqa: F403
from tests.servers.local import file_target, memory_target
from tests.servers.rclone import *  # noqa: F403
from tests.servers.rclone_serve import *  # noqa: F403
from tests.servers.sshd import *  # noqa: F403
from tests.servers.target import RelayTarget
from tests.servers.webdav import *  # noqa: F403

pytest_plugins: list[str] = []


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
def relay(target: RelayTarget) -> Iterator:
    """An open relay on a fresh repository folder of each backend."""
    r = target.relay()
    r.open()
    try:
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
