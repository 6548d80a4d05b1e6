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
from typing import Any

from escale.cli.ctl_start import say
from escale.cli.ctl_status import table
from escale.cli.ctl_support import add_json_option, add_section_option, confirm, load, pick_client, print_json
from escale.errors import EX_OK, UsageError
from escale.ops import leases


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


def run(args: argparse.Namespace) -> int:
    config = load(args)
    settings = pick_client(config, args.section)
    own = leases.own_client_id(settings)
    relay, sealer = leases.open_repository(settings)
    try:
        rows = leases.lease_rows(relay, sealer, own)
        message = None
        generation = args.break_generation
        if generation is not None:
            row = leases.row_to_break(rows, generation, relay)
            if row.state == "released":
                message = f"lease generation {generation} is already released; nothing changed"
            else:
                holder = row.holder_text()
                if not confirm(f"Break lease generation {generation} held by {holder}?", assume_yes=args.yes):
                    raise UsageError("not confirmed; nothing changed")
                leases.break_lease(relay, sealer, generation, own)
                message = f"lease generation {generation} marked released (was held by {holder})"
            rows = leases.lease_rows(relay, sealer, own)
        where = relay.describe()
    finally:
        relay.close()
    if args.json:
        print_json({"client": settings.name, "relay": where, "leases": [r.to_json() for r in rows],
                    "message": message})
        return EX_OK
    if message:
        print(message)
    if not rows:
        say(args, f"no lease on relay {where}")
        return EX_OK
    say(args, f"leases on relay {where} ([{settings.name}]):")
    lines = [["GENERATION", "STATE", "HOLDER", "HOST", "PID", "OPERATION", "RENEWALS"]]
    for row in rows:
        if row.record is None:
            lines.append([str(row.generation), "unreadable", "?", "?", "?", "?", "?"])
            continue
        record = row.record
        who = record.label + (" (this client)" if row.mine else "")
        lines.append([str(row.generation) + (" *" if row.current else ""), row.state, who, record.host,
                      str(record.pid), record.operation, str(record.beat)])
    print(table(lines))
    return EX_OK
