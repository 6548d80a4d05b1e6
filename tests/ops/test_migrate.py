"""Migrating a relay repository: verified copy, configuration rewritten, clients carry on."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from escale.cli.ctl import main as escalectl
from escale.config import load_config
from escale.config.settings import ClientSettings
from escale.errors import ConfigError, TargetNotEmpty, UsageError
from escale.ops.migrate import migrate
from escale.ops.reconfigure import plan_relocation
from escale.relay import RelaySpec
from escale.sync.client import SyncClient
from tests.ops.helpers import key_file, relay_objects, sync, tree, write
from tests.servers.target import RelayTarget, free_port

Machines = tuple[str, str, ClientSettings, ClientSettings]


def _config(base: str, name: str, relay_dir: str, extra: str = "") -> str:
    """Write ``<base>/<name>.conf``: one encrypted client on a file relay; return its path."""
    key = key_file(base)
    path = os.path.join(base, f"{name}.conf")
    with open(path, "w") as handle:
        handle.write(
            f"# {name}'s machine\nrefresh = 5\n\n[shared-docs]\n"
            f"local path = {os.path.join(base, name)}\n"
            "# where the relay lives\n"
            f"protocol = file\nrelay directory = {relay_dir}\n"
            f"encryption = yes\nkey = {key}\nlock timeout = 4\n{extra}\n"
            "# end of section\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def machines(tmp_path: Path) -> Machines:
    """alice and bob, each with their own configuration file, in sync through a file relay."""
    base = str(tmp_path)
    old = os.path.join(base, "old-relay")
    alice_conf, bob_conf = _config(base, "alice", old), _config(base, "bob", old)
    alice = load_config(alice_conf).client("shared-docs")
    bob = load_config(bob_conf).client("shared-docs")
    write(alice.local_path, {"report.txt": b"quarterly", "img/logo.png": os.urandom(50_000)})
    os.makedirs(bob.local_path)
    sync(alice, bob)
    write(alice.local_path, {"pending.txt": b"bob has not got this yet"})
    sync(alice, rounds=1)
    return base, alice_conf, alice, bob


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()


def _objects_without_leases(spec: RelaySpec) -> dict[str, str]:
    return {n: h for n, h in relay_objects(spec).items() if not n.startswith("lease/")}


def test_migrate_copies_verifies_and_rewrites_the_configuration(machines: Machines) -> None:
    base, conf, alice, bob = machines
    old_text = _read(conf)
    source_before = _objects_without_leases(alice.relay)
    new_dir = os.path.join(base, "new-relay")

    report = migrate(load_config(conf), "shared-docs", f"file://{new_dir}")

    new_spec = RelaySpec(protocol="file", directory=new_dir)
    assert _objects_without_leases(new_spec) == source_before  # same names, same sealed bytes
    assert _objects_without_leases(alice.relay) == source_before  # source left as it was
    assert report.objects == len(source_before)
    # the configuration: only the relay keys changed, comments and other keys kept
    new_text = _read(conf)
    assert "relay directory" not in new_text and f"host address = file://{new_dir}" in new_text
    for line in ("# alice's machine", "# where the relay lives", "# end of section", "refresh = 5",
                 "lock timeout = 4", f"local path = {alice.local_path}"):
        assert line in new_text
    assert report.config_backup.startswith(conf + ".bak-")
    assert _read(report.config_backup) == old_text
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(report.config_backup).st_mode) == 0o600
    moved = load_config(conf).client("shared-docs")
    assert moved.relay.directory == new_dir and moved.local_path == alice.local_path

    # clients carry on through the new relay: bob gets what was pending, and new files flow both ways
    bob_moved = replace(bob, relay=moved.relay)
    sync(bob_moved, moved)
    assert tree(bob.local_path)["pending.txt"] == b"bob has not got this yet"
    write(bob.local_path, {"from-bob.txt": b"after the move"})
    sync(bob_moved, moved)
    assert tree(alice.local_path) == tree(bob.local_path)
    assert _objects_without_leases(alice.relay) == source_before  # nobody wrote to the old relay


def test_migrate_holds_the_source_lease(machines: Machines) -> None:
    base, conf, _alice, bob = machines
    busy = []

    def meanwhile(done: int, total: int) -> None:
        if done == 1:
            write(bob.local_path, {"meanwhile.txt": b"x"})
            busy.append(SyncClient(bob).run_pass().busy)

    migrate(load_config(conf), "shared-docs", os.path.join(base, "new-relay"), on_progress=meanwhile)
    assert busy == [True]


def test_migrate_from_a_config_file_with_the_same_section(machines: Machines, tmp_path: Path) -> None:
    base, conf, _alice, _ = machines
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    new_relay = os.path.join(base, "relay-from-file")
    other = other_dir / "new.conf"
    other.write_text(f"[shared-docs]\nlocal path = /ignored\nprotocol = file\nhost directory = {new_relay}\n")
    migrate(load_config(conf), "shared-docs", str(other))
    assert load_config(conf).client("shared-docs").relay.directory == new_relay
    other.write_text("[another-section]\nlocal path = /x\nprotocol = file\nhost directory = /y\n")
    with pytest.raises(ConfigError, match=r"no section \[shared-docs\]"):
        migrate(load_config(conf), "shared-docs", str(other))


def _unchanged(conf: str, text: str) -> None:
    assert _read(conf) == text
    assert [n for n in os.listdir(os.path.dirname(conf)) if ".bak-" in n] == []


def test_destination_holding_a_repository_is_refused_then_forced(machines: Machines) -> None:
    base, conf, _alice, bob = machines
    text = _read(conf)
    taken = os.path.join(base, "taken")
    # a client that never synced anywhere creates a repository there (bob's own
    # state knows another repository: it would refuse to create one)
    sync(replace(bob, relay=RelaySpec(protocol="file", directory=taken), state_dir=os.path.join(base, "fresh")),
         rounds=1)
    before = relay_objects(RelaySpec(protocol="file", directory=taken))
    with pytest.raises(TargetNotEmpty, match="already holds an escale repository") as caught:
        migrate(load_config(conf), "shared-docs", taken)
    assert caught.value.exit_code == 73
    _unchanged(conf, text)
    assert relay_objects(RelaySpec(protocol="file", directory=taken)) == before
    migrate(load_config(conf), "shared-docs", taken, force=True)
    assert load_config(conf).client("shared-docs").relay.directory == taken


def test_destination_equal_to_the_source_is_a_usage_error(machines: Machines) -> None:
    _, conf, alice, _ = machines
    text = _read(conf)
    with pytest.raises(UsageError, match="already uses relay"):
        migrate(load_config(conf), "shared-docs", f"file://{alice.relay.directory}/")
    _unchanged(conf, text)


# --------------------------------------------------------------------------- through escalectl


def test_cli_bad_inputs_change_nothing(machines: Machines, capsys: pytest.CaptureFixture[str]) -> None:
    base, conf, alice, _ = machines
    text = _read(conf)
    source = relay_objects(alice.relay)
    closed = free_port()
    cases = [
        (["migrate", "-r", "nope", os.path.join(base, "x")], 64, "no section [nope]"),
        (["migrate", f"sftp://127.0.0.1:{closed}/srv/relay"], 69, f"127.0.0.1:{closed}"),
        (["migrate", f"ftp://127.0.0.1:{closed}/relay"], 69, "127.0.0.1"),
        (["migrate", "gopher://host/x"], 78, "unknown protocol"),
        (["migrate", alice.relay.directory], 64, "already uses relay"),
    ]
    for argv, code, message in cases:
        assert escalectl(["-c", conf, *argv]) == code, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        _unchanged(conf, text)
    assert relay_objects(alice.relay) == source


def test_cli_migrate_file_to_sftp_and_back(
    machines: Machines, target_sftp: RelayTarget, capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    base, conf, alice, bob = machines
    server = target_sftp.config_for("x")
    # keys that apply to the SFTP relay live in the section already
    with open(conf, "a") as handle:
        handle.write(f"[other]\nlocal path = {os.path.join(base, 'other')}\nprotocol = file\n"
                     f"relay directory = {os.path.join(base, 'other-relay')}\n")
    text = _read(conf).replace("lock timeout = 4\n",
                               f"lock timeout = 4\nssh key = {server['ssh key']}\n"
                               f"known hosts = {server['known hosts']}\n")
    with open(conf, "w") as handle:
        handle.write(text)
    folder = target_sftp.spec_for(target_sftp.new_folder()).directory
    address = f"sftp://{server['username']}@127.0.0.1:{server['port']}{folder}"

    assert escalectl(["-c", conf, "--json", "migrate", "-r", "shared-docs", address]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["destination"].startswith("sftp://") and out["objects"] > 0
    on_sftp = load_config(conf).client("shared-docs")
    assert on_sftp.relay.protocol == "sftp" and on_sftp.relay.directory == folder
    assert load_config(conf).client("other").relay.protocol == "file"  # other sections untouched

    bob_sftp = replace(bob, relay=on_sftp.relay)
    sync(bob_sftp, on_sftp)
    assert tree(bob.local_path)["pending.txt"] == b"bob has not got this yet"
    write(alice.local_path, {"via-sftp.txt": b"sent through the sftp relay"})
    sync(on_sftp, bob_sftp)
    assert tree(bob.local_path)["via-sftp.txt"] == b"sent through the sftp relay"

    back = os.path.join(base, "back-home")
    assert escalectl(["-c", conf, "migrate", "-r", "shared-docs", f"file://{back}"]) == 0
    assert "now points [shared-docs]" in capsys.readouterr().out
    home = load_config(conf).client("shared-docs")
    assert home.relay == RelaySpec(protocol="file", directory=back, known_hosts=home.relay.known_hosts,
                                   ssh_key=home.relay.ssh_key, timeout=home.relay.timeout)
    write(bob.local_path, {"home-again.txt": b"back on the file relay"})
    sync(replace(bob, relay=home.relay), home)
    assert tree(alice.local_path) == tree(bob.local_path)
    assert len([n for n in os.listdir(base) if n.startswith("alice.conf.bak-")]) == 2


@pytest.mark.parametrize("verify", ["certs/ca.pem", "yes"])
def test_relative_verify_ssl_ca_file_of_a_destination_file_is_made_absolute(
        machines: Machines, tmp_path: Path, verify: str) -> None:
    """``verify ssl = FILE`` is relative to the destination file's folder, as
    ``ca file`` is: the rewritten section names the same CA file, absolute; a
    boolean is carried over as it is."""
    _base, conf, _alice, _ = machines
    other_dir = tmp_path / "elsewhere"
    (other_dir / "certs").mkdir(parents=True)
    ca = other_dir / "certs" / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    other = other_dir / "new.conf"
    other.write_text("[shared-docs]\nlocal path = /ignored\nprotocol = ftps\nhost address = 127.0.0.1\n"
                     f"port = 2121\nhost directory = /relay\nusername = u\npassword = p\nverify ssl = {verify}\n")
    plan = plan_relocation(conf, "shared-docs", str(other))
    assert plan.spec.protocol == "ftps" and plan.spec.verify_ssl is True
    if verify == "yes":
        assert "\nverify ssl = yes\n" in plan.new_text
    else:
        assert plan.spec.ca_file == str(ca)
        assert f"\nverify ssl = {ca}\n" in plan.new_text
    assert _read(conf) == plan.old_text  # planning reads only
