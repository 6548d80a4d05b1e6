"""escalectl leases: list the relay's lease generations and break one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from escale.config import load_config
from escale.crypto import generate_key_file
from escale.errors import LeaseLost
from escale.ops.leases import open_repository
from escale.protocol.lease import LeaseManager, highest_generation, new_record, write_claim
from tests.daemon.helpers import ctl, ctl_here, escale, write_config


@pytest.fixture
def encrypted(tmp_path: Path) -> str:
    key = str(tmp_path / "shared.key")
    generate_key_file(key)
    common = {"protocol": "file", "relay directory": "relay", "encryption": "yes", "key": key}
    return write_config(str(tmp_path), {"alice": {"local path": "alice", **common},
                                        "bob": {"local path": "bob", **common}})


def test_no_repository_yet(encrypted: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = ctl_here(capsys, encrypted, "leases", "-r", "alice")
    assert code == 69 and out == ""
    assert "no escale repository on relay file://" in err


def test_needs_a_section_when_several(encrypted: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = ctl_here(capsys, encrypted, "leases")
    assert code == 64 and "choose one with -r SECTION" in err


def test_list_and_break(encrypted: str, capsys: pytest.CaptureFixture[str]) -> None:
    (Path(encrypted).parent / "alice").mkdir()
    (Path(encrypted).parent / "alice" / "f.txt").write_text("x\n")
    assert escale("--once", "-c", encrypted, "-r", "alice").returncode == 0  # creates, leases, releases
    settings = load_config(encrypted).client("bob")
    relay, sealer = open_repository(settings)
    try:
        holder = LeaseManager(relay, sealer, client_id="f" * 32, label="laptop", timeout=120)
        lease = holder.acquire("backup")
        generation = lease.generation

        result = ctl(encrypted, "leases", "-r", "bob")  # a real process, with the key
        assert result.returncode == 0, result.stderr
        rows = [line.split() for line in result.stdout.splitlines()]
        assert rows[0][:3] == ["leases", "on", "relay"]
        assert rows[1] == ["GENERATION", "STATE", "HOLDER", "HOST", "PID", "OPERATION", "RENEWALS"]
        current = next(r for r in rows if r[:2] == [str(generation), "*"])
        assert current[2:4] == ["held", "laptop"] and current[-2:] == ["backup", "0"]
        assert any(r[:2] == [str(generation - 1), "released"] for r in rows)

        code, out, _ = ctl_here(capsys, encrypted, "--json", "leases", "-r", "alice")
        doc = json.loads(out)
        held = next(r for r in doc["leases"] if r["generation"] == generation)
        assert held["state"] == "held" and held["holder"] == "f" * 32 and held["mine"] is False
        assert held["current"] is True
        mine = next(r for r in doc["leases"] if r["generation"] == generation - 1)
        assert mine["mine"] is True and mine["label"] == "alice"

        # not on a terminal and no --yes: refused, nothing changed
        code, _, err = ctl_here(capsys, encrypted, "leases", "-r", "bob", "--break", str(generation))
        assert code == 64 and "--yes" in err
        before = holder.read(relay, generation)
        assert before is not None and before.released is False
        code, _, err = ctl_here(capsys, encrypted, "leases", "-r", "bob", "--break", "999", "--yes")
        assert code == 64 and "no lease generation 999" in err

        code, out, _ = ctl_here(capsys, encrypted, "leases", "-r", "bob", "--break", str(generation), "--yes")
        assert code == 0
        assert out.splitlines()[0] == (f"lease generation {generation} marked released "
                                       f"(was held by laptop on {lease.record.host} (pid {lease.record.pid}, "
                                       "backup))")
        record = holder.read(relay, generation)
        assert record is not None and record.released and record.token != lease.record.token

        # the next client takes the lease at once; the old holder loses it
        taker = LeaseManager(relay, sealer, client_id="e" * 32, label="desktop", timeout=120)
        assert taker.acquire("sync").generation == generation + 1
        with pytest.raises(LeaseLost):
            lease.renew()
        code, out, _ = ctl_here(capsys, encrypted, "leases", "-r", "bob", "--break", str(generation), "--yes")
        assert code == 0 and "already released; nothing changed" in out
    finally:
        relay.close()


def test_a_generation_only_claimed_is_listed_and_can_be_broken(encrypted: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A contender that died between its claim and its record (relays whose
    exclusive put does not decide) leaves a claim alone: listed as
    ``claimed`` with the claimant, and broken like a held generation."""
    (Path(encrypted).parent / "alice").mkdir()
    assert escale("--once", "-c", encrypted, "-r", "alice").returncode == 0
    settings = load_config(encrypted).client("bob")
    relay, sealer = open_repository(settings)
    try:
        generation = highest_generation(relay) + 1
        write_claim(relay, sealer, new_record(generation, holder="d" * 32, label="crashed", operation="sync"))

        code, out, _ = ctl_here(capsys, encrypted, "--json", "leases", "-r", "alice")
        row = next(r for r in json.loads(out)["leases"] if r["generation"] == generation)
        assert row["state"] == "claimed" and row["label"] == "crashed" and row["current"] is True

        code, out, _ = ctl_here(capsys, encrypted, "leases", "-r", "bob", "--break", str(generation), "--yes")
        assert code == 0 and out.startswith(f"lease generation {generation} marked released (was held by crashed")
        taker = LeaseManager(relay, sealer, client_id="e" * 32, label="desktop", timeout=120, claims=True)
        assert taker.acquire("sync").generation == generation + 1
    finally:
        relay.close()
