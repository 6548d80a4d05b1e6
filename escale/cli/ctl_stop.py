"""``escalectl stop [CLIENT ...]``: stop the daemon gracefully, or clients within it.

Without CLIENT, asks the daemon to stop: every client finishes the object it is
transferring and saves its state. If the daemon is still running after
``--timeout`` seconds, it is sent SIGTERM (it exits at once), then SIGKILL ten
seconds later (or ``--timeout`` seconds when shorter, at least one). Only the
process that is this configuration's daemon is ever signalled (pid file, /proc
command line, control socket answer, start time).
With CLIENT names, stops those clients and leaves the daemon and the other
clients running; a client still busy after ``--timeout`` is reported (exit 75)
and stops as soon as its current object is done. A section the daemon did not
load is reported as not running.
Nothing running is not an error: one line says so, and the exit code is 0.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from escale.cli.ctl_start import add_timeout_option, say
from escale.cli.ctl_support import add_json_option, check_sections, load, print_json
from escale.daemon.instance import find_daemon, require_daemon, stop_daemon
from escale.errors import EX_OK, EX_TEMPFAIL, DaemonError, NotRunning


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stop", help="stop the daemon (or clients within it)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clients", nargs="*", metavar="CLIENT", help="only stop these clients (sections)")
    add_timeout_option(parser, "seconds to wait for a graceful stop before signals")
    add_json_option(parser)
    parser.set_defaults(run=run)


def stop_clients(args: argparse.Namespace, config_path: str, names: list[str], cmd: str = "stop") -> dict[str, Any]:
    """Ask the running daemon to stop (or restart) ``names``; raise for a client still busy."""
    daemon = require_daemon(config_path)
    answer = daemon.request(cmd, clients=names, wait=args.timeout, timeout=args.timeout + 10.0)
    for name in answer.get("stopped", []):
        say(args, f"[{name}] {'restarted' if name in answer.get('started', []) else 'stopped'}")
    for name in answer.get("loaded", []):
        if name in answer.get("started", []):
            say(args, f"[{name}] loaded from {config_path} and started (the daemon had not loaded it)")
    for name in answer.get("not_loaded", []):
        say(args, f"[{name}] not running (the daemon did not load it)")
    busy = answer.get("still_stopping") or []
    if busy:
        error = DaemonError(
            f"{', '.join(f'[{n}]' for n in busy)} still finishing the current transfer after {args.timeout:g} s; "
            "it stops as soon as that is done" + ("; start it again then" if cmd == "restart" else ""))
        error.exit_code = EX_TEMPFAIL
        raise error
    return answer


def stop_whole(args: argparse.Namespace, config_path: str) -> tuple[int, str]:
    """Stop the daemon of ``config_path``; returns its pid and how it ended."""
    daemon = find_daemon(config_path)
    if daemon is None:
        raise NotRunning(f"escale is not running for {config_path}")

    def warn(text: str) -> None:
        print(f"escalectl: {text}", file=sys.stderr, flush=True)

    if args.timeout < 0:
        raise DaemonError("--timeout must not be negative")
    how = stop_daemon(daemon, timeout=args.timeout, say=warn)
    say(args, f"escale {how} (pid {daemon.pid})")
    return daemon.pid, how


def run(args: argparse.Namespace) -> int:
    config = load(args)
    names = check_sections(config, args.clients)
    if find_daemon(config.path) is None:
        say(args, f"escale is not running for {config.path}")
        if args.json:
            print_json({"pid": None, "config": config.path, "how": "not running"})
        return EX_OK
    if names:
        answer = stop_clients(args, config.path, names)
        if args.json:
            print_json({"pid": answer["pid"], "config": config.path, "stopped": answer.get("stopped", []),
                        "not_loaded": answer.get("not_loaded", [])})
        return EX_OK
    pid, how = stop_whole(args, config.path)
    if args.json:
        print_json({"pid": pid, "config": config.path, "how": how})
    return EX_OK
