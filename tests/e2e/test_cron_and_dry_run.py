"""cron and one-pass runs, dry runs, deliberate mass deletions and the
bandwidth limit, through real ``escale --once`` processes (issue 12).

Configurations here set no ``log file`` unless said: standard error is what
cron would mail.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from escale.crypto import generate_key_file
from escale.sync.client import ClientLock
from tests.daemon.smtp_sink import SmtpSink
from tests.e2e.cluster import tree, write

ROOT_WARNING = "warning: running as root"


def _config(folder: Path, sections: dict[str, dict[str, str]]) -> str:
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines.append("")
    path = folder / "escale.conf"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def _file_client(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    local = tmp_path / name
    local.mkdir(exist_ok=True)
    return {"local path": str(local), "protocol": "file", "relay directory": str(tmp_path / "relay"),
            "encryption": "no", **{k.replace("_", " "): v for k, v in extra.items()}}


def _escale(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "escale.cli.main", *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}, check=False)


def _ctl(config: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "escale.cli.ctl", "-c", config, *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)


def _stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """Standard error without the root warning (CI runs as root)."""
    return [line for line in result.stderr.splitlines() if ROOT_WARNING not in line]


def _hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root``, escale's own files included."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name == "state.db-shm":
                continue  # SQLite's shared-memory index: rewritten by any reader
            with open(path, "rb") as handle:
                out[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return out


# ----------------------------------------------------------------- cron


def test_overlapping_once_exits_75_without_a_word(tmp_path: Path) -> None:
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a")})
    write(str(tmp_path / "a"), "f.txt", "x")
    first = _escale("--once", "-c", config)
    assert first.returncode == 0 and _stderr_lines(first) == [], first.stderr
    lock = ClientLock(str(tmp_path / "a" / ".escale" / "a"), "a")
    lock.acquire()  # another run of client a in progress
    try:
        busy = _escale("--once", "-c", config)
        tolerated = _escale("--once", "--busy-ok", "-c", config)
        told = _escale("--once", "-v", "-c", config)
    finally:
        lock.release()
    assert busy.returncode == 75 and _stderr_lines(busy) == [] and busy.stdout == ""
    assert tolerated.returncode == 0 and _stderr_lines(tolerated) == []
    assert told.returncode == 75
    assert "escale: [a] skipped: another escale process is syncing it" in _stderr_lines(told)


def test_once_says_nothing_of_files_unless_verbose(tmp_path: Path) -> None:
    """Without ``-v`` a pass that sent or received files prints nothing (the
    INFO records are not even made); with ``-v`` each file has its line."""
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a"), "b": _file_client(tmp_path, "b")})
    write(str(tmp_path / "a"), "sent.txt", "one")
    write(str(tmp_path / "a"), "also.txt", "two")
    sent = _escale("--once", "-c", config, "-r", "a")
    assert sent.returncode == 0 and _stderr_lines(sent) == [], sent.stderr
    received = _escale("--once", "-v", "-c", config, "-r", "b")
    assert received.returncode == 0, received.stderr
    lines = _stderr_lines(received)
    assert sum("received sent.txt" in line or "received also.txt" in line for line in lines) == 2, lines
    assert (tmp_path / "b" / "sent.txt").read_text() == "one"
    write(str(tmp_path / "b"), "back.txt", "three")
    for name in ("b", "a"):  # b sends it, a receives it
        quiet = _escale("--once", "-c", config, "-r", name)
        assert quiet.returncode == 0 and _stderr_lines(quiet) == [], quiet.stderr
    assert (tmp_path / "a" / "back.txt").read_text() == "three"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed: nothing listens there


@pytest.mark.parametrize("scheme", ["ftp", "sftp", "webdav"])
def test_refused_connection_is_one_line(tmp_path: Path, scheme: str) -> None:
    port = _free_port()
    (tmp_path / "a").mkdir()
    config = _config(tmp_path, {"a": {
        "local path": str(tmp_path / "a"), "host address": f"{scheme}://127.0.0.1:{port}/x",
        "username": "u", "password": "p", "encryption": "no"}})
    result = _escale("--once", "-c", config)
    assert result.returncode == 69
    assert _stderr_lines(result) == [
        f"escale: [a] {scheme}://u@127.0.0.1:{port}/x: connection refused to 127.0.0.1:{port}"], result.stderr


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink().start()
    try:
        yield server
    finally:
        server.stop()


def test_once_sends_one_notice_for_a_failed_pass(tmp_path: Path, sink: SmtpSink) -> None:
    good, bad = str(tmp_path / "good.key"), str(tmp_path / "bad.key")
    generate_key_file(good)
    generate_key_file(bad)
    config = _config(tmp_path, {
        "a": _file_client(tmp_path, "a", encryption="yes", key=good),
        "b": _file_client(tmp_path, "b", encryption="yes", key=bad, maintainer="ops@example.org")})
    write(str(tmp_path / "a"), "f.txt", "x")
    assert _escale("--once", "-c", config, "-r", "a").returncode == 0
    env = {"ESCALE_SMTP": f"{sink.address[0]}:{sink.address[1]}"}
    result = _escale("--once", "-c", config, "-r", "b", env=env)
    assert result.returncode == 65
    lines = _stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("escale: [b] ") and "wrong key" in lines[0], result.stderr
    received = sink.received()
    assert len(received) == 1 and received[0].recipients == ["ops@example.org"]
    assert "wrong key" in received[0].body()


# ----------------------------------------------------------------- dry run


def test_dry_run_changes_nothing_and_says_what_a_pass_would_do(tmp_path: Path) -> None:
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a"), "b": _file_client(tmp_path, "b")})
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    write(a, "gone.txt", "to be deleted")
    write(a, "both.txt", "original")
    for name in ("a", "b", "a"):
        assert _escale("--once", "-c", config, "-r", name).returncode == 0
    assert tree(a) == tree(b)
    write(a, "new.txt", "only on a")
    os.unlink(os.path.join(a, "gone.txt"))
    write(a, "both.txt", "a's edit")
    write(b, "both.txt", "b's edit")
    assert _escale("--once", "-c", config, "-r", "a").returncode == 0  # a commits its changes
    before = {side: _hash_tree(tmp_path / side) for side in ("a", "b", "relay")}

    dry = _escale("--once", "--dry-run", "-c", config)

    assert dry.returncode == 0, dry.stderr
    assert {side: _hash_tree(tmp_path / side) for side in ("a", "b", "relay")} == before
    lines = dry.stdout.splitlines()
    assert "[a] nothing to do" in lines
    assert "[b] would receive: new.txt (new relay file)" in lines or any(
        line.startswith("[b] would receive: new.txt") for line in lines), lines
    assert any(line.startswith("[b] would delete here: gone.txt") for line in lines), lines
    assert any(line.startswith("[b] conflict: both.txt") for line in lines), lines

    assert _escale("--once", "-c", config, "-r", "b").returncode == 0  # the real pass does it
    assert not os.path.exists(os.path.join(b, "gone.txt"))
    with open(os.path.join(b, "new.txt")) as handle:
        assert handle.read() == "only on a"


def test_dry_run_of_a_new_client_creates_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a"), "b": _file_client(tmp_path, "b")})
    write(str(tmp_path / "a"), "f.txt", "x")
    assert _escale("--once", "-c", config, "-r", "a").returncode == 0
    relay_before = _hash_tree(tmp_path / "relay")
    dry = _escale("--once", "--dry-run", "-c", config, "-r", "b")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["[b] would receive: f.txt (new relay file)"] or any(
        line.startswith("[b] would receive: f.txt") for line in dry.stdout.splitlines()), dry.stdout
    assert os.listdir(tmp_path / "b") == []  # no state folder, no lock, no file
    assert _hash_tree(tmp_path / "relay") == relay_before  # not registered


def test_dry_run_before_the_repository_exists(tmp_path: Path) -> None:
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a")})
    write(str(tmp_path / "a"), "sub/y.txt", "y")
    dry = _escale("--once", "--dry-run", "-c", config)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"[a] would create the repository on file://{tmp_path / 'relay'}", "[a] would send: sub/y.txt (1 B)"]
    assert not (tmp_path / "relay").exists()
    assert sorted(os.listdir(tmp_path / "a")) == ["sub"]


# ----------------------------------------------------------------- allow-deletions


def test_allow_deletions_applies_held_deletions_once(tmp_path: Path) -> None:
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a"), "b": _file_client(tmp_path, "b")})
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    names = [f"f{i:02}.txt" for i in range(12)]

    def fill() -> None:
        for name in names:
            write(a, name, name)
        for client in ("a", "b"):
            assert _escale("--once", "-c", config, "-r", client).returncode == 0
        assert set(tree(b)) == set(names)

    def empty_a() -> None:
        for name in names:
            os.unlink(os.path.join(a, name))
        assert _escale("--once", "-c", config, "-r", "a").returncode == 0
        assert _escale("--once", "-c", config, "-r", "b").returncode == 0

    fill()
    empty_a()
    assert set(tree(b)) == set(names)  # held back by the guard

    allowed = _ctl(config, "allow-deletions", "a")
    assert allowed.returncode == 0, allowed.stderr
    flag = tmp_path / "a" / ".escale" / "a" / "allow-deletions"
    assert flag.exists()
    assert _escale("--once", "-c", config, "-r", "a").returncode == 0
    assert not flag.exists()
    assert _escale("--once", "-c", config, "-r", "b").returncode == 0
    assert tree(b) == {}  # sent as deliberate: b applies them without an allowance of its own

    fill()  # the permission was for one pass: the guard holds the next mass deletion again
    empty_a()
    assert set(tree(b)) == set(names)


# ----------------------------------------------------------------- bandwidth limit


def _timed_once(config: str, name: str) -> float:
    started = time.monotonic()
    result = _escale("--once", "-c", config, "-r", name)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    return elapsed


def test_bandwidth_limit_is_not_exceeded(tmp_path: Path) -> None:
    """2 MB at ``bandwidth limit = 1 MB`` may not go faster than 1.2 MB/s, up
    or down (only a lower bound on the time: a loaded machine is only slower)."""
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a", bandwidth_limit="1 MB"),
                                "b": _file_client(tmp_path, "b", bandwidth_limit="1 MB")})
    assert _escale("--once", "-c", config, "-r", "b").returncode == 0  # b registers: a's upload waits for it
    size = 2_000_000
    data = os.urandom(size)
    write(str(tmp_path / "a"), "big.bin", data)
    up = _timed_once(config, "a")
    stored = sum(os.path.getsize(os.path.join(folder, f))
                 for folder, _, files in os.walk(tmp_path / "relay") for f in files)
    assert stored >= size
    assert size / up <= 1.2 * 1_000_000, f"upload at {size / up:.0f} bytes/s"
    down = _timed_once(config, "b")
    assert (tmp_path / "b" / "big.bin").read_bytes() == data
    assert size / down <= 1.2 * 1_000_000, f"download at {size / down:.0f} bytes/s"


# ----------------------------------------------------------------- systemd


def test_systemd_unit_runs_this_escale_with_this_configuration(tmp_path: Path) -> None:
    config = _config(tmp_path, {"a": _file_client(tmp_path, "a")})
    result = _escale("--systemd-unit", "-c", config)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"ExecStart={sys.executable} -m escale.cli.main -c {config}" in lines
    assert "[Service]" in lines and "[Install]" in lines and "WantedBy=default.target" in lines
