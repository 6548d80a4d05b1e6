"""``escalectl versions FILE [--restore N]``: the versions kept of a local file."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from escale.cli.ctl_support import add_json_option, add_section_option, load, print_json
from escale.cli.progress import human_size
from escale.errors import EX_OK
from escale.ops.versions import list_versions, locate, restore_version

DESCRIPTION = """\
List the versions of FILE that its client kept: before a pull replaces or
deletes a local file, the file is moved into the client's versions folder
('keep versions', 'versions folder'). Number 1 is the newest.

With --restore N, version N is written back to FILE atomically (with its
modification time); the file it replaces is kept as a version first
(reason 'before-restore'), and version N stays kept. The next pass sends the
restored file like any local edit. FILE need not exist (a deleted file).
"""

EPILOG = """\
examples:
  escalectl versions ~/Sync/report.odt
  escalectl versions ~/Sync/report.odt --restore 2

exit codes: 0 done (also when no version is kept), 64 bad arguments, a file
outside every client's folder or a version number not listed, 74 local I/O
error (file untouched), 75 a pass of the client is running and did not end in
time, 78 configuration error
"""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "versions", help="list or restore the versions kept of a local file",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="a file in a client's local folder (it may be deleted)")
    parser.add_argument("--restore", type=int, metavar="N", help="restore version N (1: the newest)")
    add_section_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def run(args: argparse.Namespace) -> int:
    config = load(args)
    settings, rel = locate(config.clients, args.file, args.section)
    if args.restore is not None:
        done = restore_version(settings, rel, args.restore)
        if args.json:
            print_json(dataclasses.asdict(done))
        else:
            print(f"restored version {args.restore} of {rel} (kept {_when(done.restored.kept_at)}, "
                  f"{done.restored.reason}) to {done.file}")
            if done.kept is not None:
                print(f"the file it replaced is kept as version 1 ({human_size(done.kept.size)})")
        return EX_OK
    versions = list_versions(settings, rel)
    if args.json:
        print_json({"section": settings.name, "path": rel,
                    "versions": [dict(dataclasses.asdict(v), number=n) for n, v in enumerate(versions, 1)]})
        return EX_OK
    if not versions:
        print(f"no kept version of {rel} in [{settings.name}]")
        return EX_OK
    rows = [["N", "KEPT", "SIZE", "REASON"]]
    rows += [[str(n), _when(v.kept_at), human_size(v.size), v.reason] for n, v in enumerate(versions, 1)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"[{settings.name}] {rel}")
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EX_OK
