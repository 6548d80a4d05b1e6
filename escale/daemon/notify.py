"""Notice emails to a client's ``maintainer`` when the client aborts.

When a pass of a client with ``maintainer = EMAIL`` stops on a non-transient
error (wrong key, refused login, a relay in an unexpected state, an internal
error), the daemon logs it (always) and sends a short plain-text notice through
the local SMTP server: ``localhost:25``, or ``HOST:PORT`` from the environment
variable ``ESCALE_SMTP``. No authentication, no TLS: this is the local mail
transfer agent's job.

The notice names the client, the host, the relay (``describe()``: never a
password) and the error message (escale's messages never hold a secret). The
same error of the same client is notified at most once per
:data:`REPEAT_INTERVAL` seconds, so that a client failing on every retry does
not flood the mailbox. Sending never raises: a failure is logged.
"""

from __future__ import annotations

import getpass
import logging
import os
import smtplib
import socket
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from escale.config.settings import ClientSettings

log = logging.getLogger(__name__)

DEFAULT_SMTP = ("localhost", 25)
#: Seconds before the same error of the same client is notified again.
REPEAT_INTERVAL = 6 * 3600.0
SMTP_ENV = "ESCALE_SMTP"


def smtp_address() -> tuple[str, int]:
    """``(host, port)`` of the SMTP server: ``ESCALE_SMTP`` or localhost:25."""
    value = os.environ.get(SMTP_ENV, "").strip()
    if not value:
        return DEFAULT_SMTP
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        log.warning("%s=%r is not HOST:PORT; using localhost:25", SMTP_ENV, value)
        return DEFAULT_SMTP
    return host.strip("[]"), int(port)


def build_notice(settings: ClientSettings, error: str, *, config_path: str | None = None) -> EmailMessage:
    """The notice for ``settings``'s abort on ``error``."""
    host = socket.gethostname()
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "escale"
    message = EmailMessage()
    message["From"] = f"escale <{user}@{host}>"
    message["To"] = settings.maintainer or ""
    message["Subject"] = f"escale: client [{settings.name}] on {host} stopped on an error"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=host)
    lines = [
        f"The escale client [{settings.name}] ({settings.label}) on {host} stopped on an error:",
        "",
        f"    {error}",
        "",
        f"Relay:         {settings.relay.describe()}",
        f"Local folder:  {settings.local_path}",
    ]
    if config_path:
        lines.append(f"Configuration: {config_path}")
    lines += [
        f"Time:          {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        "",
        "escale retries this client with a growing delay; the other clients go on.",
        "See the escale log for details, and 'escalectl status' for the current state.",
    ]
    message.set_content("\n".join(lines) + "\n")
    return message


class Notifier:
    """Sends notices (callable as ``Runner.notify``)."""

    def __init__(self, *, config_path: str | None = None, address: tuple[str, int] | None = None,
                 repeat_interval: float = REPEAT_INTERVAL, timeout: float = 10.0) -> None:
        self.config_path = config_path
        self.address = address
        self.repeat_interval = repeat_interval
        self.timeout = timeout
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __call__(self, settings: ClientSettings, error: str) -> None:
        self.notify(settings, error)

    def notify(self, settings: ClientSettings, error: str) -> bool:
        """Send a notice for ``settings`` if it has a maintainer; True when sent."""
        if not settings.maintainer:
            return False
        now = time.monotonic()
        with self._lock:
            last = self._last.get((settings.name, error))
            if last is not None and now - last < self.repeat_interval:
                log.debug("[%s] notice already sent for this error", settings.name)
                return False
            self._last[(settings.name, error)] = now
        host, port = self.address or smtp_address()
        try:
            with smtplib.SMTP(host, port, timeout=self.timeout) as smtp:
                smtp.send_message(build_notice(settings, error, config_path=self.config_path))
        except (OSError, smtplib.SMTPException) as exc:
            with self._lock:
                self._last.pop((settings.name, error), None)
            log.warning("[%s] could not send the notice to %s through %s:%d: %s",
                        settings.name, settings.maintainer, host, port, exc)
            return False
        log.info("[%s] sent a notice to %s", settings.name, settings.maintainer)
        return True
