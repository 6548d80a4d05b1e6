"""``escalectl status --files``: each file's delivery record, read from the
client's state database (so it works with or without a running daemon).

The records are kept by the sync pass (:mod:`escale.sync.delivery`): files
waiting to be sent (``pending``), sent, delivered (with the receivers that
acknowledged them and, with ``after delivery``, what was done with the local
file), and received from other clients.
"""

from __future__ import annotations

import os

from escale.config.settings import ClientSettings
from escale.sync.client import state_dir_for
from escale.sync.state import Delivery, StateDB


def file_status(settings: ClientSettings) -> list[Delivery]:
    """The delivery records of client ``settings``, by path; empty when the
    client never ran. Raises LocalError when its state database cannot be read."""
    path = os.path.join(state_dir_for(settings), "state.db")
    if not os.path.exists(path):
        return []
    db = StateDB(path)
    try:
        return db.deliveries()
    finally:
        db.close()
