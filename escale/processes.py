"""Whether a process is alive: the one rule, for pid files and lease records.

A layer-free helper (it imports nothing of escale), usable from every layer.
"""

from __future__ import annotations

import os

#: ``/proc/<pid>/stat`` states of a process that has exited: zombie, dead.
_EXITED_STATES = frozenset({"Z", "X"})


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited.

    A zombie (exited, not yet reaped by its parent) counts as dead: it runs no
    code and holds nothing. A pid of 0 or below names no single process: dead.
    A process of another user that cannot be signalled counts as alive. Where
    ``/proc`` is missing or unreadable, existence alone decides.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            # "pid (command) state ...": the command may hold spaces and parentheses
            state = handle.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    return state not in _EXITED_STATES
