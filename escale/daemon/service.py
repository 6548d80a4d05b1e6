"""Serving a configuration: signals, graceful stop, foreground run.

``escale`` (no ``--once``) calls :func:`serve`: every client runs until SIGINT
or SIGTERM, after which each finishes the object it is transferring and stops.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

from escale.config.settings import Config
from escale.daemon.runner import Runner
from escale.errors import EX_OK

log = logging.getLogger(__name__)


def serve(config: Config, *, detach: bool = False, allow_mass_deletion: bool = False) -> int:
    """Run every client of ``config`` until a stop signal; return the exit code."""
    runner = Runner(config, allow_mass_deletion=allow_mass_deletion)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping after the current transfers", signal.Signals(signum).name)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("escale running %d client(s) from %s", len(config.clients), config.path)
    runner.run_forever()
    log.info("escale stopped")
    return EX_OK
