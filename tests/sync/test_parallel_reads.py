"""Reading the relay state on several connections (issue 11).

A pass on a network relay with ``transfers`` above 1 fetches the placeholders
it has not cached on its transfer connections (:mod:`escale.sync.reads`).
These tests run real passes over a real SFTP server and check that such a
read keeps every rule of a read on one connection: forged objects are refused
one by one with a log line, a refused newest version falls back to the
version below it, and a relay that goes back is still reported.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from escale.crypto import plain_envelope
from escale.protocol import layout
from escale.protocol.objects import Placeholder
from escale.protocol.repository import READER_MIN
from escale.relay import Relay, make_relay
from escale.relay.retry import RetryingRelay
from escale.sync.client import SyncClient
from tests.faults.test_transfers import Gate, GatedRelay
from tests.faults.world import World, open_relay, relay_put, tree, write
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(300)

OUTSIDER = "e" * 32
FILES = 3 * READER_MIN


@pytest.fixture
def sftp_world(tmp_path: Path, target_sftp: RelayTarget) -> World:
    return World(str(tmp_path), target_sftp, target_sftp.new_folder())


def _forged(path: str, version: int, data: bytes) -> tuple[str, bytes]:
    """A plain placeholder of ``path`` by an outsider, its name and bytes."""
    key = plain_envelope().object_key(path)
    placeholder = Placeholder(
        path=path, key=key, version=version, generation=1, kind="file", pusher=OUTSIDER,
        pusher_label="outsider", size=len(data), mtime_ns=1_700_000_000_000_000_000,
        checksum=f"sha256:{hashlib.sha256(data).hexdigest()}", payload=layout.data_name(key, version), receivers=())
    return layout.meta_name(key, version), placeholder.encode()


def test_parallel_read_refuses_what_a_serial_read_refuses(sftp_world: World,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    a = sftp_world.add("a", encryption="no", transfers="4")
    b = sftp_world.add("b", encryption="no", transfers="4")
    sftp_world.sync("b")
    for i in range(FILES):
        write(a, f"d/f{i:03d}.txt", f"content {i}\n")
    assert len(sftp_world.sync("a").pushed) == FILES
    # on the relay: a placeholder in no canonical form, one whose key is not its path's,
    # and a garbage newest version above a real file's version 1
    bad_form = layout.meta_name(plain_envelope().object_key("d/bad.txt"), 1)
    _, good = _forged("d/wrong-key.txt", 1, b"x\n")
    wrong_key = layout.meta_name(plain_envelope().object_key("d/other.txt"), 1)
    shadowed = layout.meta_name(plain_envelope().object_key("d/f005.txt"), 2)
    relay_put(sftp_world, {bad_form: b'{"format":1, "type":"placeholder"}', wrong_key: good,
                           shadowed: b"not json"})
    caplog.set_level(logging.DEBUG, logger="escale.protocol.repository")
    report = sftp_world.sync("b")
    assert f"reading {FILES + 2} placeholders on other connections" in caplog.text
    assert sorted(report.pulled) == sorted(f"d/f{i:03d}.txt" for i in range(FILES))
    assert tree(b) == tree(a)
    logged = caplog.text
    for refused in (bad_form, wrong_key, shadowed):
        assert f"ignoring relay object {refused}" in logged
    assert "d/wrong-key.txt" not in tree(b) and "d/other.txt" not in tree(b)


def test_parallel_read_then_cache_sees_a_rolled_back_relay(sftp_world: World) -> None:
    """The placeholders read on the transfer connections are cached as a
    serial read caches them: a relay that later shows an older version of a
    file is reported and not applied over the newer local file."""
    a = sftp_world.add("a", encryption="no", transfers="4")
    b = sftp_world.add("b", encryption="no", transfers="4")
    sftp_world.sync("b")
    for i in range(FILES):
        write(a, f"f{i:03d}.txt", f"one {i}\n")
    sftp_world.sync("a")
    sftp_world.sync("b")
    with open(f"{b}/f000.txt", encoding="utf-8") as handle:
        assert handle.read() == "one 0\n"
    write(a, "f000.txt", "two 0\n")
    sftp_world.sync("a")
    sftp_world.sync("b")
    assert tree(b) == tree(a)
    # the relay goes back: version 2 of f000.txt disappears, a version 1 comes back
    key = plain_envelope().object_key("f000.txt")
    with open_relay(sftp_world) as relay:
        relay.delete(layout.meta_name(key, 2))
    name, data = _forged("f000.txt", 1, b"one 0\n")
    relay_put(sftp_world, {name: data, layout.data_name(key, 1): b"one 0\n"})
    report = sftp_world.sync("b")
    assert "f000.txt" not in report.pulled
    assert any("f000.txt" in line for line in report.warnings + report.errors)
    with open(f"{b}/f000.txt", encoding="utf-8") as handle:
        assert handle.read() == "two 0\n"


def test_a_server_that_refuses_more_connections_is_read_on_the_main_one(
        sftp_world: World, caplog: pytest.LogCaptureFixture) -> None:
    """No transfer connection can be opened (the server takes one per
    client): the placeholders are read on the pass's own connection, and the
    plan is the one a read on several connections gives."""
    a = sftp_world.add("a", encryption="no", transfers="4")
    sftp_world.add("b", encryption="no", transfers="4")
    sftp_world.sync("b")
    for i in range(FILES):
        write(a, f"f{i:03d}.txt", f"content {i}\n")
    sftp_world.sync("a")
    settings = sftp_world.settings("b")
    plans = []
    for limit in (None, 1):
        gate = Gate(want=1)
        gate.max_connections = limit

        def factory(gate: Gate = gate) -> Relay:
            return RetryingRelay(GatedRelay(make_relay(settings.relay), gate), base_delay=0.01)

        client = SyncClient(settings, dry_run=True, relay_factory=factory)
        with caplog.at_level(logging.DEBUG, logger="escale.sync.reads"):
            report = client.run_pass()
        assert report.errors == []
        assert client.last_plan is not None
        plans.append(sorted((x.kind, x.path) for x in client.last_plan.actions))
        assert gate.opened == gate.closed
    assert plans[0] == plans[1] == sorted(("pull", f"f{i:03d}.txt") for i in range(FILES))
    assert "reading it on the main one" in caplog.text
