"""An SMTP server on 127.0.0.1 that keeps the messages it receives (for tests).

The SMTP dialogue is aiosmtpd's; this module only runs it on an event loop in
a thread of its own, on a port the system picks (bound to port 0, then read
back: no race with another server), and keeps what arrives.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message

from aiosmtpd.smtp import SMTP, Envelope, Session

#: Seconds to wait for the server's loop to start or stop.
PATIENCE = 30.0


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> Message:
        return message_from_bytes(self.data)

    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()


class SmtpSink:
    """Serves SMTP on a free port of 127.0.0.1 between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """aiosmtpd's hook for each message accepted (the name is aiosmtpd's)."""
        content = envelope.content
        data = content.encode() if isinstance(content, str) else bytes(content or b"")
        with self.lock:
            self.messages.append(Received(envelope.mail_from or "", list(envelope.rcpt_tos), data))
        return "250 queued"

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    def start(self) -> SmtpSink:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="smtp-sink", daemon=True)
        self._thread.start()
        serving = loop.create_server(lambda: SMTP(self, hostname="sink"), "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(serving, loop).result(PATIENCE)
        return self

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or thread is None:
            return
        if server is not None:
            async def close() -> None:  # on the loop's thread: asyncio objects are not thread-safe
                server.close()
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), loop).result(PATIENCE)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(PATIENCE)
        loop.close()
        self._loop = self._thread = self._server = None

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.messages)
