"""Reading a repository from an operation (``escalectl``): a reader of either
layout that writes nothing while it reads.

A sync client registers itself when it reads the relay; an operation is not a
client, so its readers never do. Their caches live in memory and go with them.
"""

from __future__ import annotations

from typing import Any

from escale.protocol import layout
from escale.protocol.index.repository import IndexRepository
from escale.protocol.repository import RelayState, Repository
from escale.protocol.sealer import Sealer
from escale.relay import Relay


class _PlaceholderReader(Repository):
    """A placeholder-layout reader that never registers."""

    def _register(self, state: RelayState, every: float = 86400.0) -> None:
        return


class _IndexReader(IndexRepository):
    """An index-layout reader that never registers."""

    def _register(self, state: RelayState, every: float = 86400.0) -> None:
        return


def reader_for(layout_name: str, relay: Relay, sealer: Sealer, spool_dir: str | None = None, *,
               maxpagesize: int = 1_000_000_000, **identity: Any) -> Repository:
    """A reader of ``layout_name`` (``placeholder`` or ``index``) on ``relay``.

    ``identity`` may set the reader's ``client_id`` (default: a new one, so that
    nothing on the relay is taken for its own), ``label``, ``receives``,
    ``mode`` and ``puller_count``, which matter to what it computes on behalf
    of a client (pending versions, reclaimable ones). ``spool_dir`` is needed
    only to fetch content."""
    common: dict[str, Any] = {"client_id": layout.new_client_id(), "label": "escalectl", "receives": False,
                              "mode": "upload", "meta_cache": {}, "spool_dir": spool_dir, **identity}
    if layout_name == "index":
        return _IndexReader(relay, sealer, maxpagesize=maxpagesize, **common)
    return _PlaceholderReader(relay, sealer, **common)
