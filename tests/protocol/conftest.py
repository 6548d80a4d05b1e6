"""Fixtures of the protocol tests: a :class:`World` on a local-folder relay,
and a sealer (aes-256-gcm, a generated key, a fast KDF) per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from escale.crypto import create_repository_header, generate_key_file, load_secret
from escale.crypto.keys import KdfParams
from escale.protocol.sealer import Sealer
from tests.faults.world import World
from tests.servers.target import RelayTarget


@pytest.fixture
def file_world(tmp_path: Path, target_file: RelayTarget) -> World:
    return World(str(tmp_path), target_file, target_file.new_folder())


@pytest.fixture(scope="module")
def sealer(tmp_path_factory: pytest.TempPathFactory) -> Sealer:
    """An aes-256-gcm sealer of a new repository header, with a generated key
    (a fast KDF: the key file holds a key, not a passphrase)."""
    key = tmp_path_factory.mktemp("key") / "escale.key"
    generate_key_file(str(key))
    return create_repository_header("aes-256-gcm", load_secret(str(key), None), kdf=KdfParams(n=2**10, r=8, p=1))[1]
