"""Helpers for the whole-repository operation tests: real clients, real passes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

from escale.config.settings import ClientSettings
from escale.crypto import generate_key_file
from escale.errors import RelayNotFound
from escale.relay import RelaySpec, make_relay
from escale.sync.client import PassReport, SyncClient


def make_settings(base: str, name: str, spec: RelaySpec, *, key_file: str | None = None,
                  mode: str = "shared", lock_timeout: float = 10.0) -> ClientSettings:
    """Settings of client ``name`` with its local folder under ``base``."""
    return ClientSettings(
        name=name, local_path=os.path.join(base, name), relay=spec, mode=mode,  # type: ignore[arg-type]
        encryption="aes-256-gcm" if key_file else None, key_file=key_file, lock_timeout=lock_timeout,
    )


def key_file(base: str) -> str:
    path = os.path.join(base, "escale.key")
    if not os.path.exists(path):
        generate_key_file(path)
    return path


def write(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(data)


def tree(root: str) -> dict[str, bytes]:
    """Every user file under ``root`` (escale's own folder left out)."""
    found: dict[str, bytes] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".escale"]
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root).replace(os.sep, "/")] = handle.read()
    return found


def sync(*clients: ClientSettings, rounds: int = 2) -> list[PassReport]:
    """Run ``rounds`` passes of every client in turn; fail on any pass error."""
    reports = []
    for _ in range(rounds):
        for settings in clients:
            report = SyncClient(settings).run_pass()
            assert report.ok and not report.errors, report.errors
            reports.append(report)
    return reports


def relay_objects(spec: RelaySpec) -> dict[str, str]:
    """name -> sha256 of every object on the relay (a fingerprint of its state);
    empty when the repository folder does not even exist."""
    relay = make_relay(spec)
    relay.open()
    try:
        try:
            entries = list(relay.walk(""))
        except RelayNotFound:
            return {}
        return {e.name: hashlib.sha256(relay.get_bytes(e.name)).hexdigest() for e in entries}
    finally:
        relay.close()


def wipe(spec: RelaySpec, folder: str = "") -> None:
    """Delete every object below ``folder`` of the relay (the relay lost them)."""
    relay = make_relay(spec)
    relay.open()
    try:
        for entry in list(relay.walk(folder)):
            relay.delete(entry.name)
    finally:
        relay.close()


def with_relay(settings: ClientSettings, spec: RelaySpec) -> ClientSettings:
    return replace(settings, relay=spec)
