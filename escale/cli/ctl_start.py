"""``escalectl start [CLIENT ...]``: start the daemon, or clients within it.

Without CLIENT, launches ``escale -d -c FILE`` (with this Python) and waits
until its control socket answers; a daemon already running for FILE is an
error (AlreadyRunning, exit 75). With CLIENT names and a daemon running, asks
it to start those clients: clients stopped earlier with ``escalectl stop
CLIENT`` start again, sections the daemon did not load are read from FILE
again and added. With CLIENT names and no daemon running, starts one that runs
only those clients (``escale -d -c FILE -r CLIENT ...``).
"""

from __future__ import annotations

import argparse
from typing import Any

from escale.cli.ctl_support import add_json_option, check_sections, load, print_json
from escale.daemon.instance import find_daemon, require_daemon, start_daemon
from escale.errors import EX_OK, DaemonError

DEFAULT_TIMEOUT = 60.0


def add_timeout_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"{what} (default: {DEFAULT_TIMEOUT:g})")


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "start", help="start the daemon (or clients within it)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clients", nargs="*", metavar="CLIENT", help="only start these clients (sections)")
    add_timeout_option(parser, "seconds to wait for the daemon to answer")
    add_json_option(parser)
    parser.set_defaults(run=run)


def say(args: argparse.Namespace, text: str) -> None:
    """A line for people (nothing under --json)."""
    if not args.json:
        print(text, flush=True)


def start_clients(args: argparse.Namespace, config_path: str, names: list[str]) -> dict[str, Any]:
    """Ask the running daemon to start ``names``; raise when it refuses."""
    daemon = require_daemon(config_path)
    answer = daemon.request("start", clients=names, timeout=args.timeout + 10.0)
    loaded = answer.get("loaded", [])
    for name in answer.get("started", []):
        say(args, f"[{name}] {'loaded from ' + config_path + ' and started' if name in loaded else 'started'}")
    for name in answer.get("already_running", []):
        say(args, f"[{name}] already running")
    return answer


def run(args: argparse.Namespace) -> int:
    config = load(args)
    names = check_sections(config, args.clients)
    if names and find_daemon(config.path) is not None:
        answer = start_clients(args, config.path, names)
        if args.json:
            print_json({"pid": answer["pid"], "config": config.path, "started": answer.get("started", []),
                        "already_running": answer.get("already_running", [])})
        return EX_OK
    if args.timeout <= 0:
        raise DaemonError("--timeout must be positive")
    daemon = start_daemon(config.path, timeout=args.timeout, verbose=args.verbose, clients=names)
    log_file = (daemon.answer or {}).get("log_file")
    only = f" with {', '.join(f'[{n}]' for n in names)}" if names else ""
    say(args, f"escale started for {config.path}{only} (pid {daemon.pid}; log {log_file or 'none'})")
    if args.json:
        print_json({"pid": daemon.pid, "config": config.path, "log_file": log_file,
                    "started": names or [c.name for c in config.clients]})
    return EX_OK
