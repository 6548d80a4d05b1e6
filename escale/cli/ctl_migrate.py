"""``escalectl migrate [-r SECTION] DESTINATION``: move a relay repository to another relay."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from escale.cli.ctl_support import (
    add_json_option,
    add_lease_wait_option,
    add_section_option,
    load,
    pick_client,
    print_json,
)
from escale.cli.ops_progress import progress_for
from escale.cli.progress import human_size
from escale.errors import EX_OK
from escale.ops.migrate import migrate

DESCRIPTION = """\
Copy a client's relay repository to another relay, object by object, sealed
as stored (names and bytes unchanged), each read back from the destination and
compared; then point the client's section of the configuration file at the new
relay (the file is rewritten atomically; the old one is kept as
FILE.bak-<timestamp>). The relay's lease is held during the copy, so other
clients wait. If anything fails, the configuration file is left unchanged.

DESTINATION is a relay address, as asked by 'escale -i'
(protocol://[user@]host[:port]/path, or file:///path), the other keys of the
section (password, keys, certificates) applying to it; or another
configuration file with a section of the same name, whose relay settings are
taken. The destination must hold no escale repository unless --force.

Other machines keep their own configuration: point them at the new relay too
(stop their daemon, edit the address). The old relay is left as it was.
"""

EPILOG = """\
examples:
  escalectl migrate -r my-repository sftp://me@backup.example.org/srv/escale
  escalectl migrate file:///mnt/nas/escale-relay
  escalectl migrate -r my-repository new-escale.conf

exit codes: 0 done, 64 bad arguments or unknown section, 69 a relay is unreachable,
70 no repository on the source or a copy read back differently, 73 destination not empty
(use --force), 75 lease busy or lost, 78 configuration error (see doc/operations.rst)
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate", help="move a relay repository to another relay and update the configuration",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("destination", metavar="DESTINATION",
                        help="relay address (protocol://host/path) or configuration file")
    add_section_option(parser)
    parser.add_argument("--force", action="store_true",
                        help="copy even if the destination holds a repository (same names are replaced)")
    add_lease_wait_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    settings = pick_client(config, args.section)
    with progress_for("migrate", args.json) as progress:
        report = migrate(config, settings.name, args.destination, force=args.force, lease_wait=args.wait,
                         on_progress=progress)
    if args.json:
        print_json(dataclasses.asdict(report))
        return EX_OK
    print(f"copied and verified {report.objects} objects ({human_size(report.bytes)}) of [{report.section}] "
          f"from {report.source} to {report.destination}")
    print(f"{report.config} now points [{report.section}] at {report.destination}; "
          f"previous file kept as {report.config_backup}")
    return EX_OK
