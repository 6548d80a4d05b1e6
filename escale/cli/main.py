"""``escale``: run the clients of a configuration file.

::

    escale [-c FILE]            run every client until Ctrl-C / SIGTERM
    escale --once [-c FILE]     one pass of every client, then exit (for cron)
    escale --once --dry-run     what one pass would do; changes nothing
    escale --systemd-unit       print a systemd user unit running escale
    escale -d [-c FILE]         run in the background (a daemon)
    escale -i [FILE]            interactive setup (or import the sections of FILE)
    escale --demo [DIR]         two local clients syncing a demo folder, encrypted

Exit codes are those of :mod:`escale.errors` (``doc/cli.rst``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys

from escale import __version__
from escale.cli.common import run_command
from escale.cli.ops_progress import ProgressCallback
from escale.config import Config, check_client_folders, load_config, require_clients
from escale.daemon.logs import setup_logging
from escale.daemon.notify import Notifier
from escale.daemon.runner import Runner
from escale.errors import EX_OK, EX_TEMPFAIL, UsageError
from escale.sync.client import state_dir_for
from escale.sync.scanner import is_internal


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
    parser.add_argument("--keep", action="store_true",
                        help="with --demo: keep the demo's temporary folder (removed at the end otherwise)")
    parser.add_argument("-r", "--client", action="append", metavar="SECTION",
                        help="only this client (repeatable)")
    parser.add_argument("--allow-mass-deletion", action="store_true",
                        help="apply deletions held back by the mass-deletion guard")
    parser.add_argument("--busy-ok", action="store_true",
                        help="with --once: exit 0, not 75, when another escale process is syncing a client")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --once: print what a pass would send, receive, delete and conflict; "
                             "change nothing")
    parser.add_argument("--systemd-unit", action="store_true",
                        help="print a systemd user unit that runs escale, and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"escale {__version__}")
    return parser


def _warn_if_root() -> None:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        print("escale: warning: running as root; escale needs no privilege, run it as a normal user",
              file=sys.stderr)


def _check_startup(config: Config) -> None:
    """Refuse, before anything is written, a configuration these clients cannot
    run with: no client, or a local or state folder that cannot be used
    (ConfigError, exit 78)."""
    require_clients(config)
    for settings in config.clients:
        check_client_folders(config.path, settings, state_dir_for(settings), log_file=config.globals.log_file,
                             left_out=is_internal)


class _QuietOnce(logging.Filter):
    """What ``escale --once`` without ``log file`` and ``-v`` leaves out of
    standard error: the record of a failed pass (the command prints its one
    ``escale: [client] message`` line instead) and the relay's retry attempts
    (the failure they end in is reported; a retry that worked is no news)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "escale_once_failure", False):
            return False
        return not (record.name == "escale.relay.retry" and record.levelno < logging.ERROR)


def _run_once(config: Config, args: argparse.Namespace) -> int:
    """``escale --once``: one pass of each client; the exit code.

    On standard error, for cron: nothing when every pass worked (warnings
    only; ``-v`` adds the INFO log), one ``escale: [client] message`` line per
    failed pass, and nothing at all for a client skipped because another
    escale process is syncing it (exit 75, or 0 with ``--busy-ok``; ``-v``
    says so in one line). A failed pass notifies the client's ``maintainer``
    once (see :mod:`escale.daemon.notify`).
    """
    quiet = not config.globals.log_file and not args.verbose
    setup_logging(config.globals, verbose=args.verbose, config_path=config.path)
    if quiet:
        root = logging.getLogger()
        for handler in root.handlers:
            handler.setLevel(logging.WARNING)
            handler.addFilter(_QuietOnce())
        # no handler takes INFO: records below WARNING are not even made (a
        # pass logs a line per file received or sent, a few % of its time)
        root.setLevel(max(root.level, logging.WARNING))
    if args.dry_run:
        from escale.cli.dry_run import run_dry

        return run_dry(config, verbose=args.verbose, busy_ok=args.busy_ok,
                       allow_mass_deletion=args.allow_mass_deletion)
    runner = Runner(config, allow_mass_deletion=args.allow_mass_deletion, notify=Notifier(config_path=config.path))
    bars = {name: ProgressCallback(f"[{name}] sync") for name in runner.clients}
    for name, client in runner.clients.items():
        client.on_progress = bars[name]
    try:
        code = runner.run_once(lease_wait=min(60.0, min(c.lock_timeout for c in config.clients)))
    finally:
        for bar in bars.values():
            bar.close()
    # with a log file, every failure line; on standard error, the log said the per-file ones already
    for line in runner.failures if config.globals.log_file else runner.pass_failures if quiet else []:
        print(f"escale: {line}", file=sys.stderr)
    if runner.busy:
        if args.verbose:
            for name in runner.busy:
                print(f"escale: [{name}] skipped: another escale process is syncing it", file=sys.stderr)
        if not args.busy_ok:
            code = max(code, EX_TEMPFAIL)
    return code


#: the youngest generation's collection threshold (Python's default is 700)
GC_YOUNG_THRESHOLD = 50_000


def _tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a pass over a big tree.

    A pass allocates a few objects per tracked file (index entries, views,
    plan) that live until its end and hold no cycles; with the default
    thresholds the collector walks them again and again (a quarter of a
    no-change pass's time on 10,000 files). What the imports made is frozen
    (never walked again), and a collection of the young objects runs every
    :data:`GC_YOUNG_THRESHOLD` allocations instead of 700: cyclic garbage
    still goes, a little later.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def main(argv: list[str] | None = None) -> int:
    _tune_gc()
    parser = build_parser()
    args = parser.parse_args(argv)

    def body() -> int:
        _warn_if_root()
        if args.demo is not None:
            from escale.cli.demo import run_demo

            return run_demo(args.demo or None, keep=args.keep)
        if args.interactive is not None:
            from escale.cli.wizard import run_wizard

            return run_wizard(args.config, import_from=args.interactive or None)
        if args.systemd_unit:
            from escale.cli.systemd import print_unit

            return print_unit(args.config)
        config = load_config(args.config)
        if args.client:
            unknown = [c for c in args.client if c not in {s.name for s in config.clients}]
            if unknown:
                raise UsageError(f"no section [{unknown[0]}] in {config.path}")
            config = type(config)(config.path, config.globals,
                                  tuple(c for c in config.clients if c.name in args.client))
        _check_startup(config)
        if args.once:
            return _run_once(config, args)
        if args.dry_run or args.busy_ok:
            raise UsageError("--dry-run and --busy-ok go with --once")
        setup_logging(config.globals, verbose=args.verbose, config_path=config.path)
        from escale.daemon.service import serve

        return serve(config, detach=args.daemon, allow_mass_deletion=args.allow_mass_deletion) or EX_OK

    return run_command("escale", body)


if __name__ == "__main__":
    sys.exit(main())
