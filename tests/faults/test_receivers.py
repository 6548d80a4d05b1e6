"""Receivers that never come back, and receivers that miss a version (issue 9,
items 13 and 14), through real ``escale --once`` and ``escalectl`` processes.

* A client that registered once and never came back is reported stale (log and
  pass warnings, ``escalectl clients``), still pins what it has not
  acknowledged (under ``disk quota`` the next file waits), and ``escalectl
  clients forget`` lets reclaim go on so that sync resumes.
* With ``puller count = 1`` and two receivers, the second one finds the version
  reclaimed: it warns, naming the path, the version and the count.

Staleness is judged on the observer's own clock between its own observations:
``stale receiver = 0.001`` makes a receiver whose stamp did not change stale at
the observer's second pass, with no sleep.
"""

from __future__ import annotations

import json
import os

import pytest

from escale.sync.labels import conflict_label
from tests.faults.world import World, relay_names, tree, write

pytestmark = pytest.mark.timeout(240)

SIZE = 100_000
TINY = "0.001"


def test_gone_receiver_is_reported_and_forgetting_it_lets_sync_resume(file_world: World) -> None:
    world = file_world
    a = world.add("a", disk_quota=f"{int(SIZE * 1.5)}B", stale_receiver=TINY)
    world.add("gone", stale_receiver=TINY)
    c = world.add("c", stale_receiver=TINY)
    world.run("gone")  # registers once (its folder empty), never runs again
    world.sync("c")
    write(a, "one.bin", os.urandom(SIZE))
    write(a, "two.bin", os.urandom(SIZE))
    world.run("a")  # sends one.bin; two.bin waits for room; first sight of gone's stamp
    world.sync("c")  # c receives one.bin (and refreshes its own stamp)
    world.run("a")  # second sight of gone's unchanged stamp: stale
    log = world.log_text()
    assert "receiver gone (" in log and "not seen for" in log and "escalectl clients forget" in log
    assert "receiver c (" not in log, "an active receiver was reported stale"

    # gone pins one.bin: the quota holds two.bin back, pass after pass
    for _ in range(2):
        world.sync("c")
        report = world.sync("a")
        assert report.pushed == [] and report.pending_up == 1, report.summary()
    assert any(w.startswith("receiver gone (") and "1 version(s) wait for it" in w for w in report.warnings), \
        report.warnings
    assert not any(w.startswith("receiver c (") for w in report.warnings), report.warnings

    world.sync("c")  # a sign of life from c since a's last pass
    listed = world.ctl("--json", "clients", "a")
    assert listed.returncode == 0, listed.stderr
    clients = {c["label"]: c for c in json.loads(listed.stdout)["clients"]}
    assert set(clients) == {"a", "gone", "c"}
    assert clients["gone"]["stale"] is True and clients["gone"]["pending"] == 1
    assert clients["gone"]["receives"] is True and clients["gone"]["forgotten"] is False
    assert clients["a"]["me"] is True and clients["c"]["stale"] is False and clients["c"]["pending"] == 0
    table = world.ctl("clients", "a")
    assert table.returncode == 0 and "STALE" in table.stdout and "gone" in table.stdout, table.stdout

    # a prefix that is not unique, and no --yes without a terminal, change nothing
    refused = world.ctl("clients", "forget", "", "a", "--yes")
    assert refused.returncode == 64, refused.stderr
    refused = world.ctl("clients", "forget", "gone", "a")
    assert refused.returncode == 64 and "--yes" in refused.stderr, refused.stderr
    gone_id = clients["gone"]["client"]
    forgot = world.ctl("clients", "forget", gone_id[:8], "a", "--yes")
    assert forgot.returncode == 0, forgot.stderr
    assert "forgot client gone" in forgot.stdout

    # reclaim goes on without it; two.bin goes; c gets everything
    for _ in range(4):
        world.sync("a")
        world.sync("c")
        if tree(c) == tree(a):
            break
    assert tree(c) == tree(a) and set(tree(c)) == {"one.bin", "two.bin"}
    report = world.sync("a")
    assert not any("gone" in w for w in report.warnings), report.warnings
    assert relay_names(world, "data") == []
    after = json.loads(world.ctl("--json", "clients", "a").stdout)
    assert {c["label"]: c["forgotten"] for c in after["clients"]} == {"a": False, "gone": True, "c": False}


def test_second_receiver_is_told_what_puller_count_made_it_miss(file_world: World) -> None:
    world = file_world
    a = world.add("a", puller_count="1")
    b = world.add("b")
    c = world.add("c")
    world.sync("b")
    world.sync("c")
    write(a, "report.txt", "only one puller gets this")
    assert world.sync("a").pushed == ["report.txt"]
    assert world.sync("b").pulled == ["report.txt"]
    assert world.sync("a").reclaimed == ["report.txt"]  # puller count 1 reached
    world.run("c")
    assert "report.txt" not in tree(c)
    pusher = conflict_label("a")  # as a names itself in what it pushes: its label and this host
    missed = f"report.txt: version 1 from {pusher} missed: puller count 1 reached before this client received it"
    assert missed in world.log_text()
    report = world.sync("c")
    assert report.warnings == [missed]
    assert world.log_text().count(f"report.txt: version 1 from {pusher} missed") == 1, "logged once per version"
    # b, which received it, has nothing to report; a newer version reaches c again
    assert world.sync("b").warnings == []
    write(a, "report.txt", "version two")
    world.sync("a")
    assert world.sync("c").pulled == ["report.txt"]
    assert world.sync("c").warnings == []
    assert tree(c)["report.txt"] == tree(a)["report.txt"]
    assert tree(b)["report.txt"] != tree(a)["report.txt"]  # b has not run since


def test_registrations_without_a_sign_of_life_stay_valid() -> None:
    """A registration written before ``seen`` and ``forgotten`` existed still
    reads (as never refreshed, not forgotten); new records read back whole."""
    from escale.protocol.objects import ClientRecord

    client = "0123456789abcdef0123456789abcdef"
    old = (b'{"client":"' + client.encode() + b'","format":1,"label":"laptop","mode":"shared",'
           b'"receives":true,"type":"client"}')
    record = ClientRecord.decode(old, f"clients/{client}")
    assert (record.seen, record.forgotten, record.receives) == (None, False, True)
    assert record.encode() == old  # rewritten unchanged by a client that does not refresh it
    marker = ClientRecord(client, "laptop", False, "shared", seen=1790000000123, forgotten=True)
    assert ClientRecord.decode(marker.encode(), f"clients/{client}") == marker
