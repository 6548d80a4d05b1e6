"""``escalectl status --files [CLIENT]``: each file's delivery record.

Read from the clients' state databases (:func:`escale.ops.file_status.file_status`),
whether a daemon runs or not. One line per file: client, path, state
(``pending``, ``sent``, ``delivered``, ``received``), version, size, when it
was sent and delivered, the receivers that acknowledged it (for a received
file: its sender) and what ``after delivery`` did with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from escale.cli.ctl_support import load, print_json, section
from escale.cli.progress import human_size
from escale.errors import EX_OK
from escale.ops.file_status import file_status


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def run_files(args: argparse.Namespace) -> int:
    """The ``--files`` form of ``escalectl status``; exit 0 (64: unknown client)."""
    config = load(args)
    clients = list(config.clients) if args.files == "*" else [section(config, args.files)]
    records = {client.name: file_status(client) for client in clients}
    if args.json:
        print_json({"config": config.path, "clients": [
            {"name": name, "files": [dataclasses.asdict(r) for r in rows]} for name, rows in records.items()]})
        return EX_OK
    table = [["CLIENT", "PATH", "STATE", "VERSION", "SIZE", "SENT", "DELIVERED", "RECEIVERS", "HANDOFF"]]
    for name, rows in records.items():
        for r in rows:
            table.append([name, r.path, r.state, str(r.version) if r.version else "-", human_size(r.size),
                          _when(r.sent_at), _when(r.delivered_at), ", ".join(r.receivers) or "-", r.handoff or "-"])
    if len(table) == 1:
        print("no file recorded yet")
        return EX_OK
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EX_OK
