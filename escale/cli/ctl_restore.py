"""``escalectl restore SECTION ARCHIVE``: put a backup archive back on a relay."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from escale.cli.ctl_support import add_json_option, add_lease_wait_option, load, print_json, section
from escale.cli.ops_progress import progress_for
from escale.cli.progress import human_size
from escale.errors import EX_OK
from escale.ops.restore import restore

DESCRIPTION = """\
Write the objects of a backup archive onto a client's relay. The whole archive
is checked first (manifest present, every object listed, sizes and SHA-256
matching, no unsafe member); a corrupt or truncated archive is refused and the
relay is not touched. Objects are written data first and the repository
header last, each read back and compared.

The relay must hold no repository unless --force. By default the relay's lease
is held during the restore (the client's key is needed to take it).
After restoring an OLDER backup, run 'escalectl fix' on an up-to-date client
(see doc/operations.rst).
"""

EPILOG = """\
examples:
  escalectl restore my-repository my-backup.tar.bz2

exit codes: 0 done, 64 bad arguments or unknown section or extension,
65 corrupt, truncated or altered archive (relay untouched), 69 relay unreachable,
73 relay not empty (use --force), 75 lease busy or lost, 78 configuration error
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restore", help="restore a relay repository from a backup archive",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", metavar="SECTION", help="the client (configuration section) whose relay to restore")
    parser.add_argument("archive", metavar="ARCHIVE", help="a backup archive (.tar, .tar.gz, .tgz, .tar.bz2)")
    parser.add_argument("--fast", action="store_true",
                        help="do not take the relay's lease (UNSAFE while clients run); needs no key")
    parser.add_argument("--force", action="store_true",
                        help="restore over a relay that holds a repository (same-named objects are replaced, "
                             "others are left)")
    add_lease_wait_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = section(load(args), args.section)
    with progress_for("restore", args.json) as progress:
        report = restore(settings, args.archive, fast=args.fast, force=args.force, lease_wait=args.wait,
                         on_progress=progress)
    if args.json:
        print_json(dataclasses.asdict(report))
        return EX_OK
    how = "lease held" if report.consistent else "FAST: without the lease"
    print(f"restored {report.objects} objects ({human_size(report.bytes)}) from {report.archive} onto "
          f"[{report.section}] {report.relay}; {how}")
    if report.replaced:
        print(f"  {report.replaced} objects already on the relay were replaced")
    return EX_OK
