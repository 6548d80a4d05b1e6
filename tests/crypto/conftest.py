"""Fixtures for the crypto tests: real key files, real repository headers."""

from __future__ import annotations

import pytest

from escale.crypto import (
    ALGORITHMS,
    Envelope,
    KdfParams,
    KeySecret,
    create_repository_header,
    generate_key_file,
    load_secret,
)

#: scrypt parameters cheap enough for tests (the default costs ~0.4 s and 128 MiB).
CHEAP_KDF = KdfParams(n=2**10, r=8, p=1)
ALL_ALGORITHMS = tuple(ALGORITHMS)
#: The pure-Python Blowfish runs at ~1 MB/s: big sizes only in slow tests.
SLOW_ALGORITHMS = ("blowfish.blowfish",)


@pytest.fixture(scope="session")
def key_secret(tmp_path_factory: pytest.TempPathFactory) -> KeySecret:
    path = tmp_path_factory.mktemp("keys") / "escale.key"
    generate_key_file(str(path))
    return load_secret(str(path), None)


@pytest.fixture(scope="session")
def other_key_secret(tmp_path_factory: pytest.TempPathFactory) -> KeySecret:
    path = tmp_path_factory.mktemp("keys") / "other.key"
    generate_key_file(str(path))
    return load_secret(str(path), None)


@pytest.fixture(scope="session")
def repositories(key_secret: KeySecret) -> dict[str, tuple[bytes, Envelope]]:
    """One repository header and envelope per algorithm, all with the same key."""
    return {name: create_repository_header(name, key_secret) for name in ALL_ALGORITHMS}


@pytest.fixture(params=ALL_ALGORITHMS)
def algorithm(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def envelope(algorithm: str, repositories: dict[str, tuple[bytes, Envelope]]) -> Envelope:
    return repositories[algorithm][1]
