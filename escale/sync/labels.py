"""The label a client's conflict copies carry: its client label and its host.

Two machines usually give their client the same section name (``[documents]``
on the laptop and on the desktop). A conflict copy named after the section
alone would not say whose version it holds, so the planner is given
:func:`conflict_label`: ``<label>@<host>``, where ``<host>`` is this machine's
short host name. It is deterministic (the same client on the same machine
always gives the same label, so a conflict met twice gives one name), and
:func:`escale.sync.planner.conflict_name` keeps it within the name limits.
"""

from __future__ import annotations

import socket

#: The host part used when the machine has no usable host name.
UNKNOWN_HOST = "host"


def _clean(text: str) -> str:
    """``text`` with every character but letters, digits, ``-`` and ``_`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def short_host_name(name: str | None = None) -> str:
    """The first label of host name ``name`` (default: this machine's), cleaned
    for a file name: ``lab-pc.example.org`` -> ``lab-pc``."""
    if name is None:
        try:
            name = socket.gethostname()
        except OSError:
            name = ""
    first = name.strip().split(".", 1)[0]
    return _clean(first) or UNKNOWN_HOST


def conflict_label(label: str, host: str | None = None) -> str:
    """``<label>@<host>``: what names this client's conflict copies.

    ``label`` is the client's label (``client name``, else the section name);
    ``host`` is a host name (default: this machine's), shortened by
    :func:`short_host_name`.
    """
    return f"{_clean(label.strip()) or 'client'}@{short_host_name(host)}"
