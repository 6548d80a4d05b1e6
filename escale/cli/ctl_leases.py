"""``escalectl leases``: list the relay's lease generations, or break one.

The relay's lease (``lease/<generation>`` objects) lets one client at a time
write to the repository. This command opens the relay of a client (``-r``) as
the client would, with its key, and lists every lease generation still on the
relay: its state, holder (client label and id), host, pid, operation and
renewal count. The highest generation is the current one.

``--break GENERATION`` overwrites that generation's record with a *released*
record of its own (new token; the record is never deleted, so generation
numbers keep growing): the next client may take the lease at once, and the old
holder, if still alive, loses the lease at its next renewal and commits
nothing more. Use it only for a holder you know is gone for good (a dead
machine); a lease left by a crashed client also expires by itself after
``lock timeout``. Asks for confirmation on a terminal; elsewhere ``--yes`` is
required.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
from typing import Any

from escale.cli.ctl_start import say
from escale.cli.ctl_status import table
from escale.cli.ctl_support import add_json_option, add_section_option, confirm, load, pick_client, print_json
from escale.config.settings import ClientSettings
from escale.crypto.keys import load_secret
from escale.errors import EX_OK, CryptoError, ProtocolError, RelayNotFound, UsageError
from escale.protocol import layout
from escale.protocol.envelope import Sealer
from escale.protocol.header import open_repository
from escale.protocol.lease import LeaseManager
from escale.protocol.objects import LeaseRecord
from escale.relay import Relay, make_relay
from escale.relay.retry import RetryingRelay
from escale.sync.client import state_dir_for
from escale.sync.state import StateDB


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "leases", help="list the relay's lease generations, or break one", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_section_option(parser)
    parser.add_argument("--break", dest="break_generation", type=int, metavar="GENERATION",
                        help="mark this lease generation released (see above)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add_json_option(parser)
    parser.set_defaults(run=run)


def open_relay_repository(settings: ClientSettings) -> tuple[Relay, Sealer]:
    """Open ``settings``' relay and its existing repository (never creates one).

    Raises RelayNotFound when the relay holds no escale repository, and the
    relay's and the key's errors otherwise. The caller closes the relay.
    """
    relay: Relay = RetryingRelay(make_relay(settings.relay))
    relay.open()
    try:
        try:
            relay.stat(layout.HEADER)
        except RelayNotFound:
            raise RelayNotFound(f"no escale repository on relay {relay.describe()}", name=layout.HEADER) from None
        secret = (lambda: load_secret(settings.key_file, settings.passphrase)) if settings.encryption else None
        sealer = open_repository(relay, encryption=settings.encryption, secret=secret)
    except BaseException:
        relay.close()
        raise
    return relay, sealer


def _own_id(settings: ClientSettings) -> str | None:
    path = os.path.join(state_dir_for(settings), "state.db")
    if not os.path.exists(path):
        return None
    db = StateDB(path)
    try:
        return db.client_id()
    finally:
        db.close()


def _rows(relay: Relay, manager: LeaseManager, own: str | None) -> list[dict[str, Any]]:
    try:
        entries = relay.list(layout.LEASES)
    except RelayNotFound:
        entries = []
    generations = sorted(g for e in entries if (g := layout.parse_lease(e.name)) is not None)
    highest = max(generations, default=0)
    rows = []
    for generation in generations:
        row: dict[str, Any] = {"generation": generation, "current": generation == highest}
        try:
            record = manager.read(relay, generation)
        except (ProtocolError, CryptoError) as exc:
            row.update(state="unreadable", error=str(exc))
            rows.append(row)
            continue
        if record is None:
            continue
        state = "released" if record.released else "held" if generation == highest else "superseded"
        row.update(state=state, holder=record.holder, label=record.label, host=record.host, pid=record.pid,
                   operation=record.operation, beat=record.beat, mine=record.holder == own)
        rows.append(row)
    return rows


def _break(args: argparse.Namespace, relay: Relay, manager: LeaseManager, rows: list[dict[str, Any]],
           own: str | None) -> str:
    generation = args.break_generation
    row = next((r for r in rows if r["generation"] == generation), None)
    if row is None:
        listed = ", ".join(str(r["generation"]) for r in rows) or "none"
        raise UsageError(f"no lease generation {generation} on relay {relay.describe()} (generations: {listed})")
    if row["state"] == "released":
        return f"lease generation {generation} is already released; nothing changed"
    holder = (f"{row['label']} on {row['host']} (pid {row['pid']}, {row['operation']})"
              if row["state"] != "unreadable" else "an unreadable record")
    if not confirm(f"Break lease generation {generation} held by {holder}?", assume_yes=args.yes):
        raise UsageError("not confirmed; nothing changed")
    record = LeaseRecord(generation=generation, holder=own or "escalectl", label="escalectl leases --break",
                         host=socket.gethostname(), pid=os.getpid(), operation="break",
                         token=secrets.token_hex(16), beat=0, released=True)
    manager.write(relay, record)
    return f"lease generation {generation} marked released (was held by {holder})"


def run(args: argparse.Namespace) -> int:
    config = load(args)
    settings = pick_client(config, args.section)
    own = _own_id(settings)
    relay, sealer = open_relay_repository(settings)
    try:
        manager = LeaseManager(relay, sealer, client_id=own or "escalectl", label=settings.label,
                               timeout=settings.lock_timeout)
        rows = _rows(relay, manager, own)
        message = None
        if args.break_generation is not None:
            message = _break(args, relay, manager, rows, own)
            rows = _rows(relay, manager, own)
        where = relay.describe()
    finally:
        relay.close()
    if args.json:
        print_json({"client": settings.name, "relay": where, "leases": rows, "message": message})
        return EX_OK
    if message:
        print(message)
    if not rows:
        say(args, f"no lease on relay {where}")
        return EX_OK
    say(args, f"leases on relay {where} ([{settings.name}]):")
    lines = [["GENERATION", "STATE", "HOLDER", "HOST", "PID", "OPERATION", "RENEWALS"]]
    for row in rows:
        if row["state"] == "unreadable":
            lines.append([str(row["generation"]), "unreadable", "?", "?", "?", "?", "?"])
            continue
        who = row["label"] + (" (this client)" if row["mine"] else "")
        lines.append([str(row["generation"]) + (" *" if row["current"] else ""), row["state"], who, row["host"],
                      str(row["pid"]), row["operation"], str(row["beat"])])
    print(table(lines))
    return EX_OK
