"""escalectl start/stop/restart/status against real escale daemons on a file relay."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from escale.daemon.pidfile import instance_paths, is_escale_process
from escale.processes import pid_alive
from tests.daemon.helpers import Daemons, ctl, ctl_here, daemon_pid, escale, two_clients, wait_for


def _status_json(config: str) -> dict[str, Any]:
    result = ctl(config, "--json", "status")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def _client(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in status["clients"] if c["name"] == name)


def test_start_status_stop(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    os.makedirs(tmp_path / "alice")
    (tmp_path / "alice" / "hello.txt").write_text("hello bob\n")

    pid = daemons.start(config)
    paths = instance_paths(config)
    assert pid_alive(pid) and is_escale_process(pid)
    assert stat.S_IMODE(os.stat(paths.socket).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(paths.socket).st_mode)
    assert stat.S_IMODE(os.stat(paths.folder).st_mode) == 0o700

    # the daemon really syncs: alice's file reaches bob
    wait_for(lambda: (tmp_path / "bob" / "hello.txt").exists(), "bob to receive hello.txt")
    assert (tmp_path / "bob" / "hello.txt").read_text() == "hello bob\n"

    wait_for(lambda: all(c["last_pass"] for c in _status_json(config)["clients"]), "a pass of each client")
    status = _status_json(config)
    assert status["running"] is True and status["pid"] == pid
    assert status["config"] == os.path.realpath(config)
    alice = _client(status, "alice")
    assert alice["state"] == "running" and alice["mode"] == "shared"
    assert alice["relay"] == f"file://{tmp_path / 'relay'}"
    assert alice["last_pass"]["ok"] is True
    assert alice["pending_up"] == {"files": 0, "bytes": 0}
    assert alice["last_error"] is None

    table = ctl(config, "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert f"escale is running for {os.path.realpath(config)} (pid {pid}" in lines[0]
    header = next(line for line in lines if line.startswith("CLIENT"))
    assert header.split() == ["CLIENT", "STATE", "MODE", "RELAY", "LAST", "PASS", "PENDING", "UP", "PENDING",
                              "DOWN", "RELAY", "USE"]
    assert any(line.split()[:3] == ["alice", "running", "shared"] for line in lines)
    assert any(line.split()[:3] == ["bob", "running", "shared"] for line in lines)

    stopped = ctl(config, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"escale stopped (pid {pid})"
    assert not pid_alive(pid)
    assert not os.path.exists(paths.pid_file) and not os.path.exists(paths.socket)

    after = ctl(config, "status")
    assert after.returncode == 3
    assert after.stdout.splitlines()[0] == f"escale is not running for {os.path.realpath(config)}"
    assert [line.split()[:2] for line in after.stdout.splitlines()[2:]] == [["alice", "stopped"],
                                                                           ["bob", "stopped"]]
    as_json = ctl(config, "status", "--json")
    assert as_json.returncode == 3
    doc = json.loads(as_json.stdout)
    assert doc["running"] is False and [c["name"] for c in doc["clients"]] == ["alice", "bob"]


def test_second_daemon_is_refused(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    pid = daemons.start(config)
    again = ctl(config, "start")
    assert again.returncode == 75
    assert again.stderr.strip() == f"escalectl: escale is already running for {os.path.realpath(config)} (pid {pid})"
    direct = escale("-c", config)
    assert direct.returncode == 75
    assert "already running" in direct.stderr.splitlines()[-1]
    detached = escale("-d", "-c", config)
    assert detached.returncode == 75
    assert daemon_pid(config) == pid and pid_alive(pid)


def test_commands_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = two_clients(str(tmp_path))
    for args in (("stop",), ("stop", "alice")):  # nothing to stop is not an error (issue 12)
        code, out, err = ctl_here(capsys, config, *args)
        assert code == 0, (args, err)
        lines = out.splitlines()
        assert len(lines) == 1 and "escale is not running for" in lines[0]
    # start/restart CLIENT with no daemon start one: tests/daemon/test_subsets.py
    assert ctl_here(capsys, config, "status")[0] == 3


def test_unknown_section_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    for args in (("stop", "carol"), ("start", "carol"), ("leases", "-r", "carol"),
                 ("access", str(tmp_path / "alice" / "x"), "-r", "carol")):
        code, _, err = ctl_here(capsys, config, *args)
        assert code == 64, (args, err)
        assert err.strip().endswith(f"no section [carol] in {os.path.realpath(config)} (sections: alice, bob)")
    daemons.start(config)
    result = ctl(config, "stop", "alice", "carol")
    assert result.returncode == 64
    assert _client(_status_json(config), "alice")["state"] == "running"


def test_bad_command_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = two_clients(str(tmp_path))
    for args in (("bogus",), (), ("stop", "--timeout", "soon"), ("status", "--bogus")):
        code, _, err = ctl_here(capsys, config, *args)
        assert code == 64, (args, err)
        assert err.splitlines()[-1].startswith("escalectl: ")
    code, _, err = ctl_here(capsys, str(tmp_path / "nope.conf"), "status")
    assert code == 78
    assert "nope.conf" in err


def test_stop_and_start_one_client(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    pid = daemons.start(config)
    result = ctl(config, "stop", "alice")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[alice] stopped"
    status = _status_json(config)
    assert _client(status, "alice")["state"] == "stopped"
    assert _client(status, "bob")["state"] == "running"
    os.makedirs(tmp_path / "alice", exist_ok=True)
    (tmp_path / "alice" / "later.txt").write_text("sent after the restart\n")
    passes = _client(status, "bob")["passes"]
    wait_for(lambda: _client(_status_json(config), "bob")["passes"] > passes + 2, "bob to go on")
    assert not (tmp_path / "bob" / "later.txt").exists()  # alice is stopped: nothing sent

    result = ctl(config, "start", "alice", "bob")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[alice] started", "[bob] already running"]
    wait_for(lambda: (tmp_path / "bob" / "later.txt").exists(), "alice's file to reach bob")

    result = ctl(config, "restart", "bob")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[bob] restarted"
    assert _client(_status_json(config), "bob")["state"] == "running"
    assert daemon_pid(config) == pid


def test_restart_daemon(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    old = daemons.start(config)
    result = ctl(config, "restart")
    assert result.returncode == 0, result.stderr
    new = daemon_pid(config)
    assert new is not None and new != old
    daemons.track(config)
    assert not pid_alive(old) and pid_alive(new)
    assert result.stdout.splitlines() == [f"escale stopped (pid {old})",
                                          f"escale started for {os.path.realpath(config)} (pid {new})"]
    assert _status_json(config)["pid"] == new


def test_stale_pid_file_and_socket_are_cleaned(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    paths = instance_paths(config)
    paths.ensure_folder()
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(paths.pid_file, "w") as handle:
        handle.write(f"{dead.pid}\n{paths.config}\n")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(paths.socket)
    listener.close()  # the file stays, nobody listens
    result = ctl(config, "-v", "status")
    assert result.returncode == 3
    assert "removed stale pid file" in result.stderr
    assert not os.path.exists(paths.pid_file) and not os.path.exists(paths.socket)

    # a live process that is not escale does not make escale "running"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with open(paths.pid_file, "w") as handle:
            handle.write(f"{sleeper.pid}\n{paths.config}\n")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(paths.socket)
        listener.close()
        pid = daemons.start(config)
        assert pid != sleeper.pid and sleeper.poll() is None  # never signalled
        assert _status_json(config)["pid"] == pid
    finally:
        sleeper.kill()
        sleeper.wait()


def test_foreground_daemon_answers_and_stops(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    process = subprocess.Popen([sys.executable, "-m", "escale.cli.main", "-c", config],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ctl(config, "status").returncode == 0, "the foreground escale to answer")
        assert _status_json(config)["pid"] == process.pid
        result = ctl(config, "stop")
        assert result.returncode == 0, result.stderr
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not os.path.exists(instance_paths(config).pid_file)


def test_sigint_twice_exits_at_once(tmp_path: Path) -> None:
    config = two_clients(str(tmp_path))
    process = subprocess.Popen([sys.executable, "-m", "escale.cli.main", "-c", config],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ctl(config, "status").returncode == 0, "the foreground escale to answer")
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) in (0, 75)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not os.path.exists(instance_paths(config).socket)


def test_stuck_daemon_is_killed(tmp_path: Path, daemons: Daemons) -> None:
    """A daemon that does not answer (SIGSTOP) is verified by its command line, then signalled."""
    config = two_clients(str(tmp_path))
    pid = daemons.start(config)
    os.kill(pid, signal.SIGSTOP)
    try:
        result = ctl(config, "stop", "--timeout", "1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"escale killed (pid {pid})"
        assert "sending SIGTERM" in result.stderr and "sending SIGKILL" in result.stderr
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGCONT)
    assert not pid_alive(pid)
    assert ctl(config, "status").returncode == 3


def test_impatient_stop_escalates(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    pid = daemons.start(config)
    result = ctl(config, "--json", "stop", "--timeout", "0")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["how"] in ("stopped", "terminated")
    assert not pid_alive(pid)
    paths = instance_paths(config)
    assert not os.path.exists(paths.pid_file) and not os.path.exists(paths.socket)
