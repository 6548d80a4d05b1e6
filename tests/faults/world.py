"""Several clients of one relay, driven in-process or as real processes.

A :class:`World` is a :class:`tests.e2e.cluster.Cluster` (one configuration
file, one section and one local folder per client; :meth:`Cluster.run` starts
a real ``escale --once`` process) that can also run a client's pass inside the
test process (:meth:`World.sync`, a :class:`SyncClient` built from the very
same configuration file): in-process passes are an order of magnitude cheaper
than a process start, so scenario tests use them for the bulk and real
processes where a process boundary matters (crashes, signals, resource limits).

Helpers here also work on the relay directly (:func:`open_relay`; what is
stored under a folder, reading, planting and deleting raw objects) and
keep a ledger of every write a test makes (:class:`Ledger`), to prove that no
version was lost.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from escale.config import parse_config
from escale.config.settings import ClientSettings
from escale.crypto import generate_key_file
from escale.errors import RelayNotFound
from escale.relay import Relay
from escale.sync.client import PassReport, SyncClient
from tests.e2e.cluster import Cluster, tree, write
from tests.servers.target import RelayTarget

__all__ = ["Ledger", "World", "open_relay", "placeable", "relay_delete", "relay_get", "relay_names", "relay_put",
           "sha", "tree", "write"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class World(Cluster):
    """A cluster whose clients can also run in-process."""

    def settings(self, name: str) -> ClientSettings:
        with open(self.config, encoding="utf-8") as handle:
            config = parse_config(handle.read(), self.config)
        for client in config.clients:
            if client.name == name:
                return client
        raise KeyError(name)

    def sync(self, name: str, *, lease_wait: float = 0.0, allow_mass_deletion: bool = False,
             lock_wait: float = 0.0) -> PassReport:
        """One pass of client ``name`` in this process (same config as a process);
        ``lock_wait``: seconds it may wait for the client's lock."""
        client = SyncClient(self.settings(name), lease_wait=lease_wait, allow_mass_deletion=allow_mass_deletion)
        return client.run_pass(lock_wait=lock_wait)

    def start(self, name: str, *extra: str, env: dict[str, str] | None = None,
              preexec: Callable[[], object] | None = None) -> subprocess.Popen[str]:
        """Start ``escale --once`` for ``name`` without waiting (stderr to a pipe)."""
        command = [sys.executable, "-m", "escale.cli.main", "--once", "-c", self.config, "-r", name, *extra]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})},
                                preexec_fn=preexec)

    def quiesce(self, names: Iterable[str], *, max_rounds: int = 8) -> int:
        """Run in-process passes of ``names`` in rounds until a whole round
        changes nothing and leaves nothing pending; return the rounds run.
        Raises AssertionError if that does not happen within ``max_rounds``."""
        order = list(names)
        noisy: list[str] = []
        for rounds in range(1, max_rounds + 1):
            noisy = []
            for name in order:
                report = self.sync(name)
                if (report.changed or report.busy or report.errors or report.pending_up
                        or report.pending_down or report.reclaimed):
                    noisy.append(f"{name}: {report.summary()}, pending {report.pending_up} up "
                                 f"{report.pending_down} down, errors {report.errors}")
            if not noisy:
                return rounds
        raise AssertionError(f"clients {order} still changing after {max_rounds} rounds: {noisy}")

    def log_text(self) -> str:
        path = os.path.join(self.base, "escale.log")
        if not os.path.exists(path):
            return ""
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


@contextlib.contextmanager
def open_relay(world: Cluster) -> Iterator[Relay]:
    """The world's repository folder, as a relay open for the ``with`` block
    (straight on the server: no repository, no encryption)."""
    relay = world.target.relay(world.folder)
    relay.open()
    try:
        yield relay
    finally:
        relay.close()


def relay_names(world: Cluster, folder: str) -> list[str]:
    """Object names under ``folder`` of the world's repository (sorted)."""
    with open_relay(world) as relay:
        try:
            return sorted(e.name for e in relay.list(folder) if not e.is_dir)
        except RelayNotFound:
            return []


def relay_get(world: Cluster, name: str) -> bytes:
    """The stored bytes of relay object ``name`` (sealed, as the relay holds them)."""
    with open_relay(world) as relay:
        return relay.get_bytes(name)


def relay_put(world: Cluster, objects: dict[str, bytes]) -> None:
    """Store each ``name: data`` of ``objects`` on the relay, as a hostile or
    faulty relay would (nothing sealed here)."""
    with open_relay(world) as relay:
        for name, data in objects.items():
            relay.put_bytes(name, data)


def relay_delete(world: Cluster, names: Iterable[str]) -> None:
    """Delete relay objects ``names`` (the relay loses them)."""
    with open_relay(world) as relay:
        for name in names:
            relay.delete(name)


_CONFLICT = re.compile(r"\.conflict-[A-Za-z0-9_@-]+-[0-9a-f]{8}")


def placeable(root: str, name: str) -> bool:
    """Whether a test can make a file ``name`` under ``root``: it is not a
    folder there (even an empty one), and none of its folders is a file."""
    if os.path.isdir(os.path.join(root, name)):
        return False
    folders = [os.path.join(root, name[:cut]) for cut in range(len(name)) if name[cut] == "/"]
    return not any(os.path.lexists(f) and not os.path.isdir(f) for f in folders)


def origin_path(path: str) -> str:
    """The path a (possibly nested) conflict copy was made from."""
    return _CONFLICT.sub("", path)


@dataclass
class Ledger:
    """Every content a test wrote, and which of them a later write superseded.

    Contents are unique per write (tests add a nonce), so a sha256 identifies
    one write. A write is *superseded* when the test later overwrote or deleted
    that content on a client whose folder held it at that moment (the user
    replaced it knowingly). Every other write must survive somewhere.
    """

    written: dict[str, tuple[str, str]] = field(default_factory=dict)  # sha -> (client, path)
    superseded: set[str] = field(default_factory=set)

    def write(self, client: str, root: str, rel: str, data: bytes) -> None:
        self.replace(root, rel)
        write(root, rel, data)
        self.written[sha(data)] = (client, rel)

    def replace(self, root: str, rel: str) -> None:
        """Note that the content now at ``rel`` (if any) is being replaced."""
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                self.superseded.add(sha(handle.read()))

    def delete(self, root: str, rel: str) -> None:
        self.replace(root, rel)
        os.remove(os.path.join(root, rel))

    def missing(self, trees: Iterable[dict[str, str]]) -> dict[str, tuple[str, str]]:
        """Writes neither superseded nor present (at any path) in ``trees``."""
        present: set[str] = set()
        for t in trees:
            present |= set(t.values())
        return {h: where for h, where in self.written.items() if h not in self.superseded and h not in present}


def encrypted_pair(tmp_path: str, target: RelayTarget, files: dict[str, bytes], *,
                   transfers: int = 4) -> tuple[World, str, str]:
    """A world with clients a and b (encrypted with one shared key,
    ``transfers`` each) and ``files`` written in a's folder, not yet synced;
    returns the world and the two folders."""
    world = World(tmp_path, target, target.new_folder())
    key = os.path.join(tmp_path, "shared.key")
    generate_key_file(key)
    world.common.update({"encryption": "yes", "key": key, "transfers": str(transfers)})
    a = world.add("a")
    b = world.add("b")
    for rel, data in files.items():
        write(a, rel, data)
    return world, a, b


def small_files(count: int, seed: int) -> dict[str, bytes]:
    """``count`` files of 0 to 5,000 random bytes in four folders (the same for the same seed)."""
    rng = random.Random(seed)
    return {f"s{i % 4}/f{i:03d}.txt": rng.randbytes(rng.randrange(0, 5000)) for i in range(count)}
