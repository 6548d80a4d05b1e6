"""``escalectl status``: what the daemon and each client are doing.

Per client: state (running, stopping, stopped), mode, relay, last pass (time,
result and how many warnings), files and bytes waiting to go up and down, the
relay's use against ``disk quota``, the last error, and the last pass's
warnings one per line (paths skipped, relay anomalies, stale receivers,
versions missed because ``puller count`` was reached). When no daemon runs for the
configuration, says so, lists the configured clients, and exits with 3
(as an LSB init script's ``status`` does for "not running").
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from escale.cli.ctl_start import say
from escale.cli.ctl_support import add_json_option, load, print_json
from escale.cli.progress import human_size
from escale.cli.status_files import run_files
from escale.config.settings import Config
from escale.daemon.instance import find_daemon
from escale.errors import EX_OK, DaemonError

#: Exit code of ``escalectl status`` when no daemon runs (LSB "program is not running").
EX_NOT_RUNNING = 3


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="show the daemon's and each client's state", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_option(parser)
    parser.add_argument("--files", nargs="?", const="*", metavar="CLIENT",
                        help="list each file's delivery (pending, sent, delivered, received) from the state "
                             "databases, of every client or of CLIENT; no daemon needed")
    parser.set_defaults(run=run)


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    now = time.localtime()
    then = time.localtime(stamp)
    if then[:3] == now[:3]:
        return time.strftime("%H:%M:%S", then)
    return time.strftime("%Y-%m-%d %H:%M", then)


def _pending(value: dict[str, int] | None) -> str:
    if value is None:
        return "?"
    if not value["files"]:
        return "0"
    return f"{value['files']} ({human_size(value['bytes'])})"


def _last_pass(client: dict[str, Any]) -> str:
    last = client.get("last_pass")
    if not last:
        return "-" if client["state"] != "running" else "first pass..."
    if not last["ok"]:
        result = "failed" if last["errors"] and not last["sent"] and not last["received"] else "errors"
    elif last["busy"]:
        result = "relay busy"
    else:
        result = "ok"
    warnings = len(last.get("warnings") or [])
    if warnings:
        result += f", {warnings} warning{'s' if warnings != 1 else ''}"
    return f"{_when(last['finished'])} {result}"


def _relay_use(client: dict[str, Any]) -> str:
    used = client.get("relay_bytes")
    quota = client.get("disk_quota")
    text = "?" if used is None else human_size(used)
    if quota:
        text += f" / {human_size(quota)}"
        if used is not None:
            text += f" ({100 * used / quota:.0f}%)"
    return text


def table(rows: list[list[str]]) -> str:
    """Rows as aligned columns (two spaces apart), the first row a header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def _configured(config: Config) -> list[dict[str, Any]]:
    return [{"name": c.name, "label": c.label, "state": "stopped", "mode": c.mode, "relay": c.relay.describe(),
             "local_path": c.local_path, "disk_quota": c.disk_quota} for c in config.clients]


def run(args: argparse.Namespace) -> int:
    if getattr(args, "files", None) is not None:
        return run_files(args)
    config = load(args)
    daemon = find_daemon(config.path)
    if daemon is None:
        if args.json:
            print_json({"running": False, "config": config.path, "clients": _configured(config)})
        else:
            print(f"escale is not running for {config.path}")
            rows = [["CLIENT", "STATE", "MODE", "RELAY"]]
            rows += [[c["name"], c["state"], c["mode"], c["relay"]] for c in _configured(config)]
            print(table(rows))
        return EX_NOT_RUNNING
    if not daemon.responsive:
        raise DaemonError(
            f"escale (pid {daemon.pid}) is running for {config.path} but does not answer on "
            f"{daemon.paths.socket}")
    answer = daemon.request("status")
    clients: list[dict[str, Any]] = answer.get("clients", [])
    known = {c["name"] for c in clients}
    missing = [c for c in _configured(config) if c["name"] not in known]
    for client in missing:
        client["state"] = "not loaded"
    if args.json:
        answer.pop("ok", None)
        answer["running"] = True
        answer["clients"] = clients + missing
        print_json(answer)
        return EX_OK
    started = _when(answer.get("since"))
    state = " (stopping)" if answer.get("stopping") else ""
    say(args, f"escale is running for {answer.get('config')} (pid {answer.get('pid')}, since {started}){state}")
    say(args, f"log: {answer.get('log_file') or 'standard error'}")
    rows = [["CLIENT", "STATE", "MODE", "RELAY", "LAST PASS", "PENDING UP", "PENDING DOWN", "RELAY USE"]]
    for client in clients:
        rows.append([client["name"], client["state"], client["mode"], client["relay"], _last_pass(client),
                     _pending(client.get("pending_up")), _pending(client.get("pending_down")),
                     _relay_use(client)])
    for client in missing:
        rows.append([client["name"], "not loaded", client["mode"], client["relay"], "-", "-", "-", "-"])
    print(table(rows))
    for client in clients:
        if client.get("last_error"):
            print(f"[{client['name']}] last error: {client['last_error']}")
    for client in clients:
        for line in (client.get("last_pass") or {}).get("warnings") or []:
            print(f"[{client['name']}] warning: {line}")
    if missing:
        print("sections the daemon did not load start with 'escalectl start SECTION' (the file is read again)")
    return EX_OK
