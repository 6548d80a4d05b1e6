"""Fixtures of the scenario tests: the same worlds as the fault tests."""

from tests.faults.conftest import core_target, file_world, world

__all__ = ["core_target", "file_world", "world"]
