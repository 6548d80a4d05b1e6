"""``escalectl``: control the escale daemon and work on relay repositories.

::

    escalectl [-c FILE] [--json] [-v] COMMAND [ARGS]

Each command lives in a module ``escale.cli.ctl_<name>`` listed in
:data:`SUBCOMMANDS`, exposing ``add_parser(subparsers) -> None`` (adds its own
subparser with ``set_defaults(run=run)``) and ``run(args) -> int``. A listed
module that does not exist is skipped. ``args`` always carries the global
options: ``config`` (str or None), ``json`` (bool) and ``verbose`` (int).

Errors end the command with one line on standard error and the exit code of
:mod:`escale.errors` (table in ``doc/cli.rst``); a command line that does not
parse exits with 64.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, NoReturn

from escale import __version__
from escale.cli.common import run_command
from escale.cli.plaintext import plain_text
from escale.errors import UsageError

SUBCOMMANDS = ("start", "stop", "restart", "status", "access", "leases", "migrate", "backup", "restore", "fix",
               "clients", "allow_deletions", "versions")


class CtlParser(argparse.ArgumentParser):
    """An argument parser whose errors are UsageError (one line, exit 64), and
    whose help is plain text (descriptions written as reStructuredText lose
    their markup: :func:`escale.cli.plaintext.plain_text`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for text in ("description", "epilog"):
            if isinstance(kwargs.get(text), str):
                kwargs[text] = plain_text(kwargs[text])
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")

    def format_help(self) -> str:
        return plain_text(super().format_help())


def build_parser() -> CtlParser:
    parser = CtlParser(
        prog="escalectl",
        description="Control the escale daemon of a configuration file, and work on its relays.",
        epilog="Run 'escalectl COMMAND --help' for the options of a command. Exit codes: see doc/cli.rst.")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (default: search order)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (where a command has any)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"escalectl {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=CtlParser)
    for name in SUBCOMMANDS:
        module_name = f"escale.cli.ctl_{name}"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if exc.name == module_name:
                continue  # not written yet
            raise
        module.add_parser(subparsers)
    return parser


def _setup_logging(verbose: int) -> None:
    """Messages on standard error, ``escalectl: `` first (replacing a previous call's handler)."""
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "escalectl":
            root.removeHandler(old)
    handler = logging.StreamHandler()
    handler.set_name("escalectl")
    handler.setFormatter(logging.Formatter("escalectl: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("paramiko", "urllib3", "pyftpdlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        _setup_logging(args.verbose)
        run = getattr(args, "run", None)
        if run is None:
            parser.print_usage(sys.stderr)
            raise UsageError("no command given (see 'escalectl --help')")
        code: int = run(args)
        return code

    return run_command("escalectl", body)


if __name__ == "__main__":
    sys.exit(main())
