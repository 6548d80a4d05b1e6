"""Targets that need no server: a local folder and the in-memory relay."""

from __future__ import annotations

import os

from escale.relay import RelaySpec
from tests.servers.target import RelayTarget


def file_target(base: str) -> RelayTarget:
    """Repositories as folders under ``base``."""

    def spec_for(folder: str) -> RelaySpec:
        return RelaySpec(protocol="file", directory=os.path.join(base, folder))

    def config_for(folder: str) -> dict[str, str]:
        return {"protocol": "file", "relay directory": os.path.join(base, folder)}

    def plant(folder: str, raw_name: str, data: bytes) -> bool:
        path = os.path.join(base, folder, raw_name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)
        return True

    return RelayTarget("file", spec_for, config_for, plant=plant)


def memory_target() -> RelayTarget:
    """In-process repositories; not usable by a separate escale process."""

    def spec_for(folder: str) -> RelaySpec:
        return RelaySpec(protocol="memory", directory=folder)

    def config_for(folder: str) -> dict[str, str]:
        raise NotImplementedError("the memory relay lives inside one process")

    return RelayTarget("memory", spec_for, config_for)
