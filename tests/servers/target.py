"""What a relay server fixture hands to the tests: a :class:`RelayTarget`.

A target knows how to open a fresh repository on its server (a new folder per
call, so that tests never see each other's objects), how to describe that
repository as configuration lines for a real ``escale`` process, and, where the
server can be restarted in place, how to restart it on the same port.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from escale.relay import Relay, RelaySpec, make_relay

_counter = itertools.count()


def unique_folder(prefix: str = "repo") -> str:
    """A folder name no other test of this session uses."""
    return f"{prefix}{next(_counter):05d}"


def plant_file(root: str, folder: str, raw_name: str, data: bytes) -> bool:
    """Write ``data`` at ``root/folder/raw_name`` straight into a served folder
    (parents created, no name checks); always True (a ``RelayTarget.plant``)."""
    path = os.path.join(root, folder, raw_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return True


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for servers that cannot take port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening_pids(port: int, pids: list[int]) -> bool:
    """Whether one of ``pids`` holds the socket listening on TCP ``port``
    (read from /proc: a port that accepts may belong to another process, one
    that took the port found free before our server could bind it)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


def wait_for_port(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Poll until a TCP server accepts on ``port``; raise RuntimeError on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server on {host}:{port} did not start within {timeout}s")


@dataclass
class RelayTarget:
    """One running relay server (or local folder) as seen by tests.

    ``spec_for(folder)`` gives the RelaySpec of repository ``folder``;
    ``config_for(folder)`` the matching ``key = value`` lines of a client section.
    ``restart`` is None when the server cannot be restarted in place; ``plant``
    None when the test cannot reach the server's storage directly.
    """

    name: str
    spec_for: Callable[[str], RelaySpec]
    config_for: Callable[[str], dict[str, str]]
    restart: Callable[[], None] | None = None
    #: plant(folder, raw_name, data) writes an object straight into the server's
    #: storage, bypassing escale's name checks (a hostile relay); returns False
    #: when the server's storage cannot hold such a name.
    plant: Callable[[str, str, bytes], bool] | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def new_folder(self) -> str:
        return unique_folder()

    def relay(self, folder: str | None = None) -> Relay:
        """A closed relay on ``folder`` (a fresh one when None) whose ``open()``
        also creates the repository folder, as a test that writes to it expects
        (escale itself never creates one on open: Relay.create_root)."""
        return creating_on_open(make_relay(self.spec_for(folder or self.new_folder())))


def creating_on_open(relay: Relay) -> Relay:
    """``relay`` with an ``open()`` that connects, then creates the repository
    folder (see :meth:`Relay.create_root`); returns the same object."""
    connect = relay.open

    def open_and_create() -> None:
        connect()
        relay.create_root()

    relay.open = open_and_create  # type: ignore[method-assign]
    return relay


def assert_big_round_trip(relay: Relay, name: str = "big/object") -> None:
    """Put a multi-MiB object of random bytes (a size no block size divides)
    from the middle of its source, and assert it comes back byte for byte
    with that exact size."""
    data = os.urandom(5 * 1024 * 1024 + 12_345)
    source = io.BytesIO(b"skipped" + data)
    source.seek(7)  # a put stores the rest of its source
    relay.put(name, source)
    sink = io.BytesIO()
    relay.get(name, sink)
    assert sink.getvalue() == data
    assert relay.stat(name).size == len(data)
