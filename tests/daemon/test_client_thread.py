"""A client's thread in the daemon never dies silently: whatever a pass or the wait
after it raises, the client is reported and retried with back-off."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from escale.config.settings import ClientSettings, Config, GlobalSettings
from escale.daemon.runner import BUSY_RETRY, Runner
from escale.errors import ClientBusy, EscaleError
from escale.relay import RelaySpec
from escale.sync.report import PassReport
from tests.daemon.helpers import Daemons, ctl, two_clients, wait_for


def test_a_refresh_beyond_what_a_wait_accepts_keeps_the_client_alive(tmp_path: Path) -> None:
    """Settings made by a program (not a file, which refuses it) with ``refresh = 1e26``:
    the thread used to die in its wait after the first pass while the daemon ran on."""
    settings = ClientSettings(name="far", local_path=str(tmp_path / "local"), refresh=1e26,
                              relay=RelaySpec(protocol="file", directory=str(tmp_path / "relay")))
    runner = Runner(Config(str(tmp_path / "escale.conf"), GlobalSettings(), (settings,)))
    status = runner.statuses["far"]
    assert runner.start_client("far")
    try:
        wait_for(lambda: status.next_pass, "the first pass to end and the wait to begin")
        thread = runner.threads["far"]
        thread.join(1.0)  # a thread that fails its wait ends here at once
        assert thread.is_alive() and runner.client_state("far") == "running"
        assert (status.passes, status.failures, status.last_error) == (1, 0, None)
    finally:
        runner.stop()
        for thread in runner.threads.values():
            thread.join()
    assert not status.running and status.last_error is None
    assert not any(t.name == "escale-far" for t in threading.enumerate())


def test_a_pass_that_raises_unexpectedly_is_reported_and_retried(tmp_path: Path, daemons: Daemons) -> None:
    """A state folder replaced by a file while the daemon runs (no start-up check can
    see it): the client fails, is reported in status, retried with back-off, and the
    other client goes on; once the folder is back, the client syncs again."""
    config = two_clients(str(tmp_path))
    with open(config, "a", encoding="utf-8") as handle:
        handle.write("[carol]\nlocal path = carol\nprotocol = file\nrelay directory = relay\n"
                     "state directory = carol-state\nrefresh = 0.2\n")
    daemons.start(config)

    def status() -> dict[str, Any]:
        result = ctl(config, "--json", "status")
        assert result.returncode == 0, result.stderr
        return {c["name"]: c for c in json.loads(result.stdout)["clients"]}

    wait_for(lambda: status()["carol"]["passes"] >= 1, "carol's first pass")
    # moved away in one step: removing it file by file races the running client, which
    # may create a file in it between the listing and the removal ("Directory not empty")
    os.rename(tmp_path / "carol-state", tmp_path / "carol-state-gone")
    (tmp_path / "carol-state").write_text("a file where the state folder was\n")
    wait_for(lambda: status()["carol"]["failures"] >= 2, "carol to fail twice")
    clients = status()
    assert clients["carol"]["state"] == "running" and clients["carol"]["last_error"]
    os.makedirs(tmp_path / "alice", exist_ok=True)
    (tmp_path / "alice" / "note.txt").write_text("for bob and carol\n")
    wait_for(lambda: (tmp_path / "bob" / "note.txt").exists(), "alice's file to reach bob")
    os.remove(tmp_path / "carol-state")
    wait_for(lambda: (tmp_path / "carol" / "note.txt").exists(), "carol to sync again once repaired")
    assert status()["carol"]["state"] == "running"


def test_a_client_stuck_in_its_pass_does_not_hold_up_starting_the_others(tmp_path: Path) -> None:
    """``escalectl start alice`` while alice, asked to stop, is stuck in a pass (a relay
    that hangs) waits for alice; it used to hold the daemon's client table meanwhile,
    so that starting (or loading) any other client waited for alice too."""
    relay = RelaySpec(protocol="file", directory=str(tmp_path / "relay"))
    clients = tuple(ClientSettings(name=name, local_path=str(tmp_path / name), relay=relay, watch=False)
                    for name in ("alice", "bob"))
    runner = Runner(Config(str(tmp_path / "escale.conf"), GlobalSettings(), clients))
    in_pass, release = threading.Event(), threading.Event()

    def hanging_pass(*, lock_wait: float = 0.0) -> Any:
        in_pass.set()
        release.wait()
        raise EscaleError("the relay hung up")

    runner.clients["alice"].run_pass = hanging_pass  # type: ignore[method-assign]
    assert runner.start_client("alice")
    stuck = runner.threads["alice"]
    starters: list[threading.Thread] = []
    try:
        wait_for(in_pass.is_set, "alice's pass to hang")
        assert not runner.stop_client("alice", timeout=0)  # still stopping
        joining = threading.Event()
        join = stuck.join

        def spy(timeout: float | None = None) -> None:
            joining.set()
            join(timeout)

        stuck.join = spy  # type: ignore[method-assign]
        starters.append(threading.Thread(target=runner.start_client, args=("alice",)))
        starters[-1].start()
        wait_for(joining.is_set, "the start of alice to wait for her stuck pass")
        starters.append(threading.Thread(target=runner.start_client, args=("bob",)))
        starters[-1].start()
        wait_for(lambda: runner.client_state("bob") == "running", "bob to start beside the stuck alice")
    finally:
        release.set()
        runner.stop()
        for thread in [*starters, *runner.threads.values()]:
            thread.join()


def test_a_skipped_pass_after_a_busy_relay_waits_a_whole_refresh(tmp_path: Path) -> None:
    """With a watch, a pass that found the relay busy is tried again after 2 s. A
    pass skipped next (another escale process holds the client: a cron ``--once``)
    kept that short wait from the report before it, and tried again every 2 s for
    as long as the other process ran."""
    (tmp_path / "local").mkdir()
    settings = ClientSettings(name="a", local_path=str(tmp_path / "local"), refresh=300.0,
                              relay=RelaySpec(protocol="file", directory=str(tmp_path / "relay")))
    runner = Runner(Config(str(tmp_path / "escale.conf"), GlobalSettings(), (settings,)))
    status = runner.statuses["a"]
    calls: list[float] = []  # the time of the next pass that the status showed at each call

    def relay_busy_then_client_busy(*, lock_wait: float = 0.0) -> PassReport:
        calls.append(status.next_pass)
        if len(calls) == 1:
            return PassReport("a", busy=True)
        raise ClientBusy("client [a] is already being synced by another escale process")

    runner.clients["a"].run_pass = relay_busy_then_client_busy  # type: ignore[method-assign]
    assert runner.start_client("a")
    try:
        wait_for(lambda: len(calls) >= 2 and status.next_pass != calls[1], "the wait after the skipped pass")
        assert status.next_pass - time.time() > BUSY_RETRY * 10
    finally:
        runner.stop()
        for thread in runner.threads.values():
            thread.join()
