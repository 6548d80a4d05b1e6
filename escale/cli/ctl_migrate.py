"""``escalectl migrate [-r SECTION] [DESTINATION] [--layout index|placeholder]``: move a relay
repository to another relay, or convert it between its two layouts (or both)."""

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
from escale.config.settings import Config
from escale.errors import EX_OK, UsageError
from escale.ops.migrate import migrate, migrate_layout
from escale.sync import faults

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

--layout index|placeholder converts the repository between the placeholder
layout and the index layout (index = yes), in place, while daemons may run:
the lease is held, so no client commits meanwhile. Every path keeps its
version; the converted layout is read back and every content is decrypted and
hashed against the source before the header switches; the old layout's
objects are removed after. A crash before the switch leaves the old layout in
force (run the command again); after it, the new one (leftovers are removed
by the next migrate or by fix). The repository keeps its identity: other
machines only set index = yes (or no) in their configuration; until then
they stop with a message naming this command. With DESTINATION too, the
repository is copied there first and the copy is converted (the source is
left as it was).
"""

EPILOG = """\
examples:
  escalectl migrate -r my-repository sftp://me@backup.example.org/srv/escale
  escalectl migrate file:///mnt/nas/escale-relay
  escalectl migrate -r my-repository new-escale.conf
  escalectl migrate -r my-repository --layout index
  escalectl migrate -r my-repository --layout placeholder file:///mnt/nas/escale-relay

exit codes: 0 done (also when the repository already has that layout: an
interrupted conversion is finished), 64 bad arguments, unknown section or layout,
65 wrong key or a relay object fails authentication, 69 a relay is unreachable,
70 no repository on the source, a copy or a conversion read back differently, or
a source object does not open, 73 destination not empty (use --force), 75 lease
busy or lost, 76 malformed repository header or index, 78 configuration error
(see doc/operations.rst)
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "migrate", help="move a relay repository to another relay and update the configuration",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("destination", metavar="DESTINATION", nargs="?",
                        help="relay address (protocol://host/path) or configuration file")
    parser.add_argument("--layout", choices=("index", "placeholder"),
                        help="convert the repository to this layout (in place, or at DESTINATION)")
    add_section_option(parser)
    parser.add_argument("--force", action="store_true",
                        help="copy even if the destination holds a repository (same names are replaced)")
    add_lease_wait_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.destination is None and args.layout is None:
        raise UsageError("give a DESTINATION relay, a --layout, or both")
    config = load(args)
    settings = pick_client(config, args.section)
    if args.layout is not None:
        return _run_layout(args, config, settings.name)
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


def _run_layout(args: argparse.Namespace, config: Config, section: str) -> int:
    with progress_for("migrate", args.json) as progress:
        report = migrate_layout(config, section, args.layout, args.destination, force=args.force,
                                lease_wait=args.wait, on_progress=progress, on_step=faults.step)
    if args.json:
        print_json(dataclasses.asdict(report))
        return EX_OK
    conversion = report.conversion
    assert conversion is not None
    if args.destination is not None:
        print(f"copied and verified {report.objects} objects ({human_size(report.bytes)}) of [{report.section}] "
              f"from {report.source} to {report.destination}")
    if conversion.already:
        print(f"[{report.section}] on {conversion.relay} is already in the {conversion.target_layout} layout; "
              f"{conversion.removed} leftover objects of the other layout removed")
    else:
        print(f"converted [{report.section}] on {conversion.relay} from the {conversion.source_layout} layout to the "
              f"{conversion.target_layout} layout: {conversion.paths} paths, {conversion.contents} contents "
              f"({human_size(conversion.bytes)}) verified, {conversion.removed} old objects removed")
    print(f"{report.config} now says index = {'yes' if args.layout == 'index' else 'no'} for [{report.section}]; "
          f"previous file kept as {report.config_backup}; set the same on the other machines")
    return EX_OK
