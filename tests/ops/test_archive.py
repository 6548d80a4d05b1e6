"""Restore checks the whole archive before writing anything: every bad archive is refused."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from escale.config.settings import ClientSettings
from escale.errors import ArchiveError, UsageError
from escale.ops.archive import MANIFEST, compression_for, verify_archive
from escale.ops.backup import backup
from escale.ops.restore import restore
from escale.relay import RelaySpec
from tests.ops.helpers import make_settings, relay_objects, sync, write


@pytest.fixture
def archive_and_relay(tmp_path: Path) -> tuple[str, ClientSettings]:
    """A good plain-tar backup of a two-file repository, and an empty second relay."""
    base = str(tmp_path)
    spec = RelaySpec(protocol="file", directory=os.path.join(base, "relay"))
    alice = make_settings(base, "alice", spec)
    write(alice.local_path, {"a.txt": b"alpha" * 100, "sub/b.txt": b"beta"})
    sync(alice, rounds=1)
    archive = os.path.join(base, "good.tar")
    backup(alice, archive)
    empty = RelaySpec(protocol="file", directory=os.path.join(base, "empty"))
    os.makedirs(empty.directory)
    return archive, make_settings(base, "bob", empty)


def _members(path: str) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        out = []
        for member in tar:
            handle = tar.extractfile(member)
            out.append((member, handle.read() if handle else b""))
        return out


def _rebuild(path: str, members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if info.isreg():
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)


def _refused(archive: str, settings: ClientSettings, match: str) -> None:
    before = relay_objects(settings.relay)
    with pytest.raises(ArchiveError, match=match) as caught:
        restore(settings, archive)
    assert caught.value.exit_code == 65
    assert relay_objects(settings.relay) == before == {}


def test_extension_picks_compression_and_others_are_usage_errors() -> None:
    assert compression_for("x.tar") == ""
    assert compression_for("X.TAR.GZ") == "gz"
    assert compression_for("x.tgz") == "gz"
    assert compression_for("x.tar.bz2") == "bz2"
    for bad in ("x.zip", "x.tar.xz", "x", "x.gz"):
        with pytest.raises(UsageError) as caught:
            compression_for(bad)
        assert caught.value.exit_code == 64


def test_good_archive_verifies_and_lists_its_objects(archive_and_relay: tuple[str, ClientSettings]) -> None:
    archive, _ = archive_and_relay
    manifest = verify_archive(archive)
    names = {o.name for o in manifest.objects}
    assert "escale.repo" in names
    assert any(n.startswith("meta/") for n in names)
    assert not any(n.startswith("lease/") for n in names)
    assert manifest.consistent and manifest.lease_generation >= 1
    members = [m.name for m, _ in _members(archive)]
    assert members[-1] == MANIFEST  # written last: a truncated archive has none


@pytest.mark.parametrize("where", ["middle", "in the manifest", "after the manifest", "half the end marker"])
def test_truncated_archive_is_refused(archive_and_relay: tuple[str, ClientSettings], where: str) -> None:
    archive, settings = archive_and_relay
    with open(archive, "rb") as handle:
        data = handle.read()
    with tarfile.open(archive) as tar:
        last = tar.getmembers()[-1]
        end = tar.offset  # where the end-of-archive marker starts
    keep = {"middle": len(data) // 2, "in the manifest": last.offset_data + last.size // 2,
            "after the manifest": end, "half the end marker": end + tarfile.BLOCKSIZE}[where]
    cut = archive.replace("good", "cut")
    with open(cut, "wb") as handle:
        handle.write(data[:keep])
    _refused(cut, settings, "truncated|no escale-backup.json|corrupt")


def test_truncated_compressed_archive_is_refused(tmp_path: Path, archive_and_relay: tuple[str, ClientSettings]) -> None:
    archive, settings = archive_and_relay
    members = _members(archive)
    gz = str(tmp_path / "cut.tar.gz")
    with tarfile.open(gz, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    with open(gz, "rb") as handle:
        data = handle.read()
    with open(gz, "wb") as handle:
        handle.write(data[: len(data) - 40])
    _refused(gz, settings, "corrupt or truncated")


def test_altered_object_is_refused(archive_and_relay: tuple[str, ClientSettings]) -> None:
    archive, settings = archive_and_relay
    members = _members(archive)
    for i, (info, data) in enumerate(members):
        if info.name.startswith("relay/meta/"):
            members[i] = (info, bytes([data[0] ^ 1]) + data[1:])
            break
    _rebuild(archive, members)
    _refused(archive, settings, "does not match the manifest")


def test_missing_manifest_is_refused(archive_and_relay: tuple[str, ClientSettings]) -> None:
    archive, settings = archive_and_relay
    _rebuild(archive, [(i, d) for i, d in _members(archive) if i.name != MANIFEST])
    _refused(archive, settings, "no escale-backup.json")


def test_listed_object_missing_is_refused(archive_and_relay: tuple[str, ClientSettings]) -> None:
    archive, settings = archive_and_relay
    _rebuild(archive, [(i, d) for i, d in _members(archive) if not i.name.startswith("relay/meta/")])
    _refused(archive, settings, "listed but missing")


def test_unlisted_member_is_refused(archive_and_relay: tuple[str, ClientSettings]) -> None:
    archive, settings = archive_and_relay
    members = _members(archive)
    members.insert(0, (tarfile.TarInfo("relay/data/extra"), b"smuggled"))
    _rebuild(archive, members)
    _refused(archive, settings, "not listed in the manifest")


def test_manifest_that_is_not_json_is_refused(archive_and_relay: tuple[str, ClientSettings]) -> None:
    archive, settings = archive_and_relay
    members = [(i, b"{not json" if i.name == MANIFEST else d) for i, d in _members(archive)]
    _rebuild(archive, members)
    _refused(archive, settings, "not valid JSON")


def _with_member(archive: str, info: tarfile.TarInfo, data: bytes = b"") -> None:
    members = _members(archive)
    manifest_info, manifest = members.pop()
    doc = json.loads(manifest)
    if info.isreg():
        import hashlib

        doc["objects"].append({"name": info.name.removeprefix("relay/"), "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()})
    members.append((info, data))
    members.append((manifest_info, json.dumps(doc).encode()))
    _rebuild(archive, members)


@pytest.mark.parametrize("name", ["/etc/evil", "relay/../evil", "relay/meta/../../evil", "relay//x", "evil"])
def test_unsafe_member_names_are_refused(archive_and_relay: tuple[str, ClientSettings], name: str) -> None:
    archive, settings = archive_and_relay
    _with_member(archive, tarfile.TarInfo(name), b"x")
    _refused(archive, settings, "unsafe name|not a relay object")


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE,
                                  tarfile.DIRTYPE])
def test_links_devices_and_folders_are_refused(archive_and_relay: tuple[str, ClientSettings], kind: bytes) -> None:
    archive, settings = archive_and_relay
    info = tarfile.TarInfo("relay/data/odd")
    info.type = kind
    info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    _with_member(archive, info)
    _refused(archive, settings, "is a (link|special file|directory)")


def test_missing_archive_file_is_an_archive_error(
    archive_and_relay: tuple[str, ClientSettings], tmp_path: Path,
) -> None:
    _, settings = archive_and_relay
    _refused(str(tmp_path / "nope.tar.gz"), settings, "no such file")


def test_not_an_archive_is_refused(archive_and_relay: tuple[str, ClientSettings], tmp_path: Path) -> None:
    _, settings = archive_and_relay
    path = tmp_path / "junk.tar.bz2"
    path.write_bytes(b"this is not bzip2 data at all" * 10)
    _refused(str(path), settings, "not a readable bz2 tar archive")
