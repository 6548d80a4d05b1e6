"""What the ``escalectl`` commands share: options, choosing a client, output.

Subcommand modules (``escale.cli.ctl_<name>``) use these so that every command
spells its options, errors and JSON output the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from escale.config import load_config
from escale.config.settings import ClientSettings, Config
from escale.errors import UsageError


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """Accept ``--json`` after the command too (``escalectl status --json``)."""
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output (JSON on standard output)")


def add_lease_wait_option(parser: argparse.ArgumentParser) -> None:
    """``--wait SECONDS`` (dest ``wait``, None when not given): how long a
    command waits for a busy lease."""
    parser.add_argument("--wait", type=float, metavar="SECONDS",
                        help="how long to wait for the lease (default: the lock timeout + 10 s)")


def add_section_option(parser: argparse.ArgumentParser) -> None:
    """``-r/--client SECTION`` (dest ``section``): which client of the file."""
    parser.add_argument("-r", "--client", dest="section", metavar="SECTION",
                        help="the client (section) to work on; optional when the file has one")


def load(args: argparse.Namespace) -> Config:
    """The configuration named by ``-c`` (or found by the search order)."""
    return load_config(getattr(args, "config", None))


def section(config: Config, name: str) -> ClientSettings:
    """Client ``name`` of ``config``; UsageError naming the file and its sections."""
    for client in config.clients:
        if client.name == name:
            return client
    known = ", ".join(c.name for c in config.clients) or "none"
    raise UsageError(f"no section [{name}] in {config.path} (sections: {known})")


def check_sections(config: Config, names: list[str]) -> list[str]:
    """``names`` without duplicates, each a section of ``config`` (UsageError otherwise)."""
    for name in names:
        section(config, name)
    return list(dict.fromkeys(names))


def pick_client(config: Config, name: str | None) -> ClientSettings:
    """Client ``name``, or the only client when ``name`` is None."""
    if name is not None:
        return section(config, name)
    if len(config.clients) == 1:
        return config.clients[0]
    known = ", ".join(c.name for c in config.clients) or "none"
    raise UsageError(f"{config.path} has several sections ({known}); choose one with -r SECTION")


def print_json(value: Any) -> None:
    """``value`` as one JSON document on standard output."""
    json.dump(value, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    sys.stdout.flush()


def confirm(question: str, *, assume_yes: bool, flag: str = "--yes") -> bool:
    """Ask ``question`` on the terminal; True for yes.

    With ``assume_yes`` answers yes without asking. When standard input is not
    a terminal, raises UsageError (refusing to act without ``flag``).
    """
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"not on a terminal: refusing to go on without {flag}")
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
