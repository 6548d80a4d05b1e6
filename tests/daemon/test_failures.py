"""A failing client never stops the others; its abort reaches the maintainer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from escale.crypto import generate_key_file
from tests.daemon.helpers import Daemons, ctl, two_clients, wait_for
from tests.daemon.smtp_sink import SmtpSink


def test_failing_client_beside_healthy_ones(tmp_path: Path, daemons: Daemons) -> None:
    (tmp_path / "blocker").write_text("a regular file where the relay folder should be\n")
    key = str(tmp_path / "broken.key")
    generate_key_file(key)
    config = two_clients(str(tmp_path), broken={
        "local path": "broken", "protocol": "file", "relay directory": "blocker/relay",
        "encryption": "yes", "key": key, "maintainer": "ops@example.org"})
    os.makedirs(tmp_path / "alice")
    (tmp_path / "alice" / "report.txt").write_text("for bob\n")
    sink = SmtpSink().start()
    try:
        host, port = sink.address
        daemons.start(config, env={**os.environ, "ESCALE_SMTP": f"{host}:{port}"})

        def status() -> dict[str, Any]:
            result = ctl(config, "--json", "status")
            assert result.returncode == 0, result.stderr
            return {c["name"]: c for c in json.loads(result.stdout)["clients"]}

        wait_for(lambda: status()["broken"]["failures"] >= 2, "the broken client to fail twice")
        wait_for(lambda: (tmp_path / "bob" / "report.txt").exists(), "alice's file to reach bob")
        clients = status()
        assert clients["broken"]["state"] == "running"  # retried with back-off, never given up
        assert "Not a directory" in clients["broken"]["last_error"]
        assert clients["alice"]["last_error"] is None and clients["bob"]["last_error"] is None
        assert clients["alice"]["state"] == clients["bob"]["state"] == "running"

        table = ctl(config, "status")
        assert f"[broken] last error: {clients['broken']['last_error']}" in table.stdout.splitlines()

        wait_for(sink.received, "the maintainer notice")
        messages = sink.received()
        assert len(messages) == 1  # the same error is not sent again at each retry
        notice = messages[0]
        assert notice.recipients == ["ops@example.org"]
        assert "[broken]" in notice.message["Subject"]
        body = notice.body()
        assert clients["broken"]["last_error"] in body
        with open(key) as handle:
            secret = handle.read().strip().split(":", 1)[1]
        assert secret not in notice.data.decode()
    finally:
        sink.stop()
