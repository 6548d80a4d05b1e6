"""Drive a real process through a pseudo-terminal, as a person at a keyboard would."""

from __future__ import annotations

import os
import re
import select
import subprocess
import time


class Terminal:
    """A process whose standard streams are a new pseudo-terminal."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        master, slave = os.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                        start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.transcript = ""
        self.cursor = 0

    def _read(self, deadline: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the other side is closed
            return False
        if not data:
            return False
        self.transcript += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def expect(self, pattern: str, patience: float = 60.0) -> str:
        """Wait for ``pattern`` (a regular expression) after the last match; return the text matched."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + patience
        while True:
            match = regex.search(self.transcript, self.cursor)
            if match:
                self.cursor = match.end()
                return match.group(0)
            if time.monotonic() > deadline or not self._read(deadline):
                raise AssertionError(f"did not see {pattern!r}; transcript:\n{self.transcript}")

    def send(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def send_eof(self) -> None:
        os.write(self.master, b"\x04")

    def finish(self, patience: float = 120.0) -> int:
        """Read everything until the process ends; its exit code."""
        deadline = time.monotonic() + patience
        while self._read(deadline) and time.monotonic() < deadline:
            if self.process.poll() is not None and not select.select([self.master], [], [], 0.1)[0]:
                break
        code = self.process.wait(timeout=max(1.0, deadline - time.monotonic()))
        os.close(self.master)
        return code
