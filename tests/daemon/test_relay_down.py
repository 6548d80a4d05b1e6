"""A relay server that goes down under a running daemon: the clients on it fail
their passes with a growing back-off (no spinning, no crash, no notice for a
transient error), the daemon's other clients go on meanwhile, and once the server
is back the clients recover on their own and sync what changed meanwhile.

One daemon (a real ``escale`` process) runs four clients: ``alice`` and ``bob``
on a pyftpdlib server, ``carol`` and ``dave`` on a file relay."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.helpers import PATIENCE, Daemons, ctl, wait_for, write_config
from tests.servers.ftp import FtpServer, ftp_server_process, ftp_target
from tests.servers.process import start_again

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def ftp(tmp_path: Path) -> Iterator[FtpServer]:
    server = ftp_server_process(str(tmp_path / "ftp-root"))
    yield server
    server.process.shutdown()


def _same(path: Path, content: bytes) -> bool:
    try:
        return path.read_bytes() == content
    except OSError:
        return False


def test_a_relay_down_then_back(tmp_path: Path, ftp: FtpServer, daemons: Daemons) -> None:
    target = ftp_target("ftp", ftp)
    on_ftp = target.config_for("relay")
    on_file = {"protocol": "file", "relay directory": str(tmp_path / "file-relay")}
    local = {name: tmp_path / name for name in ("alice", "bob", "carol", "dave")}
    for folder in local.values():
        folder.mkdir()
    (local["alice"] / "first.txt").write_bytes(b"before the outage\n")
    (local["carol"] / "first.txt").write_bytes(b"carol's, before\n")
    log = tmp_path / "escale.log"
    config = write_config(str(tmp_path), {
        name: {"local path": str(local[name]), **(on_ftp if name in ("alice", "bob") else on_file)}
        for name in local}, globals_=f"log file = {log}\n")
    daemons.start(config)

    def status() -> dict[str, Any]:
        result = ctl(config, "--json", "status")
        assert result.returncode == 0, result.stderr
        return {c["name"]: c for c in json.loads(result.stdout)["clients"]}

    wait_for(lambda: _same(local["bob"] / "first.txt", b"before the outage\n"), "a first file over FTP")
    wait_for(lambda: _same(local["dave"] / "first.txt", b"carol's, before\n"), "a first file over the file relay")

    ftp.process.stop()
    (local["alice"] / "during.txt").write_bytes(b"written while the relay was down\n")
    wait_for(lambda: status()["alice"]["failures"] >= 4, "alice to fail four passes")
    # the other clients of the daemon go on meanwhile
    (local["carol"] / "during.txt").write_bytes(b"carol's, during\n")
    wait_for(lambda: _same(local["dave"] / "during.txt", b"carol's, during\n"),
             "the file relay's clients to go on while the FTP server is down")
    clients = status()
    assert all(clients[name]["state"] == "running" for name in local)
    assert clients["alice"]["last_error"] and clients["carol"]["last_error"] is None
    # the back-off grows between failed passes (0.2 s, then 1, 2, 4 s ...), never spins
    retries = [float(wait) for wait in re.findall(r"\[alice\] pass failed \(retry in (\d+)s\)", log.read_text())]
    assert len(retries) >= 4 and retries[1:4] == [1.0, 2.0, 4.0], retries

    start_again(ftp.process.start)
    # each client tries again when its back-off ends: on a busy machine the outage may
    # have lasted long enough for those waits to grow, and one more failure (a pass under
    # way at the restart) doubles the last one announced
    waits = [float(wait) for wait in re.findall(r"\[(?:alice|bob)\] pass failed \(retry in (\d+)s\)",
                                                log.read_text())]
    wait_for(lambda: _same(local["bob"] / "during.txt", b"written while the relay was down\n"),
             "alice and bob to recover once the FTP server is back", patience=PATIENCE + 2 * max(waits))
    wait_for(lambda: status()["alice"]["last_error"] is None, "alice's error to clear")
    assert "Traceback" not in log.read_text()
