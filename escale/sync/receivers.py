"""Other clients as seen from one client: stale receivers and missed versions.

Two checks run at the end of a pass (:func:`after_pass`), each giving one
human line per finding for ``PassReport.warnings`` (shown by ``escalectl
status``) and a WARNING in the log:

* **Stale receivers.** A registration carries a ``seen`` stamp that its client
  refreshes at most about once a day of its own activity (more often when its
  ``stale receiver`` is shorter than four days). The stamp is never compared
  with this machine's clock: this client records, in its state database, when
  *it* first saw each stamp, and a receiver whose stamp has not changed for
  longer than ``stale receiver`` (on this machine's clock) is stale. A stale
  receiver still pins the payloads it has not acknowledged (nothing is dropped
  on its own); the warning names it and ``escalectl clients forget``. The log
  line comes at most once a day per receiver; the status line at every pass.
* **Missed versions.** A version this client should have received whose
  payload was reclaimed before it got it, because the pusher's ``puller
  count`` was reached by other receivers (or because this client had been
  forgotten). Such a version can no longer be fetched: this client keeps its
  own copy (if any) until a newer version comes. Logged once per version;
  listed at every pass while it is the path's latest version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from escale.config.settings import ClientSettings
from escale.protocol.objects import Placeholder
from escale.protocol.repository import RelayState, Repository, placeholder_of
from escale.sync.planner import BaseEntry
from escale.sync.state import StateDB

log = logging.getLogger(__name__)

DAY = 86400.0
#: At most this many missed versions are listed one by one per pass; the rest
#: are counted in one more line.
MISSED_LINES = 20


def refresh_every(stale_after: float) -> float:
    """Seconds between two refreshes of a client's own ``seen`` stamp: a day,
    or a quarter of ``stale receiver`` when that is shorter than four days."""
    return min(DAY, stale_after / 4)


def short_id(client: str) -> str:
    """The first 12 hex digits of a client id (enough to tell clients apart)."""
    return client[:12]


def describe_age(seconds: float) -> str:
    """``seconds`` in the largest whole unit: ``9 days``, ``3 hours``, ``40 s``."""
    for unit, size in (("day", DAY), ("hour", 3600.0), ("minute", 60.0)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.3f} s"


@dataclass(frozen=True)
class StaleReceiver:
    """A receiver whose sign of life has not changed for ``silent_for`` seconds
    (on this machine's clock); ``pending``: versions waiting for it."""

    client: str
    label: str
    silent_for: float
    pending: int

    def line(self) -> str:
        waiting = f"; {self.pending} version(s) wait for it" if self.pending else ""
        return (f"receiver {self.label} ({short_id(self.client)}) not seen for {describe_age(self.silent_for)}"
                f"{waiting}: if it is gone for good, 'escalectl clients forget {short_id(self.client)}' "
                "lets reclaim go on without it")


def pending_for(repo: Repository, state: RelayState, client: str) -> int:
    """How many versions on the relay wait for ``client``'s acknowledgement
    (payload present, ``client`` expected, not acknowledged)."""
    count = 0
    for ph in state.latest.values():
        if ph.deleted or not state.has_payload(ph):
            continue
        if client in state.acks_of(ph):
            continue
        if client in repo.expected_receivers(ph, state):
            count += 1
    return count


def observe_receivers(db: StateDB, state: RelayState, me: str, now: float | None = None) -> dict[str, float]:
    """Record the ``seen`` stamps of the other registered receivers; return,
    per receiver, how long (seconds, this machine's clock) its stamp has been
    unchanged. A stamp first seen now counts 0; a clock that went back resets
    the observation (never makes a receiver look stale)."""
    now = time.time() if now is None else now
    known = db.receiver_observations()
    silent: dict[str, float] = {}
    for client, record in state.clients.items():
        if client == me or not record.receives or record.forgotten:
            continue
        stamp = "none" if record.seen is None else str(record.seen)
        previous = known.get(client)
        if previous is None or previous[0] != stamp or previous[1] > now:
            db.set_receiver_observation(client, stamp, now, previous[2] if previous else None)
            silent[client] = 0.0
        else:
            silent[client] = now - previous[1]
    for client in known:
        current = state.clients.get(client)
        if current is None or current.forgotten or not current.receives:
            db.drop_receiver_observation(client)
    return silent


def stale_receivers(db: StateDB, repo: Repository, state: RelayState, stale_after: float,
                    now: float | None = None) -> list[StaleReceiver]:
    """The other receivers not seen for longer than ``stale_after`` seconds
    (observations updated on the way, see :func:`observe_receivers`)."""
    silent = observe_receivers(db, state, repo.client_id, now)
    return [StaleReceiver(client, state.clients[client].label, age, pending_for(repo, state, client))
            for client, age in sorted(silent.items()) if age > stale_after]


def missed_versions(state: RelayState, me: str, base: Mapping[str, BaseEntry], *,
                    accepts: Callable[[str], bool] = lambda path: True) -> list[tuple[Placeholder, str]]:
    """The latest versions this client (id ``me``, a receiver) can no longer
    receive, each with the reason: reclaimed after other receivers'
    acknowledgements, this client's own missing, while its last synced version
    of the path (``base``) is older. Paths ``accepts`` refuses are left out."""
    out = []
    for path, stored in state.latest_items():
        version = cast(Placeholder, stored)  # only its stored fields are read (RelayState.latest_items)
        if version.kind == "tombstone" or version.pusher == me or state.stored_has_payload(stored):
            continue
        holders = state.acks_of(version)  # (reads the path, key and version alone)
        if not holders or me in holders:
            continue  # taken by this client, or never acknowledged: lost, not reclaimed (repaired by its pusher)
        ph = placeholder_of(state.latest, stored)
        acks = holders - {ph.pusher}
        if not acks:
            continue
        synced = base.get(path)
        if synced is not None and synced.version >= ph.version:
            continue
        if not accepts(path):
            continue
        if ph.puller_count and len(acks) >= ph.puller_count:
            why = f"puller count {ph.puller_count} reached before this client received it"
        else:
            why = "reclaimed before this client received it (was this client forgotten, or new?)"
        out.append((ph, why))
    out.sort(key=lambda item: item[0].path)
    return out


def missed_lines(db: StateDB, state: RelayState, me: str, settings: ClientSettings) -> list[str]:
    """:func:`missed_versions` as warning lines, each logged once per version
    (at most :data:`MISSED_LINES` listed, the rest counted)."""
    if not settings.receives:
        return []
    # without the base first: what it leaves out is a superset, most often
    # empty, and then the base (a read of every synced path) is not needed
    if not missed_versions(state, me, {}, accepts=settings.filters.accepts_file):
        return []
    missed = missed_versions(state, me, db.base(), accepts=settings.filters.accepts_file)
    if not missed:
        return []
    reported = db.missed_reported()
    lines: list[str] = []
    for ph, why in missed:
        line = f"{ph.path}: version {ph.version} from {ph.pusher_label} missed: {why}"
        if (ph.key, ph.version) not in reported:
            log.warning("[%s] %s", settings.name, line)
            db.set_missed_reported(ph.key, ph.version)
        if len(lines) < MISSED_LINES:
            lines.append(line)
    if len(missed) > MISSED_LINES:
        lines.append(f"... and {len(missed) - MISSED_LINES} more missed versions")
    return lines


def stale_lines(db: StateDB, repo: Repository, state: RelayState, settings: ClientSettings,
                now: float | None = None) -> list[str]:
    """:func:`stale_receivers` as warning lines, each logged at most once a day
    per receiver."""
    now = time.time() if now is None else now
    lines = []
    observations = None
    for stale in stale_receivers(db, repo, state, settings.stale_receiver, now):
        line = stale.line()
        lines.append(line)
        observations = observations if observations is not None else db.receiver_observations()
        stamp, first_seen, warned = observations[stale.client]
        if warned is None or now - warned >= DAY or warned > now:
            log.warning("[%s] %s", settings.name, line)
            db.set_receiver_observation(stale.client, stamp, first_seen, now)
    return lines


def after_pass(db: StateDB, repo: Repository, state: RelayState, settings: ClientSettings) -> list[str]:
    """What :class:`~escale.sync.client.SyncClient` runs at the end of a pass:
    refresh this client's own ``seen`` stamp when due (see
    :func:`refresh_every`), then return the warning lines about stale
    receivers and missed versions (logged as the module says). ``state`` is
    the relay state the pass read."""
    repo._register(state, refresh_every(settings.stale_receiver))
    return stale_lines(db, repo, state, settings) + missed_lines(db, state, repo.client_id, settings)
