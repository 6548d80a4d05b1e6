"""``escalectl status`` shows the last pass's warnings: their count beside the
last pass, the lines themselves below the table and in ``--json``.

The warning comes from a real scenario: with ``puller count = 1``, a second
receiver finds the version reclaimed (issue 9, item 14).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from escale.sync.labels import conflict_label
from tests.daemon.helpers import Daemons, ctl, escale, wait_for, write_config

# the pusher as it names itself in what it pushes: its label and this host
MISSED = (f"notes.txt: version 1 from {conflict_label('alice')} missed: puller count 1 reached before this "
          "client received it")


def _carol(config: str) -> dict[str, Any] | None:
    result = ctl(config, "--json", "status")
    assert result.returncode == 0, result.stderr
    client: dict[str, Any] = json.loads(result.stdout)["clients"][0]
    return client if client["last_pass"] else None


def test_status_shows_the_missed_version_warning(tmp_path: Path, daemons: Daemons) -> None:
    relay = {"protocol": "file", "relay directory": str(tmp_path / "relay")}
    folder = tmp_path / "first"
    folder.mkdir()
    first = write_config(str(folder), {
        "alice": {"local path": str(tmp_path / "alice"), **relay,
                  "puller count": "1"},
        "bob": {"local path": str(tmp_path / "bob"), **relay},
    })
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "notes.txt").write_text("for one puller only\n")
    for name in ("bob", "alice", "bob", "alice"):  # bob registers; alice sends; bob takes it; alice reclaims
        done = escale("--once", "-c", first, "-r", name)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "bob" / "notes.txt").exists()

    folder = tmp_path / "second"
    folder.mkdir()
    second = write_config(str(folder), {
        "carol": {"local path": str(tmp_path / "carol"), **relay}})
    daemons.start(second)
    wait_for(lambda: _carol(second), "carol's first pass")
    carol = _carol(second)
    assert carol is not None and carol["last_pass"]["warnings"] == [MISSED]
    assert not (tmp_path / "carol" / "notes.txt").exists()

    table = ctl(second, "status")
    assert table.returncode == 0, table.stderr
    assert "ok, 1 warning" in table.stdout
    assert f"[carol] warning: {MISSED}" in table.stdout
