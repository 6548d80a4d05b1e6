"""Fixtures of the fault tests: a :class:`World` per backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.world import World
from tests.servers.target import RelayTarget

#: The backends every fault and scenario test runs on: a local folder and one
#: server of each network protocol (pyftpdlib, WsgiDAV, OpenSSH).
CORE_BACKENDS = ["file", "ftp", "webdav", "sftp"]


@pytest.fixture(params=CORE_BACKENDS)
def core_target(request: pytest.FixtureRequest) -> RelayTarget:
    target: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    return target


@pytest.fixture
def world(tmp_path: Path, core_target: RelayTarget) -> World:
    return World(str(tmp_path), core_target, core_target.new_folder())


@pytest.fixture
def file_world(tmp_path: Path, target_file: RelayTarget) -> World:
    return World(str(tmp_path), target_file, target_file.new_folder())
