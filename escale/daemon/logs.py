"""Logging setup for the commands: a rotated log file or standard error.

Library code only logs; the commands call :func:`setup_logging` once. Log lines
carry the client name in brackets and never a secret (the code that logs makes
sure of that; the crypto and config layers never pass secrets to a logger).
"""

from __future__ import annotations

import logging
import logging.handlers
import os

from escale.config.settings import GlobalSettings
from escale.errors import ConfigError

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Size at which the log file is rotated; ``log rotate`` old files are kept.
ROTATE_BYTES = 10 * 1024 * 1024


def setup_logging(settings: GlobalSettings, *, verbose: int = 0, stream: bool = True,
                  config_path: str | None = None) -> None:
    """Send log records to ``log file`` (rotated) or to standard error.

    ``verbose`` raises the level (1: INFO, 2: DEBUG) over ``log level``.
    Raises ConfigError when the log file cannot be opened.
    """
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    if verbose >= 2:
        level = logging.DEBUG
    elif verbose == 1:
        level = min(level, logging.INFO)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.setLevel(level)
    handler: logging.Handler
    if settings.log_file:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(settings.log_file)), exist_ok=True)
            handler = logging.handlers.RotatingFileHandler(
                settings.log_file, maxBytes=ROTATE_BYTES, backupCount=settings.log_rotate, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open log file {settings.log_file}: {exc.strerror}",
                              path=config_path, key="log file") from exc
    elif stream:
        handler = logging.StreamHandler()
    else:
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    for noisy in ("paramiko", "urllib3", "pyftpdlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
