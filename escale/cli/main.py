"""``escale``: run the clients of a configuration file.

::

    escale [-c FILE]            run every client until Ctrl-C / SIGTERM
    escale --once [-c FILE]     one pass of every client, then exit (for cron)
    escale -d [-c FILE]         run in the background (a daemon)
    escale -i [FILE]            interactive setup (or import the sections of FILE)
    escale --demo [DIR]         two local clients syncing a demo folder, encrypted

Exit codes are those of :mod:`escale.errors` (``doc/cli.rst``).
"""

from __future__ import annotations

import argparse
import os
import sys

from escale import __version__
from escale.cli.common import run_command
from escale.cli.ops_progress import ProgressCallback
from escale.config import load_config
from escale.daemon.logs import setup_logging
from escale.daemon.runner import Runner
from escale.errors import EX_OK, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="escale", description="Encrypted file synchronisation through an untrusted relay.")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (default: search order)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-d", "--daemon", action="store_true", help="run in the background")
    mode.add_argument("-i", "--interactive", nargs="?", const="", metavar="FILE",
                      help="interactive setup; with FILE, import its sections")
    mode.add_argument("--once", action="store_true", help="run one pass of every client and exit")
    mode.add_argument("--demo", nargs="?", const="", metavar="DIR",
                      help="run the built-in demo (two clients, one local relay, encrypted)")
    parser.add_argument("-r", "--client", action="append", metavar="SECTION",
                        help="only this client (repeatable)")
    parser.add_argument("--allow-mass-deletion", action="store_true",
                        help="apply deletions held back by the mass-deletion guard")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"escale {__version__}")
    return parser


def _warn_if_root() -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        print("escale: warning: running as root; escale needs no privilege, run it as a normal user",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> int:
        _warn_if_root()
        if args.demo is not None:
            from escale.cli.demo import run_demo

            return run_demo(args.demo or None)
        if args.interactive is not None:
            from escale.cli.wizard import run_wizard

            return run_wizard(args.config, import_from=args.interactive or None)
        config = load_config(args.config)
        if args.client:
            unknown = [c for c in args.client if c not in {s.name for s in config.clients}]
            if unknown:
                raise UsageError(f"no section [{unknown[0]}] in {config.path}")
            config = type(config)(config.path, config.globals,
                                  tuple(c for c in config.clients if c.name in args.client))
        setup_logging(config.globals, verbose=args.verbose + (1 if args.once else 0), config_path=config.path)
        if args.once:
            runner = Runner(config, allow_mass_deletion=args.allow_mass_deletion)
            bars = {name: ProgressCallback(f"[{name}] sync") for name in runner.clients}
            for name, client in runner.clients.items():
                client.on_progress = bars[name]
            try:
                code = runner.run_once(lease_wait=min(60.0, min(c.lock_timeout for c in config.clients)))
            finally:
                for bar in bars.values():
                    bar.close()
            if config.globals.log_file:  # else the log on standard error said it already
                for line in runner.failures:
                    print(f"escale: {line}", file=sys.stderr)
            return code
        from escale.daemon.service import serve

        return serve(config, detach=args.daemon, allow_mass_deletion=args.allow_mass_deletion) or EX_OK

    return run_command("escale", body)


if __name__ == "__main__":
    sys.exit(main())
