"""Fixtures of the protocol tests: a :class:`World` on a local-folder relay."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.world import World
from tests.servers.target import RelayTarget


@pytest.fixture
def file_world(tmp_path: Path, target_file: RelayTarget) -> World:
    return World(str(tmp_path), target_file, target_file.new_folder())
