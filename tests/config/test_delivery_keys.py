"""The keys of versions kept, handoff and hook: values and the rules that combine them."""

from __future__ import annotations

from pathlib import Path

import pytest

from escale.config.values import ValueProblem, parse_keep_versions
from escale.errors import ConfigError
from tests.config.helpers import client


@pytest.mark.parametrize(("text", "seconds"), [("30", 30 * 86400.0), ("no", 0.0), ("0", 0.0), ("12 h", 43200.0),
                                               ("90min", 5400.0), ("1.5d", 129600.0), ("45 s", 45.0)])
def test_keep_versions_values(text: str, seconds: float) -> None:
    assert parse_keep_versions(text) == seconds


@pytest.mark.parametrize("text", ["-1", "ten", "3 weeks", "1e9"])
def test_keep_versions_refuses(text: str) -> None:
    with pytest.raises(ValueProblem):
        parse_keep_versions(text)


def test_defaults(tmp_path: Path) -> None:
    c = client(tmp_path)
    assert (c.keep_versions, c.keep_versions_size, c.versions_dir) == (30 * 86400.0, None, None)
    assert (c.after_delivery, c.holding_dir, c.delivered_when) == ("leave", None, "acknowledged")
    assert (c.hook, c.hook_timeout) == (None, 60.0)


@pytest.mark.parametrize("mode", ["shared", "conservative", "download"])
def test_handoff_only_in_upload_mode(tmp_path: Path, mode: str) -> None:
    with pytest.raises(ConfigError, match="needs mode upload"):
        client(tmp_path, {"mode": mode, "after delivery": "delete"})
    assert client(tmp_path, {"mode": mode, "after delivery": "leave"}).after_delivery == "leave"


def test_move_needs_a_holding_folder_apart_from_the_local_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs 'holding folder'"):
        client(tmp_path, {"mode": "upload", "after delivery": "move"})
    with pytest.raises(ConfigError, match="overlap"):
        client(tmp_path, {"mode": "upload", "after delivery": "move", "holding folder": "local/held"})
    with pytest.raises(ConfigError, match="overlap"):
        client(tmp_path, {"versions folder": "local/versions"})
    done = client(tmp_path, {"push only": "yes", "after delivery": "move", "holding folder": "held"})
    assert (done.mode, done.after_delivery, done.holding_dir) == ("upload", "move", str(tmp_path / "held"))
