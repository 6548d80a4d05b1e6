"""``escalectl clients``: the clients registered on a relay; forget one that is gone."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from escale.cli.ctl_status import table
from escale.cli.ctl_support import (
    add_json_option,
    add_lease_wait_option,
    add_section_option,
    confirm,
    load,
    pick_client,
    print_json,
)
from escale.errors import EX_OK, UsageError
from escale.ops.clients import ClientInfo, forget_client, list_clients
from escale.sync.receivers import describe_age, short_id

DESCRIPTION = """\
escalectl clients [SECTION]
    List the clients registered on the relay of SECTION (optional when the
    file has one section): label, id, mode, whether it receives, when this
    machine last saw a sign of life from it, and how many versions on the
    relay wait for its acknowledgement. A receiver not seen for longer than
    'stale receiver' is marked stale.

escalectl clients forget CLIENT [SECTION]
    Forget CLIENT (its label, its id, or a prefix of its id that names one
    client only): reclaim no longer waits for it, so the payloads it pinned
    are reclaimed at the next pass of any client. Use it for a client that is
    gone for good (a machine given away, a folder that was registered by
    mistake). If it ever runs again, it registers again and misses what was
    reclaimed meanwhile. Takes the relay's lease.
"""

EPILOG = """\
examples:
  escalectl clients
  escalectl clients documents --json
  escalectl clients forget old-laptop --yes
  escalectl clients forget 3f2a9c documents --yes

exit codes: 0 done, 64 bad arguments, unknown section, or a CLIENT that names
no client or several, 69 relay unreachable, 70 no repository on the relay,
75 lease busy, 78 configuration error
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "clients", help="list the clients registered on a relay, or forget one",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("words", nargs="*", metavar="[forget CLIENT] [SECTION]",
                        help="SECTION to list, or 'forget CLIENT [SECTION]'")
    add_section_option(parser)
    parser.add_argument("--yes", action="store_true", help="forget without asking")
    add_lease_wait_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def _note(info: ClientInfo) -> str:
    if info.forgotten:
        return "forgotten"
    notes = []
    if info.me:
        notes.append("this client")
    if info.stale:
        notes.append("STALE")
    return ", ".join(notes)


def run(args: argparse.Namespace) -> int:
    words: list[str] = list(args.words)
    forgetting = bool(words) and words[0] == "forget"
    if forgetting:
        words = words[1:]
        if not words:
            raise UsageError("'escalectl clients forget' needs the CLIENT to forget (see 'escalectl clients')")
        who, words = words[0], words[1:]
    if len(words) > 1 or (words and args.section and words[0] != args.section):
        raise UsageError("give one SECTION (or -r SECTION)")
    config = load(args)
    settings = pick_client(config, words[0] if words else args.section)
    if forgetting:
        question = (f"forget client {who!r} on {settings.relay.describe()}? Reclaim will no longer wait "
                    "for it, and it misses what is reclaimed meanwhile")
        if not confirm(question, assume_yes=args.yes):
            print("nothing done")
            return EX_OK
        info = forget_client(settings, who, lease_wait=args.wait)
        if args.json:
            print_json(dataclasses.asdict(info))
        else:
            print(f"forgot client {info.label} ({info.client}) on {settings.relay.describe()}: reclaim goes on "
                  "without it from the next pass")
        return EX_OK
    report = list_clients(settings)
    if args.json:
        print_json(dataclasses.asdict(report))
        return EX_OK
    print(f"clients registered on {report.relay} (as seen by [{report.section}]):")
    if not report.clients:
        print("none")
        return EX_OK
    rows = [["LABEL", "ID", "MODE", "RECEIVES", "LAST SEEN HERE", "PENDING", "NOTE"]]
    for info in report.clients:
        rows.append([info.label, short_id(info.client), info.mode, "yes" if info.receives else "no",
                     _when(info.last_seen), str(info.pending) if info.receives else "-", _note(info)])
    print(table(rows))
    stale = [c for c in report.clients if c.stale]
    for info in stale:
        print(f"{info.label} ({short_id(info.client)}) has not been seen for more than "
              f"{describe_age(settings.stale_receiver)}; if it is gone for good: "
              f"escalectl clients forget {short_id(info.client)}")
    return EX_OK
