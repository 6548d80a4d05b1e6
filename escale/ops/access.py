"""``escalectl access``: a file's access modifiers, kept in its client's state database.

The modifiers (:class:`escale.sync.planner.Access`) refine the client's mode for
one file; the daemon reads them from the state database at its next pass.
"""

from __future__ import annotations

import dataclasses
import os

from escale.config.settings import ClientSettings, Config
from escale.errors import UsageError
from escale.sync.client import state_dir_for
from escale.sync.planner import Access
from escale.sync.scanner import STATE_FOLDER
from escale.sync.state import StateDB

#: Modifiers as parsed from the command line: ``"r"`` and/or ``"w"`` mapped to
#: True (allowed), False (forbidden) or None (unset: the mode decides).
Modifiers = dict[str, bool | None]


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` (``/``-separated), None when outside or the root itself."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if rel == "." or parts[0] == os.pardir:
        return None
    return "/".join(parts)


def locate(config: Config, file: str, client: ClientSettings | None = None) -> tuple[ClientSettings, str]:
    """The client whose local folder holds ``file`` (only ``client`` when given),
    and the file's ``/``-separated path relative to that folder.

    ``file`` is absolute or relative to the current folder, and need not exist.
    UsageError when it is inside no client's folder (or inside several: choose
    one), is a client's folder itself, a folder, or inside escale's state folder.
    """
    target = os.path.abspath(file)
    target = os.path.join(os.path.realpath(os.path.dirname(target)), os.path.basename(target))
    clients = [client] if client is not None else list(config.clients)
    matches = []
    for candidate in clients:
        root = os.path.realpath(candidate.local_path)
        if target == root:
            raise UsageError(f"{file} is the local folder of [{candidate.name}]; access modifiers apply to files")
        rel = _inside(target, root)
        if rel is not None:
            matches.append((candidate, rel))
    if not matches:
        if client is not None:
            raise UsageError(f"{target} is not inside the local folder of [{client.name}] "
                             f"({clients[0].local_path})")
        folders = ", ".join(f"[{c.name}] {c.local_path}" for c in config.clients) or "no clients"
        raise UsageError(f"{target} is not inside the local folder of any client of {config.path} ({folders})")
    if len(matches) > 1:
        names = ", ".join(f"[{c.name}]" for c, _ in matches)
        raise UsageError(f"{target} is inside the local folders of {names}; choose one with -r SECTION")
    found, rel = matches[0]
    if rel.split("/")[0] == STATE_FOLDER:
        raise UsageError(f"{target} is inside escale's own state folder")
    if os.path.isdir(target):
        raise UsageError(f"{target} is a folder; access modifiers apply to files")
    return found, rel


def apply_modifiers(current: Access, modifiers: Modifiers) -> Access:
    """``current`` with the letters given in ``modifiers`` replaced; the others kept."""
    result = current
    if "r" in modifiers:
        result = dataclasses.replace(result, read=modifiers["r"])
    if "w" in modifiers:
        result = dataclasses.replace(result, write=modifiers["w"])
    return result


def _db_path(client: ClientSettings) -> str:
    return os.path.join(state_dir_for(client), "state.db")


def get_access(client: ClientSettings, rel: str) -> Access:
    """The modifiers of file ``rel`` of ``client`` (all unset when none are
    stored, or the client never ran here: no state database is created)."""
    path = _db_path(client)
    if not os.path.exists(path):
        return Access()
    db = StateDB(path)
    try:
        return db.access().get(rel, Access())
    finally:
        db.close()


def set_access(client: ClientSettings, rel: str, modifiers: Modifiers) -> Access:
    """Apply ``modifiers`` to file ``rel`` of ``client`` and store the result in
    its state database (created when missing); return the file's modifiers now."""
    db = StateDB(_db_path(client))
    try:
        access = apply_modifiers(db.access().get(rel, Access()), modifiers)
        db.set_access(rel, access)
        return access
    finally:
        db.close()
