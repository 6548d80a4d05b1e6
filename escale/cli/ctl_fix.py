"""``escalectl fix [-r SECTION]``: rebuild a relay's lost metadata from up-to-date clients."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from escale.cli.ctl_support import add_json_option, add_lease_wait_option, add_section_option, load, print_json, section
from escale.cli.ops_progress import progress_for
from escale.errors import EX_FAILURE, EX_OK
from escale.ops.fix import FixReport, fix_client

DESCRIPTION = """\
The recovery procedure: when a relay lost its placeholders, its header or
everything, rebuild them from this machine's up-to-date clients. For each
client (every section, or the one given with -r), every file it last synced
and still holds unchanged is committed again if the relay lost it (or serves
an older version than the client saw), with a version above any the client
has seen, so that other clients do not take the rebuilt relay for a rollback.
A lost repository header is recreated; with encryption, every client must use
the same key file or passphrase. Leftover payloads are removed.

Run it on a client that was up to date; clients in conservative mode may hold
files that differ from the relay's last versions (see doc/operations.rst).
"""

EPILOG = """\
examples:
  escalectl fix --dry-run      show what would be recreated
  escalectl fix -r my-repository

exit codes: 0 done, 1 some files could not be recreated, 64 bad arguments or unknown
section, 69 relay unreachable, 70 client never synced here, 75 lease busy or client busy,
78 configuration error
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "fix", help="rebuild a relay's lost placeholders from up-to-date clients",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_section_option(parser)
    parser.add_argument("-n", "--dry-run", action="store_true", help="only show what would change")
    add_lease_wait_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def _show(report: FixReport) -> None:
    would = "would be " if report.dry_run else ""
    print(f"[{report.section}] {report.relay}:")
    if report.header_recreated:
        print(f"  repository header {would}recreated")
    for item in report.recreated:
        print(f"  {would}recreated {item.path} (version {item.version}, {item.reason})")
    for path, why in report.skipped:
        print(f"  skipped {path}: {why}")
    for path, why in report.errors:
        print(f"  FAILED {path}: {why}")
    print(f"  {len(report.recreated)} {would}recreated, {report.removed} leftovers {would}removed, "
          f"{report.up_to_date} up to date, {len(report.skipped)} skipped, {len(report.errors)} failed")


def run(args: argparse.Namespace) -> int:
    config = load(args)
    clients = [section(config, args.section)] if args.section else list(config.clients)
    reports: list[FixReport] = []
    for settings in clients:
        with progress_for(f"fix [{settings.name}]", args.json) as progress:
            reports.append(fix_client(settings, dry_run=args.dry_run, lease_wait=args.wait, on_progress=progress))
        if not args.json:
            _show(reports[-1])
    if args.json:
        print_json([dataclasses.asdict(r) | {"changed": r.changed} for r in reports])
    return EX_FAILURE if any(r.errors for r in reports) else EX_OK
