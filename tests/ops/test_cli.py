"""backup, restore and fix through ``escalectl``: output, exit codes, nothing changed on bad input."""

from __future__ import annotations

import gzip
import json
import os
import tarfile
from pathlib import Path

import pytest

from escale.cli.ctl import main as escalectl
from escale.cli.ops_progress import ProgressCallback
from escale.config import load_config
from escale.config.settings import ClientSettings
from tests.ops.helpers import key_file, relay_objects, sync, tree, wipe, write

Setup = tuple[str, str, ClientSettings, ClientSettings]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    """A configuration with two encrypted clients of one file relay, in sync."""
    base = str(tmp_path)
    key = key_file(base)
    conf = os.path.join(base, "escale.conf")
    with open(conf, "w") as handle:
        for name in ("alice", "bob"):
            handle.write(f"[{name}]\nlocal path = {os.path.join(base, name)}\nprotocol = file\n"
                         f"relay directory = {os.path.join(base, 'relay')}\nencryption = yes\nkey = {key}\n"
                         "lock timeout = 5\n\n")
    config = load_config(conf)
    alice, bob = config.clients
    write(alice.local_path, {"one.txt": b"1", "two/three.txt": b"3"})
    os.makedirs(bob.local_path)
    sync(alice, bob)
    return base, conf, alice, bob


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = escalectl(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_backup_restore_through_escalectl(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    base, conf, alice, bob = setup
    archive = os.path.join(base, "relay.tar.bz2")
    code, out, err = _run(capsys, "-c", conf, "backup", "alice", archive)
    assert (code, err) == (0, "")  # no progress bar outside a terminal
    assert "backed up" in out and "consistent" in out
    code, out, err = _run(capsys, "-c", conf, "--json", "restore", "bob", archive)
    assert code == 73 and out == "" and "use --force" in err and err.count("\n") == 1
    wipe(alice.relay)
    code, out, err = _run(capsys, "-c", conf, "restore", "bob", archive, "--json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["objects"] > 0 and report["consistent"] is True
    write(bob.local_path, {"four.txt": b"4"})
    sync(bob, alice)
    assert tree(alice.local_path) == tree(bob.local_path)


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["backup", "nobody", "{base}/x.tar"], 64, "no section [nobody]"),
    (["restore", "nobody", "{base}/x.tar"], 64, "no section [nobody]"),
    (["backup", "alice", "{base}/x.zip"], 64, "unknown extension"),
    (["restore", "alice", "{base}/x.rar"], 64, "unknown extension"),
    (["restore", "alice", "{base}/missing.tar"], 65, "no such file"),
    (["restore", "alice", "{base}/corrupt.tar.gz", "--force"], 65, "corrupt or truncated"),
    (["restore", "alice", "{base}/good.tar"], 73, "already holds an escale repository"),
    (["fix", "-r", "nobody"], 64, "no section [nobody]"),
    (["migrate", "-r", "alice"], 64, "give a DESTINATION relay, a --layout, or both"),
])
def test_bad_inputs_one_line_exit_code_nothing_changed(
    setup: Setup, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str,
) -> None:
    base, conf, alice, _ = setup
    assert escalectl(["-c", conf, "backup", "alice", f"{base}/good.tar"]) == 0
    with open(f"{base}/good.tar", "rb") as handle:
        data = handle.read()
    with open(f"{base}/corrupt.tar.gz", "wb") as handle:
        packed = gzip.compress(data)
        handle.write(packed[: len(packed) // 2])
    capsys.readouterr()
    relay = relay_objects(alice.relay)
    files = sorted(os.listdir(base))
    with open(conf) as handle:
        config_text = handle.read()
    got, _out, err = _run(capsys, "-c", conf, *[a.format(base=base) for a in argv])
    assert got == code
    assert message in err and err.startswith("escalectl: ") and err.count("\n") == 1, err
    assert relay_objects(alice.relay) == relay
    assert sorted(os.listdir(base)) == files
    with open(conf) as handle:
        assert handle.read() == config_text


def test_fix_reports_what_it_recreated(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    _base, conf, alice, _bob = setup
    wipe(alice.relay, "meta")
    code, out, err = _run(capsys, "-c", conf, "--json", "fix", "-r", "alice", "--dry-run")
    assert code == 0 and err == ""
    [dry] = json.loads(out)
    assert dry["dry_run"] and sorted(i["path"] for i in dry["recreated"]) == ["one.txt", "two/three.txt"]
    assert dry["changed"] is True
    code, out, err = _run(capsys, "-c", conf, "fix")  # every section: alice then bob
    assert code == 0 and err == ""
    assert "[alice]" in out and "recreated one.txt (version 2, missing on the relay)" in out
    assert "[bob]" in out and "0 recreated" in out  # alice already rebuilt it
    code, out, _ = _run(capsys, "-c", conf, "--json", "fix")
    assert [r["changed"] for r in json.loads(out)] == [False, False]


def test_fix_of_a_client_that_never_synced(setup: Setup, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _base, conf, *_ = setup
    with open(conf, "a") as handle:
        handle.write(f"[carol]\nlocal path = {tmp_path / 'carol'}\nprotocol = file\n"
                     f"relay directory = {tmp_path / 'relay'}\n")
    code, _, err = _run(capsys, "-c", conf, "fix", "-r", "carol")
    assert code == 70 and "never synced here" in err


def test_archive_written_by_escalectl_is_plain_tar_with_manifest_last(
    setup: Setup, capsys: pytest.CaptureFixture[str],
) -> None:
    base, conf, *_ = setup
    archive = os.path.join(base, "b.tar")
    assert escalectl(["-c", conf, "backup", "alice", archive]) == 0
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[-1] == "escale-backup.json" and names[-2] == "relay/escale.repo"


def test_progress_callback_draws_only_when_enabled() -> None:
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    shown = ProgressCallback("backup", enabled=True, stream=stream)
    shown(0, 4)
    shown(4, 4)
    shown.close()
    assert "4/4" in stream.getvalue()
    silent = Tty()
    quiet = ProgressCallback("backup", enabled=False, stream=silent)
    quiet(0, 4)
    quiet(4, 4)
    quiet.close()
    assert silent.getvalue() == ""
