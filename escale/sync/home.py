"""Where a client's state folder lives, so that a copied or moved one is noticed.

A client's identity (its client id) lives in its state database. A state folder
copied to a second machine, or beside the original on the same machine, would
make two clients share one id: acknowledgements of one would count for the
other, and one of them would silently miss updates. So the database records its
*home*: the machine (``/etc/machine-id``, else the host name), the state folder
and the local folder (real paths). At every pass:

* same home: nothing to do;
* the machine differs, or the recorded state folder still holds a database with
  the same client id: the folder was **copied**: this copy becomes a new client
  (fresh id, same synced state, so nothing is fetched again), with a warning;
* otherwise it was **moved** (same machine, old place gone): the identity
  stays, and the new home is recorded.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3

from escale.sync.state import StateDB

log = logging.getLogger(__name__)

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def machine_id() -> str:
    """A stable name of this machine: its machine-id, else its host name."""
    for path in _MACHINE_ID_FILES:
        try:
            with open(path, encoding="ascii") as handle:
                value = handle.read().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    return f"host:{socket.gethostname()}"


def _client_id_at(state_dir: str) -> str | None:
    """The client id of the state database in ``state_dir``, if one is there
    (opened read-only; any error means none)."""
    path = os.path.join(state_dir, "state.db")
    if not os.path.isfile(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT value FROM settings WHERE key = 'client_id'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def check_home(db: StateDB, state_dir: str, local_path: str, *, client: str) -> str | None:
    """Compare the database's recorded home with where it is now.

    Records the home on first use. Returns a warning line when this state was
    found copied (it then has a new client id), None otherwise. Never raises
    for an unreadable record (it is rewritten).
    """
    here = {"machine": machine_id(), "state": os.path.realpath(state_dir),
            "local": os.path.realpath(local_path)}
    raw = db.get_setting("home")
    try:
        recorded = json.loads(raw) if raw else None
    except ValueError:
        recorded = None
    if not isinstance(recorded, dict) or recorded == here:
        if recorded != here:
            db.set_setting("home", json.dumps(here, sort_keys=True))
        return None
    current_id = db.client_id()
    copied = recorded.get("machine") != here["machine"] or (
        recorded.get("state") != here["state"] and _client_id_at(str(recorded.get("state"))) == current_id)
    db.set_setting("home", json.dumps(here, sort_keys=True))
    if not copied:
        log.info("[%s] state folder moved from %s to %s; the client keeps its identity", client,
                 recorded.get("state"), here["state"])
        return None
    fresh = db.new_identity()
    line = (f"[{client}] this state folder was copied from {recorded.get('state')} "
            f"(machine {str(recorded.get('machine'))[:12]}); it now acts as a new client {fresh} so that two "
            f"machines never share client id {current_id}")
    log.warning("%s", line)
    return line
