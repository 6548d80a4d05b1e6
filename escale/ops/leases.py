"""``escalectl leases``: read a relay's lease generations, and break one.

Reading needs the client's key (records are sealed) but no lease: nothing is
written, nobody registers. Breaking a generation rewrites its record as a
*released* one of this process (:func:`escale.protocol.lease.write_released`,
new token; the record is never deleted, so generation numbers keep growing):
the next client may take the lease at once, and the old holder, if still alive,
loses it at its next renewal and commits nothing more.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from escale.config.settings import ClientSettings
from escale.errors import CryptoError, ProtocolError, RelayNotFound, UsageError
from escale.ops.common import existing_sealer, open_relay
from escale.protocol import layout
from escale.protocol.lease import list_leases, new_record, read_claim, read_record, write_released
from escale.protocol.objects import LeaseRecord
from escale.protocol.sealer import Sealer
from escale.relay import Relay
from escale.sync.client import state_dir_for
from escale.sync.state import StateDB

log = logging.getLogger(__name__)

#: Client id written in a broken record when the section never ran here.
BREAKER_ID = "escalectl"


@dataclass(frozen=True)
class LeaseRow:
    """One lease generation on the relay.

    ``state``: ``held`` (the current generation, not released), ``superseded``
    (an older one, not released), ``released``, ``claimed`` (claimed, no
    record: a contender taking it, or one that died there; ``record`` is the
    first readable claim's), or ``unreadable`` (its record, or every claim,
    does not open: ``error`` says why, ``record`` is None). ``current``: the
    highest generation listed. ``mine``: held under the section's own client id.
    """

    generation: int
    current: bool
    state: str
    record: LeaseRecord | None = None
    mine: bool = False
    error: str | None = None

    def holder_text(self) -> str:
        """Who holds it, for messages: ``LABEL on HOST (pid PID, OPERATION)``."""
        if self.record is None:
            return "an unreadable record"
        r = self.record
        return f"{r.label} on {r.host} (pid {r.pid}, {r.operation})"

    def to_json(self) -> dict[str, Any]:
        """The row as ``escalectl --json leases`` gives it."""
        row: dict[str, Any] = {"generation": self.generation, "current": self.current}
        if self.record is None:
            row.update(state=self.state, error=self.error)
            return row
        r = self.record
        row.update(state=self.state, holder=r.holder, label=r.label, host=r.host, pid=r.pid,
                   operation=r.operation, beat=r.beat, mine=self.mine)
        return row


def own_client_id(settings: ClientSettings) -> str | None:
    """The client id of section ``settings`` on this machine; None when its
    state database does not exist (the section never ran here; nothing is created)."""
    path = os.path.join(state_dir_for(settings), "state.db")
    if not os.path.exists(path):
        return None
    db = StateDB(path)
    try:
        return db.client_id()
    finally:
        db.close()


def open_repository(settings: ClientSettings) -> tuple[Relay, Sealer]:
    """Open ``settings``' relay and its existing repository (never creates one).

    Raises RelayNotFound when the relay holds no escale repository, and the
    relay's and the key's errors otherwise. The caller closes the relay.
    """
    relay = open_relay(settings.relay, attempts=5)
    try:
        if not relay.exists(layout.HEADER):
            raise RelayNotFound(f"no escale repository on relay {relay.describe()}", name=layout.HEADER)
        sealer = existing_sealer(relay, settings)
    except BaseException:
        relay.close()
        raise
    return relay, sealer


def lease_rows(relay: Relay, sealer: Sealer, own: str | None) -> list[LeaseRow]:
    """Every lease generation listed on ``relay``, oldest first: those with a
    record, and those with only claims. Folders and foreign names in
    ``lease/`` are left out (and logged); a generation that vanished while
    being read is left out too."""
    listing = list_leases(relay)
    highest = listing.newest
    rows = []
    for generation in sorted(set(listing.generations) | set(listing.claims)):
        current = generation == highest
        claimed = generation not in listing.generations
        try:
            record = _claimant(relay, sealer, generation, listing.claims[generation]) if claimed else \
                read_record(relay, sealer, generation)
        except (ProtocolError, CryptoError) as exc:
            rows.append(LeaseRow(generation, current, "unreadable", error=str(exc)))
            continue
        if record is None:
            continue
        state = ("claimed" if claimed else "released" if record.released else "held" if current
                 else "superseded")
        rows.append(LeaseRow(generation, current, state, record, mine=record.holder == own))
    return rows


def _claimant(relay: Relay, sealer: Sealer, generation: int, tokens: list[str]) -> LeaseRecord | None:
    """The record in the first readable claim of ``tokens``; None when every
    one vanished; the last error when none opens."""
    error: ProtocolError | CryptoError | None = None
    for token in sorted(tokens):
        try:
            record = read_claim(relay, sealer, generation, token)
        except (ProtocolError, CryptoError) as exc:
            error = exc
            continue
        if record is not None:
            return record
    if error is not None:
        raise error
    return None


def row_to_break(rows: list[LeaseRow], generation: int, relay: Relay) -> LeaseRow:
    """The row of ``generation``; UsageError naming the listed generations when there is none."""
    for row in rows:
        if row.generation == generation:
            return row
    listed = ", ".join(str(r.generation) for r in rows) or "none"
    raise UsageError(f"no lease generation {generation} on relay {relay.describe()} (generations: {listed})")


def break_lease(relay: Relay, sealer: Sealer, generation: int, own: str | None) -> LeaseRecord:
    """Mark lease ``generation`` released with a record of this process (held
    under ``own``, or :data:`BREAKER_ID`); return the record written.

    The caller has confirmed it with the user; whatever the record held is
    replaced. Relay errors propagate.
    """
    record = new_record(generation, holder=own or BREAKER_ID, label="escalectl leases --break", operation="break")
    written = write_released(relay, sealer, record)
    log.info("lease generation %d of %s marked released", generation, relay.describe())
    return written
