"""Relay storage: bytes at relative names (see :mod:`escale.relay.base`)."""

from __future__ import annotations

import importlib

from escale.errors import ConfigError
from escale.relay.base import Capabilities, Entry, Relay, Usage
from escale.relay.spec import NATIVE_PROTOCOLS, RCLONE_PROTOCOLS, RelaySpec

__all__ = ["Capabilities", "Entry", "Relay", "RelaySpec", "Usage", "make_relay"]


def make_relay(spec: RelaySpec) -> Relay:
    """A closed backend for ``spec`` (call ``open()`` on it).

    The backend module is imported on demand, so that a missing optional library
    only matters to the protocol that needs it. Raises ConfigError for an unknown
    protocol.
    """
    module_name = NATIVE_PROTOCOLS.get(spec.protocol)
    if module_name is None and spec.protocol in RCLONE_PROTOCOLS:
        module_name = "rclone"
    if module_name is None:
        raise ConfigError(f"unknown relay protocol {spec.protocol!r}")
    module = importlib.import_module(f"escale.relay.{module_name}")
    factory = module.from_spec
    relay: Relay = factory(spec)
    return relay
