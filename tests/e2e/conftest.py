from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster
from tests.relay.backends import PRIMARY_PROCESS_BACKENDS, PROCESS_BACKENDS
from tests.servers.target import RelayTarget


@pytest.fixture(params=PROCESS_BACKENDS)
def process_target(request: pytest.FixtureRequest) -> RelayTarget:
    """Each backend a separate escale process can reach, in turn."""
    target: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    return target


@pytest.fixture
def cluster(tmp_path: Path, process_target: RelayTarget) -> Cluster:
    return Cluster(str(tmp_path), process_target, process_target.new_folder())


@pytest.fixture(params=PRIMARY_PROCESS_BACKENDS)
def primary_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Cluster:
    """A cluster on one server of each backend module, in turn."""
    target: RelayTarget = request.getfixturevalue(f"target_{request.param}")
    return Cluster(str(tmp_path), target, target.new_folder())


@pytest.fixture
def file_cluster(tmp_path: Path, target_file: RelayTarget) -> Cluster:
    return Cluster(str(tmp_path), target_file, target_file.new_folder())
