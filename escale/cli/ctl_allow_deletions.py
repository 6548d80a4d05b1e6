"""``escalectl allow-deletions CLIENT ...``: let the next pass apply held deletions.

The mass-deletion guard holds back deletions that look like an accident (most
files gone at once, an empty or missing folder). When they are deliberate, this
command allows them for one pass of each CLIENT, daemon or ``escale --once``
alike, without stopping anything: it writes the file ``allow-deletions`` in
the client's state folder; the next pass reads it, applies the held deletions
and removes it. ``--cancel`` removes it before a pass has used it.

The deletions such a pass sends are marked deliberate on the relay, and the
receivers apply them without an allowance of their own: allowing the client
where the files were deleted is enough.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from escale.cli.ctl_support import add_json_option, check_sections, load, print_json, section
from escale.errors import EX_OK, LocalError, UsageError
from escale.sync.client import allow_deletions_flag


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "allow-deletions", help="let the next pass of CLIENT apply deletions held by the guard",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clients", nargs="+", metavar="CLIENT", help="the clients (sections)")
    parser.add_argument("--cancel", action="store_true", help="withdraw a permission no pass has used yet")
    add_json_option(parser)
    parser.set_defaults(run=run)


def allow(path: str) -> None:
    """Write the flag file ``path`` (its folder created 0700 if missing)."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("the next pass applies the deletions held back by the mass-deletion guard\n")
    except OSError as exc:
        raise LocalError(f"cannot write {path}: {exc.strerror or exc}", path=path) from exc


def run(args: argparse.Namespace) -> int:
    config = load(args)
    names = check_sections(config, args.clients)
    if not names:
        raise UsageError("allow-deletions needs at least one client")
    done: dict[str, str] = {}
    for name in names:
        path = allow_deletions_flag(section(config, name))
        if args.cancel:
            try:
                os.unlink(path)
                done[name] = "cancelled"
            except FileNotFoundError:
                done[name] = "not allowed"
            except OSError as exc:
                raise LocalError(f"cannot remove {path}: {exc.strerror or exc}", path=path) from exc
        else:
            allow(path)
            done[name] = "allowed"
    if getattr(args, "json", False):
        print_json({"config": config.path, "clients": done})
    else:
        for name, what in done.items():
            if what == "allowed":
                print(f"[{name}] its next pass applies the deletions held back by the mass-deletion guard")
            elif what == "cancelled":
                print(f"[{name}] permission withdrawn")
            else:
                print(f"[{name}] no permission was pending")
    return EX_OK
