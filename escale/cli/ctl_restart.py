"""``escalectl restart [CLIENT ...]``: stop then start the daemon, or clients within it.

Without CLIENT, the daemon is stopped as by ``escalectl stop`` (when it runs)
and started again as by ``escalectl start``, re-reading the configuration file.
With CLIENT names, only those clients' threads are stopped (after their
current object) and started again inside the running daemon, with the
configuration the daemon read when it started; a section it did not load is
read from the file and started, and with no daemon running, one is started
with only those clients. The other clients are never touched.
"""

from __future__ import annotations

import argparse
from typing import Any

from escale.cli.ctl_start import add_timeout_option, say
from escale.cli.ctl_stop import stop_clients, stop_whole
from escale.cli.ctl_support import add_json_option, check_sections, load, print_json
from escale.daemon.instance import find_daemon, start_daemon
from escale.errors import EX_OK


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "restart", help="restart the daemon (or clients within it)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clients", nargs="*", metavar="CLIENT", help="only restart these clients (sections)")
    add_timeout_option(parser, "seconds to wait for each of the stop and the start")
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load(args)
    names = check_sections(config, args.clients)
    if names and find_daemon(config.path) is None:
        say(args, f"escale was not running for {config.path}")
        daemon = start_daemon(config.path, timeout=max(args.timeout, 1.0), verbose=args.verbose, clients=names)
        say(args, f"escale started for {config.path} with {', '.join(f'[{n}]' for n in names)} (pid {daemon.pid})")
        if args.json:
            print_json({"pid": daemon.pid, "config": config.path, "restarted": names})
        return EX_OK
    if names:
        answer = stop_clients(args, config.path, names, cmd="restart")
        if args.json:
            print_json({"pid": answer["pid"], "config": config.path, "restarted": answer.get("started", [])})
        return EX_OK
    old: int | None = None
    if find_daemon(config.path) is not None:
        old, _ = stop_whole(args, config.path)
    else:
        say(args, f"escale was not running for {config.path}")
    daemon = start_daemon(config.path, timeout=max(args.timeout, 1.0), verbose=args.verbose)
    say(args, f"escale started for {config.path} (pid {daemon.pid})")
    if args.json:
        print_json({"old_pid": old, "pid": daemon.pid, "config": config.path})
    return EX_OK
