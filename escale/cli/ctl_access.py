"""``escalectl access FILE [MODIFIERS]``: show or set a file's access modifiers."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from typing import Any

from escale.cli.ctl_support import add_json_option, add_section_option, load, print_json, section
from escale.config.settings import ClientSettings, Config
from escale.errors import EX_OK, UsageError
from escale.sync.client import state_dir_for
from escale.sync.planner import Access
from escale.sync.scanner import STATE_FOLDER
from escale.sync.state import StateDB

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


def parse_modifiers(text: str) -> dict[str, bool | None]:
    """``{"r": ..., "w": ...}`` for the letters given in ``text``; UsageError when it does not parse."""
    problem = (f"bad access modifiers {text!r}: expected r and/or w, each followed by +, - or ? "
               "(for example r+w-; see 'escalectl access --help')")
    if not text:
        raise UsageError(problem)
    found: dict[str, bool | None] = {}
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


def apply_modifiers(current: Access, modifiers: dict[str, bool | None]) -> Access:
    result = current
    if "r" in modifiers:
        result = dataclasses.replace(result, read=modifiers["r"])
    if "w" in modifiers:
        result = dataclasses.replace(result, write=modifiers["w"])
    return result


def describe(access: Access) -> str:
    def sign(value: bool | None) -> str:
        return "?" if value is None else "+" if value else "-"

    return f"r{sign(access.read)} w{sign(access.write)}"


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` (``/``-separated), None when outside or the root itself."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if rel == "." or parts[0] == os.pardir:
        return None
    return "/".join(parts)


def locate(config: Config, file: str, section_name: str | None) -> tuple[ClientSettings, str]:
    """The client whose local folder holds ``file``, and the file's relative path."""
    target = os.path.abspath(file)
    target = os.path.join(os.path.realpath(os.path.dirname(target)), os.path.basename(target))
    clients = [section(config, section_name)] if section_name else list(config.clients)
    matches = []
    for client in clients:
        root = os.path.realpath(client.local_path)
        if target == root:
            raise UsageError(f"{file} is the local folder of [{client.name}]; access modifiers apply to files")
        rel = _inside(target, root)
        if rel is not None:
            matches.append((client, rel))
    if not matches:
        if section_name:
            raise UsageError(f"{target} is not inside the local folder of [{section_name}] "
                             f"({clients[0].local_path})")
        folders = ", ".join(f"[{c.name}] {c.local_path}" for c in config.clients) or "no clients"
        raise UsageError(f"{target} is not inside the local folder of any client of {config.path} ({folders})")
    if len(matches) > 1:
        names = ", ".join(f"[{c.name}]" for c, _ in matches)
        raise UsageError(f"{target} is inside the local folders of {names}; choose one with -r SECTION")
    client, rel = matches[0]
    if rel.split("/")[0] == STATE_FOLDER:
        raise UsageError(f"{target} is inside escale's own state folder")
    if os.path.isdir(target):
        raise UsageError(f"{target} is a folder; access modifiers apply to files")
    return client, rel


def run(args: argparse.Namespace) -> int:
    modifiers = parse_modifiers(args.modifiers) if args.modifiers is not None else None
    config = load(args)
    client, rel = locate(config, args.file, args.section)
    db_path = os.path.join(state_dir_for(client), "state.db")
    if modifiers is None and not os.path.exists(db_path):
        access = Access()
    else:
        db = StateDB(db_path)
        try:
            access = db.access().get(rel, Access())
            if modifiers is not None:
                access = apply_modifiers(access, modifiers)
                db.set_access(rel, access)
        finally:
            db.close()
    if args.json:
        print_json({"client": client.name, "path": rel, "read": access.read, "write": access.write,
                    "mode": client.mode})
    else:
        note = "" if access.read is not None and access.write is not None else f"; '?' follows mode {client.mode}"
        print(f"{rel}: {describe(access)} ([{client.name}]{note})")
    return EX_OK
