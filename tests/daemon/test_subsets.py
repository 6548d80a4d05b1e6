"""Starting and stopping any subset of a configuration's clients (issue 12),
through real escalectl and escale daemon processes on a file relay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.daemon.helpers import Daemons, ctl, daemon_pid, wait_for, write_config


def _three(folder: Path) -> str:
    sections = {name: {"local path": name, "protocol": "file", "relay directory": "relay", "encryption": "no"}
                for name in ("alice", "bob", "carol")}
    for name in sections:
        (folder / name).mkdir()
    return write_config(str(folder), sections)


def _clients(config: str) -> dict[str, dict[str, Any]]:
    result = ctl(config, "--json", "status")
    assert result.returncode == 0, result.stderr
    return {c["name"]: c for c in json.loads(result.stdout)["clients"]}


def _passes(config: str, name: str) -> int:
    passes: int = _clients(config)[name]["passes"]
    return passes


def test_stop_with_nothing_running_is_not_an_error(tmp_path: Path) -> None:
    config = _three(tmp_path)
    for args in (("stop",), ("stop", "bob")):
        result = ctl(config, *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"escale is not running for {config}" or \
            result.stdout.strip().startswith("escale is not running for")
        assert result.stderr == ""


def test_cold_start_of_a_subset_then_add_and_restart_one(tmp_path: Path, daemons: Daemons) -> None:
    config = _three(tmp_path)
    daemons.track(config)
    started = ctl(config, "start", "alice", "bob")
    assert started.returncode == 0, started.stderr
    daemons.track(config)
    pid = daemon_pid(config)
    assert pid is not None
    assert {n: c["state"] for n, c in _clients(config).items()} == {
        "alice": "running", "bob": "running", "carol": "not loaded"}

    stop_carol = ctl(config, "stop", "carol")
    assert stop_carol.returncode == 0, stop_carol.stderr
    assert "[carol] not running (the daemon did not load it)" in stop_carol.stdout

    added = ctl(config, "start", "carol")  # read from the file again
    assert added.returncode == 0, added.stderr
    assert "[carol] loaded from" in added.stdout
    wait_for(lambda: _passes(config, "carol") >= 1, "carol's first pass")
    (tmp_path / "carol" / "from-carol.txt").write_text("hello")
    wait_for(lambda: (tmp_path / "bob" / "from-carol.txt").exists(), "bob to receive carol's file")

    wait_for(lambda: _passes(config, "bob") >= 2, "bob's passes")
    bob_before = _passes(config, "bob")
    restarted = ctl(config, "restart", "alice")
    assert restarted.returncode == 0, restarted.stderr
    assert "[alice] restarted" in restarted.stdout
    clients = _clients(config)
    assert daemon_pid(config) == pid  # the daemon went on
    assert clients["bob"]["state"] == "running" and clients["carol"]["state"] == "running"
    assert clients["bob"]["passes"] >= bob_before  # bob's thread and counters untouched
    wait_for(lambda: _passes(config, "bob") > bob_before + 1, "bob to keep passing")

    stopped = ctl(config, "stop", "bob")
    assert stopped.returncode == 0, stopped.stderr
    clients = _clients(config)
    assert clients["bob"]["state"] == "stopped"
    assert clients["alice"]["state"] == "running" and clients["carol"]["state"] == "running"

    unknown = ctl(config, "start", "dave")
    assert unknown.returncode == 64
    assert "no section [dave]" in unknown.stderr


def test_restart_of_a_subset_with_nothing_running_starts_only_it(tmp_path: Path, daemons: Daemons) -> None:
    config = _three(tmp_path)
    daemons.track(config)
    result = ctl(config, "restart", "carol")
    assert result.returncode == 0, result.stderr
    daemons.track(config)
    assert {n: c["state"] for n, c in _clients(config).items()} == {
        "alice": "not loaded", "bob": "not loaded", "carol": "running"}
