"""``escale --once --dry-run``: what one pass of each client would do.

Each client plans a pass exactly as ``escale --once`` would (same relay
reads, same scan, same rules) and stops before executing anything
(:class:`escale.sync.client.SyncClient` with ``dry_run``). One line per file on
standard output::

    [photos] would send: 2024/img_001.jpg (2.1 MB)
    [photos] would receive: notes.txt
    [photos] would delete here: old.txt (deleted by another client)
    [photos] would delete on the relay: draft.txt
    [photos] conflict: report.odt (the local file would become report.conflict-....odt)
    [photos] held back by the mass-deletion guard: 12 deletions
    [photos] nothing to do

A client that never synced, on a relay that holds no repository yet, is
planned against the empty repository its first pass would create (``would
create the repository on RELAY`` comes first).

Bookkeeping that moves no file (recording, acknowledging) is listed with ``-v``.
"""

from __future__ import annotations

import sys

from escale.cli.progress import human_size
from escale.config.settings import ClientSettings, Config
from escale.errors import EX_OK, EX_SOFTWARE, EX_TEMPFAIL, ClientBusy, EscaleError
from escale.sync.client import SyncClient
from escale.sync.planner import Action, Plan


def _line(action: Action) -> tuple[str, bool]:
    """The text for ``action`` and whether it moves or changes a file."""
    size = f" ({human_size(action.expect_local.size)})" if action.expect_local is not None else ""
    reason = f" ({action.reason})" if action.reason else ""
    kind = action.kind
    if kind == "push":
        return f"would send: {action.path}{size}", True
    if kind == "push_copy":
        return f"would send: {action.copy_path or action.path}{size} (a conflict copy of {action.path})", True
    if kind == "push_delete":
        return f"would delete on the relay: {action.path}", True
    if kind == "pull":
        return f"would receive: {action.path}{reason}", True
    if kind == "pull_copy":
        return f"would receive: {action.path} as {action.copy_path}{reason}", True
    if kind == "conflict":
        return (f"conflict: {action.path} (the local file would become {action.copy_path}; "
                "the relay's version would take its name)"), True
    if kind == "delete_local":
        return f"would delete here: {action.path}{reason}", True
    if kind == "diverged":
        return f"cannot receive: {action.path}{reason}", True
    return f"{kind}: {action.path}{reason}", False


def describe_plan(name: str, the_plan: Plan, *, verbose: bool = False) -> list[str]:
    """The dry-run lines of client ``name``'s ``the_plan``."""
    lines = []
    for action in the_plan.actions:
        text, moves = _line(action)
        if moves or verbose:
            lines.append(f"[{name}] {text}")
    if the_plan.held:
        lines.append(f"[{name}] held back by the mass-deletion guard: {len(the_plan.held)} deletions "
                     f"('escalectl allow-deletions {name}' applies them in the next pass)")
        lines += [f"[{name}]     {a.path}" for a in the_plan.held] if verbose else []
    if not lines:
        lines.append(f"[{name}] nothing to do")
    return lines


def _dry(settings: ClientSettings, *, allow_mass_deletion: bool, verbose: bool) -> list[str]:
    client = SyncClient(settings, dry_run=True, allow_mass_deletion=allow_mass_deletion)
    client.run_pass()
    assert client.last_plan is not None
    lines = describe_plan(settings.name, client.last_plan, verbose=verbose)
    if client.would_create:
        lines.insert(0, f"[{settings.name}] would create the repository on {settings.relay.describe()}")
    return lines


def run_dry(config: Config, *, verbose: int = 0, busy_ok: bool = False, allow_mass_deletion: bool = False) -> int:
    """Print what one pass of each client of ``config`` would do; the exit code
    (as ``escale --once``: a client another process is syncing is skipped
    quietly with 75, or 0 with ``busy_ok``)."""
    code = EX_OK
    for settings in config.clients:
        try:
            lines = _dry(settings, allow_mass_deletion=allow_mass_deletion, verbose=verbose > 0)
        except ClientBusy:
            if verbose:
                print(f"escale: [{settings.name}] skipped: another escale process is syncing it", file=sys.stderr)
            code = code if busy_ok else max(code, EX_TEMPFAIL)
            continue
        except EscaleError as exc:
            print(f"escale: [{settings.name}] {exc}", file=sys.stderr)
            code = max(code, exc.exit_code)
            continue
        except Exception as exc:  # noqa: BLE001 - a bug in one client must not hide the others
            print(f"escale: [{settings.name}] internal error: {exc!r}", file=sys.stderr)
            code = max(code, EX_SOFTWARE)
            continue
        for line in lines:
            print(line, flush=True)
    return code
