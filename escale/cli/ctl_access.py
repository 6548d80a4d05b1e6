"""``escalectl access FILE [MODIFIERS]``: show or set a file's access modifiers."""

from __future__ import annotations

import argparse
import re
from typing import Any

from escale.cli.ctl_support import add_json_option, add_section_option, load, print_json, section
from escale.errors import EX_OK, UsageError
from escale.ops import access
from escale.ops.access import Modifiers
from escale.sync.planner import Access

DESCRIPTION = """\
Show or set the access modifiers of one file. They refine the client's mode for
that file only, and the daemon honours them from its next pass.

  r  read: may this client SEND its version of the file to the relay?
  w  write: may this client CREATE, REPLACE or DELETE the local file from the relay?

Each letter is followed by + (allowed), - (forbidden) or ? (unset: the mode
decides again); a bare letter means +. Combine them in one word, each letter
at most once. Without MODIFIERS, the current ones are shown.

FILE is a path inside the local folder of a configured client (absolute, or
relative to the current folder); the client is found from the path, or chosen
with -r when folders overlap. The file need not exist yet.
"""

EPILOG = """\
examples:
  escalectl access notes.txt            show the modifiers of notes.txt
  escalectl access notes.txt w-         never overwrite or delete the local notes.txt
  escalectl access draft.odt r-         never send draft.odt (keep it local)
  escalectl access report.pdf r+w-      send it, but never take the relay's version
  escalectl access report.pdf w         same as w+
  escalectl access report.pdf r?w?      unset both: the mode applies again
"""

_MODIFIER = re.compile(r"([rw])([+\-?]?)")
_VALUES: dict[str, bool | None] = {"": True, "+": True, "-": False, "?": None}


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "access", help="show or set a file's access modifiers (r+ r- r? w+ w- w?)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="FILE", help="a file inside a client's local folder")
    parser.add_argument("modifiers", metavar="MODIFIERS", nargs="?",
                        help="r and/or w, each followed by +, - or ? (for example r+w-)")
    add_section_option(parser)
    add_json_option(parser)
    parser.set_defaults(run=run)


def parse_modifiers(text: str) -> Modifiers:
    """``{"r": ..., "w": ...}`` for the letters given in ``text``; UsageError when it does not parse."""
    problem = (f"bad access modifiers {text!r}: expected r and/or w, each followed by +, - or ? "
               "(for example r+w-; see 'escalectl access --help')")
    if not text:
        raise UsageError(problem)
    found: Modifiers = {}
    pos = 0
    while pos < len(text):
        match = _MODIFIER.match(text, pos)
        if match is None:
            raise UsageError(problem)
        letter, sign = match.groups()
        if letter in found:
            raise UsageError(f"bad access modifiers {text!r}: '{letter}' is given twice")
        found[letter] = _VALUES[sign]
        pos = match.end()
    return found


def describe(modifiers: Access) -> str:
    """``r? w-`` and the like: each letter with +, - or ? (unset)."""
    def sign(value: bool | None) -> str:
        return "?" if value is None else "+" if value else "-"

    return f"r{sign(modifiers.read)} w{sign(modifiers.write)}"


def run(args: argparse.Namespace) -> int:
    modifiers = parse_modifiers(args.modifiers) if args.modifiers is not None else None
    config = load(args)
    chosen = section(config, args.section) if args.section else None
    client, rel = access.locate(config, args.file, chosen)
    if modifiers is None:
        current = access.get_access(client, rel)
    else:
        current = access.set_access(client, rel, modifiers)
    if args.json:
        print_json({"client": client.name, "path": rel, "read": current.read, "write": current.write,
                    "mode": client.mode})
    else:
        note = "" if current.read is not None and current.write is not None else f"; '?' follows mode {client.mode}"
        print(f"{rel}: {describe(current)} ([{client.name}]{note})")
    return EX_OK
