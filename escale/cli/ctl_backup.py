"""``escalectl backup SECTION ARCHIVE``: snapshot a relay repository into a tar archive."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from escale.cli.ctl_support import add_json_option, add_lease_wait_option, load, print_json, section
from escale.cli.ops_progress import progress_for
from escale.cli.progress import human_size
from escale.errors import EX_OK
from escale.ops.backup import backup

DESCRIPTION = """\
Copy every object of a client's relay repository, sealed as stored (no key is
needed to read the archive, and none is revealed), into ARCHIVE, with a
manifest listing each object's name, size and SHA-256. The archive is written
under a temporary name and renamed when complete and checked.

ARCHIVE must end in .tar, .tar.gz, .tgz or .tar.bz2 (the compression follows).
By default the relay's lease is held during the backup, so clients that run
meanwhile wait and the archive is one consistent state of the repository.
"""

EPILOG = """\
examples:
  escalectl backup my-repository my-backup.tar.bz2
  escalectl backup my-repository /mnt/usb/relay.tgz --force    replace an older archive

exit codes: 0 done, 64 bad arguments or unknown section or extension,
69 relay unreachable, 70 no repository on the relay, 75 lease busy or lost,
78 configuration error (see doc/operations.rst)
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "backup", help="back up a relay repository into a tar archive",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", metavar="SECTION", help="the client (configuration section) whose relay to back up")
    parser.add_argument("archive", metavar="ARCHIVE", help="the archive to write (.tar, .tar.gz, .tgz, .tar.bz2)")
    parser.add_argument("--fast", action="store_true",
                        help="do not take the relay's lease (UNSAFE while clients run: the archive may be "
                             "inconsistent); needs no key")
    parser.add_argument("--force", action="store_true", help="replace ARCHIVE if it exists")
    add_lease_wait_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = section(load(args), args.section)
    with progress_for("backup", args.json) as progress:
        report = backup(settings, args.archive, fast=args.fast, force=args.force, lease_wait=args.wait,
                        on_progress=progress)
    if args.json:
        print_json(dataclasses.asdict(report))
        return EX_OK
    how = "consistent (lease held)" if report.consistent else "FAST: taken without the lease"
    print(f"backed up {report.objects} objects ({human_size(report.bytes)}) of [{report.section}] "
          f"{report.relay} into {report.archive}; {how}")
    for name in report.skipped:
        print(f"  left out (vanished meanwhile): {name}")
    return EX_OK
