"""``escalectl clients``: list the clients registered on a relay, and forget one.

Listing reads the relay (no lease; nothing is written, nobody registers) and
the state database of the configuration section, if it exists, for what this
machine observed: when it last saw each receiver's sign of life (see
:mod:`escale.sync.receivers`).

Forgetting a client replaces its registration ``clients/<id>`` with a
*forgotten* marker, under the relay's lease: reclaim then goes on without it,
even for versions whose placeholders list it as a receiver. The marker, not a
deletion, is what releases it: a registration that merely went missing (a
relay that lost objects) releases nobody. A forgotten client that runs again
registers again, and misses what was reclaimed meanwhile.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

from escale.config.settings import ClientSettings
from escale.errors import UsageError
from escale.ops.common import escalectl_lease, existing_sealer, open_relay
from escale.ops.readers import reader_for
from escale.protocol import layout
from escale.protocol.header import recorded_layout
from escale.protocol.objects import ClientRecord
from escale.protocol.repository import Repository
from escale.protocol.sealer import Sealer
from escale.relay import Relay
from escale.sync.client import state_dir_for
from escale.sync.receivers import pending_for, short_id
from escale.sync.state import StateDB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientInfo:
    """One registration as ``escalectl clients`` shows it.

    ``last_seen``: when this machine (the section's passes, recorded in its
    state database) first saw the client's current sign of life, on this
    machine's clock (now, when the relay shows a newer one than the last pass
    saw); None when no pass of the section observed it (or the client does not
    receive). ``stale``: not seen for
    longer than the section's ``stale receiver``. ``pending``: versions on the
    relay waiting for its acknowledgement. ``me``: the section's own client.
    """

    client: str
    label: str
    mode: str
    receives: bool
    forgotten: bool
    me: bool
    last_seen: float | None
    stale: bool
    pending: int


@dataclass
class ClientsReport:
    """The registrations of the repository of section ``section``."""

    section: str
    relay: str
    clients: list[ClientInfo] = field(default_factory=list)


def _state_db(settings: ClientSettings) -> StateDB | None:
    """The section's state database when it exists (never created here)."""
    path = os.path.join(state_dir_for(settings), "state.db")
    return StateDB(path) if os.path.exists(path) else None


def _reader(relay: Relay, sealer: Sealer, settings: ClientSettings, me: str) -> Repository:
    """A reader of the repository on ``relay`` (either layout) computing on behalf of client ``me``."""
    return reader_for(recorded_layout(relay), relay, sealer, client_id=me, label=settings.label,
                      receives=settings.receives, mode=settings.mode, puller_count=settings.puller_count)


def list_clients(settings: ClientSettings, *, now: float | None = None) -> ClientsReport:
    """Every client registered on the relay of ``settings``, by label.

    Raises OperationError when the relay holds no repository, and what opening
    the relay and the repository raises (unreachable, wrong key).
    """
    now = time.time() if now is None else now
    db = _state_db(settings)
    try:
        me = (db.get_setting("client_id") if db is not None else None) or ""
        observed = db.receiver_observations() if db is not None else {}
    finally:
        if db is not None:
            db.close()
    relay = open_relay(settings.relay)
    try:
        sealer = existing_sealer(relay, settings)
        repo = _reader(relay, sealer, settings, me)
        state = repo.read_state()
        report = ClientsReport(settings.name, relay.describe())
        for client, record in sorted(state.clients.items(), key=lambda kv: (kv[1].label, kv[0])):
            seen = observed.get(client)
            last_seen = None
            if seen is not None and not record.forgotten:
                stamp = "none" if record.seen is None else str(record.seen)
                # a stamp that changed since this machine's last pass is a sign of life now
                last_seen = seen[1] if seen[0] == stamp else now
            stale = last_seen is not None and client != me and now - last_seen > settings.stale_receiver
            report.clients.append(ClientInfo(
                client=client, label=record.label, mode=record.mode, receives=record.receives,
                forgotten=record.forgotten, me=client == me, last_seen=last_seen, stale=stale,
                pending=0 if record.forgotten else pending_for(repo, state, client)))
        return report
    finally:
        relay.close()


def resolve(records: dict[str, ClientRecord], who: str) -> ClientRecord:
    """The registration ``who`` names: a whole id, a label, or an id prefix.

    An exact id wins, then an exact label, then an id prefix (lower case hex).
    Raises UsageError when nothing matches or several do (listing them).
    """
    wanted = who.strip()
    if not wanted:
        raise UsageError("name the client to forget by its label or its id (or an id prefix)")
    if wanted in records:
        return records[wanted]
    by_label = [r for r in records.values() if r.label == wanted]
    matches = by_label or [r for c, r in records.items() if c.startswith(wanted.lower())]
    if not matches:
        raise UsageError(f"no registered client is called or starts with {wanted!r} "
                         "(see 'escalectl clients')")
    if len(matches) > 1:
        names = ", ".join(f"{r.label} ({short_id(r.client)})" for r in sorted(matches, key=lambda r: r.client))
        raise UsageError(f"{wanted!r} names several clients: {names}; give more of the id")
    return matches[0]


def forget_client(settings: ClientSettings, who: str, *, lease_wait: float | None = None) -> ClientInfo:
    """Forget client ``who`` (see :func:`resolve`) on the relay of ``settings``.

    Under the relay's lease, its registration is replaced by a forgotten
    marker, so that reclaim goes on without it. Refuses (UsageError) the
    section's own client and a name that matches nothing or several clients;
    forgetting a client already forgotten changes nothing. Raises LeaseBusy
    when the lease stays busy for ``lease_wait`` seconds (None: the lock
    timeout plus 10 s), OperationError when there is no repository.
    """
    db = _state_db(settings)
    try:
        me = (db.get_setting("client_id") if db is not None else None) or ""
    finally:
        if db is not None:
            db.close()
    relay = open_relay(settings.relay)
    try:
        sealer = existing_sealer(relay, settings)
        with escalectl_lease(relay, settings, sealer, "forget", lease_wait) as lease:
            state = _reader(relay, sealer, settings, me).read_state()
            record = resolve(state.clients, who)
            if record.client == me:
                raise UsageError(f"{record.label} ({short_id(record.client)}) is section [{settings.name}] "
                                 "itself: it would register again at its next pass")
            info = ClientInfo(client=record.client, label=record.label, mode=record.mode,
                              receives=record.receives, forgotten=True, me=False, last_seen=None, stale=False,
                              pending=0)
            if record.forgotten:
                log.info("client %s (%s) was forgotten already", record.label, record.client)
                return info
            marker = ClientRecord(record.client, record.label, False, record.mode, seen=record.seen,
                                  forgotten=True)
            name = layout.client_name(record.client)
            lease.check()
            relay.put_bytes(name, sealer.seal(name, marker.encode()))
            log.warning("forgot client %s (%s) on %s: reclaim no longer waits for it", record.label,
                        record.client, relay.describe())
            return info
    finally:
        relay.close()

