"""escalectl access: parsing, storage in the state database, and the planner honouring it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from escale.cli.ctl_access import parse_modifiers
from escale.config import load_config
from escale.errors import UsageError
from escale.sync.client import state_dir_for
from escale.sync.planner import Access
from escale.sync.state import StateDB
from tests.daemon.helpers import Daemons, ctl, ctl_here, escale, two_clients, wait_for


@pytest.mark.parametrize(("text", "expected"), [
    ("r+", {"r": True}), ("r-", {"r": False}), ("r?", {"r": None}), ("r", {"r": True}),
    ("w", {"w": True}), ("w-", {"w": False}), ("r+w-", {"r": True, "w": False}),
    ("w?", {"w": None}), ("r-w+", {"r": False, "w": True}), ("wr", {"w": True, "r": True}),
    ("w-r?", {"w": False, "r": None}),
])
def test_modifiers_parse(text: str, expected: dict[str, bool | None]) -> None:
    assert parse_modifiers(text) == expected


@pytest.mark.parametrize("text", ["", "x", "r+x", "r++", "+r", "r+r-", "rw+w", "r +", "R+", "r!", "-"])
def test_bad_modifiers_are_refused(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_modifiers(text)
    assert "\n" not in str(info.value) and repr(text) in str(info.value)


def _db_access(config_path: str, name: str) -> dict[str, Access]:
    settings = load_config(config_path).client(name)
    db = StateDB(os.path.join(state_dir_for(settings), "state.db"))
    try:
        return db.access()
    finally:
        db.close()


def test_set_show_unset(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = two_clients(str(tmp_path))
    os.makedirs(tmp_path / "bob" / "docs")
    target = tmp_path / "bob" / "docs" / "plan.txt"
    target.write_text("v1\n")

    code, out, _ = ctl_here(capsys, config, "access", str(target))
    assert code == 0 and out.strip() == "docs/plan.txt: r? w? ([bob]; '?' follows mode shared)"

    code, out, _ = ctl_here(capsys, config, "access", str(target), "w-")
    assert code == 0 and out.strip().startswith("docs/plan.txt: r? w- ([bob]")
    assert _db_access(config, "bob") == {"docs/plan.txt": Access(read=None, write=False)}

    monkeypatch.chdir(tmp_path / "bob")  # relative to the current folder
    code, out, _ = ctl_here(capsys, config, "access", "docs/plan.txt", "r")
    assert code == 0 and out.strip() == "docs/plan.txt: r+ w- ([bob])"
    code, out, _ = ctl_here(capsys, config, "--json", "access", "docs/plan.txt")
    assert json.loads(out) == {"client": "bob", "path": "docs/plan.txt", "read": True, "write": False,
                               "mode": "shared"}

    # bad modifiers: one line, exit 64, nothing changed
    code, out, err = ctl_here(capsys, config, "access", "docs/plan.txt", "w+x")
    assert code == 64 and out == "" and len(err.splitlines()) == 1
    assert _db_access(config, "bob") == {"docs/plan.txt": Access(read=True, write=False)}

    code, out, _ = ctl_here(capsys, config, "access", "docs/plan.txt", "r?w?")
    assert code == 0 and out.strip().startswith("docs/plan.txt: r? w?")
    assert _db_access(config, "bob") == {}


def test_files_outside_every_client(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = two_clients(str(tmp_path))
    os.makedirs(tmp_path / "alice" / "sub")
    for path, words in ((tmp_path / "elsewhere.txt", "not inside the local folder of any client"),
                        (tmp_path / "alice", "is the local folder of [alice]"),
                        (tmp_path / "alice" / "sub", "is a folder"),
                        (tmp_path / "alice" / ".escale" / "alice" / "state.db", "escale's own state folder")):
        code, out, err = ctl_here(capsys, config, "access", str(path), "w-")
        assert code == 64, err
        assert words in err and len(err.splitlines()) == 1 and out == ""
    code, _, err = ctl_here(capsys, config, "access", str(tmp_path / "alice" / "a.txt"), "-r", "bob")
    assert code == 64 and "is not inside the local folder of [bob]" in err
    assert not os.path.exists(tmp_path / "bob" / ".escale")


def test_overlapping_folders_need_a_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = two_clients(str(tmp_path), bob={"local path": "alice", "protocol": "file",
                                             "relay directory": "relay2"})
    os.makedirs(tmp_path / "alice")
    code, _, err = ctl_here(capsys, config, "access", str(tmp_path / "alice" / "f"), "r-")
    assert code == 64 and "choose one with -r SECTION" in err
    code, out, _ = ctl_here(capsys, config, "access", str(tmp_path / "alice" / "f"), "r-", "-r", "bob")
    assert code == 0 and "[bob]" in out


def test_help_explains_the_syntax() -> None:
    result = ctl(None, "access", "--help")
    assert result.returncode == 0
    for words in ("r+w-", "followed by + (allowed), - (forbidden) or ? (unset", "a bare letter means +",
                  "escalectl access notes.txt w-"):
        assert words in " ".join(result.stdout.split()) or words in result.stdout


def test_write_forbidden_file_is_not_overwritten_by_a_pass(tmp_path: Path) -> None:
    config = two_clients(str(tmp_path))
    os.makedirs(tmp_path / "alice")
    (tmp_path / "alice" / "kept.txt").write_text("original\n")
    (tmp_path / "alice" / "free.txt").write_text("original\n")
    for name in ("alice", "bob"):
        assert escale("--once", "-c", config, "-r", name).returncode == 0
    assert (tmp_path / "bob" / "kept.txt").read_text() == "original\n"

    result = ctl(config, "access", str(tmp_path / "bob" / "kept.txt"), "w-")
    assert result.returncode == 0, result.stderr
    (tmp_path / "alice" / "kept.txt").write_text("changed by alice\n")
    (tmp_path / "alice" / "free.txt").write_text("changed by alice\n")
    for name in ("alice", "bob"):
        assert escale("--once", "-c", config, "-r", name).returncode == 0
    assert (tmp_path / "bob" / "free.txt").read_text() == "changed by alice\n"  # the pull did happen
    assert (tmp_path / "bob" / "kept.txt").read_text() == "original\n"  # but not over the w- file


def test_access_while_the_daemon_runs(tmp_path: Path, daemons: Daemons) -> None:
    config = two_clients(str(tmp_path))
    os.makedirs(tmp_path / "alice")
    (tmp_path / "alice" / "draft.txt").write_text("private\n")
    result = ctl(config, "access", str(tmp_path / "alice" / "draft.txt"), "r-")
    assert result.returncode == 0, result.stderr
    (tmp_path / "alice" / "public.txt").write_text("for everyone\n")
    daemons.start(config)
    wait_for(lambda: (tmp_path / "bob" / "public.txt").exists(), "public.txt to reach bob")
    # set while the daemon holds the database open (WAL), for a file not there yet; pushes go in
    # path order, so the marker reaches bob after second.txt would have
    result = ctl(config, "access", str(tmp_path / "alice" / "second.txt"), "r-")
    assert result.returncode == 0, result.stderr
    (tmp_path / "alice" / "second.txt").write_text("also private\n")
    (tmp_path / "alice" / "zz-marker.txt").write_text("sent after\n")
    wait_for(lambda: (tmp_path / "bob" / "zz-marker.txt").exists(), "the marker to reach bob")
    assert not (tmp_path / "bob" / "draft.txt").exists()
    assert not (tmp_path / "bob" / "second.txt").exists()
