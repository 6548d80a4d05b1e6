"""Listing helpers shared by the backends that parse a server's folder listings."""

from __future__ import annotations

from escale.relay.base import Entry


def unique_entries(entries: list[Entry]) -> list[Entry]:
    """One entry per name: a server may list a name twice for an instant (rclone's
    VFS while a rename replaces an object); the most recently modified is kept."""
    kept: dict[str, Entry] = {}
    for entry in entries:
        seen = kept.get(entry.name)
        if seen is None or (entry.mtime or 0.0) >= (seen.mtime or 0.0):
            kept[entry.name] = entry
    return list(kept.values())
