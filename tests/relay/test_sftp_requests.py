"""The sftp backend's pipelined small-object paths, on real servers: whole
objects at every size around the read request and the ``limit``, objects
bigger than the channel window both ways (the client's own packet buffer),
groups of exclusive puts, a write the server refuses never moved into
place, and listings: folders of many READDIR answers (kept in flight on
OpenSSH), a listing left early, and the answers parsed field by field."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator

import paramiko
import pytest

from escale.errors import ObjectTooLarge, RelayPermissionDenied
from escale.relay import make_relay
from escale.relay.base import Relay
from escale.relay.sftp import LARGEST_REQUEST, READDIR_AHEAD, SftpRelay, _listed, _names
from tests.servers.rclone import RcloneSftpServer
from tests.servers.sshd import SshServer, sshd_refusing
from tests.servers.target import plant_file

pytestmark = pytest.mark.timeout(120)

SIZES = [0, 1, 4096, LARGEST_REQUEST - 1, LARGEST_REQUEST, LARGEST_REQUEST + 1, 3 * LARGEST_REQUEST + 5]


@pytest.fixture(params=["openssh", "rclone"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[SshServer | RcloneSftpServer, SftpRelay, str]]:
    """A server (OpenSSH's, rclone's), a relay open on a new folder of it, and that folder's name."""
    if request.param == "openssh":
        server: SshServer | RcloneSftpServer = request.getfixturevalue("sshd_server")
    else:
        server = request.getfixturevalue("rclone_sftp_server")
    folder = f"requests-{request.node.name}".replace("[", "-").replace("]", "")
    opened = make_relay(server.spec_for(folder))
    assert isinstance(opened, SftpRelay)
    opened.open()
    opened.create_root()
    try:
        yield server, opened, folder
    finally:
        opened.close()


@pytest.fixture
def relay(served: tuple[SshServer | RcloneSftpServer, SftpRelay, str]) -> Relay:
    return served[1]


def _content(size: int) -> bytes:
    return bytes((i * 7 + size) % 251 for i in range(size))


def test_every_size_is_read_whole(relay: Relay) -> None:
    for size in SIZES:
        relay.put_bytes(f"s/{size}", _content(size))
    for size in SIZES:
        assert relay.get_bytes(f"s/{size}") == _content(size)
        sink = io.BytesIO()
        relay.get(f"s/{size}", sink)
        assert sink.getvalue() == _content(size)
        assert relay.get_bytes(f"s/{size}", limit=size) == _content(size)
        assert relay.get_bytes(f"s/{size}", limit=size + LARGEST_REQUEST) == _content(size)


def test_one_byte_over_the_limit_is_refused_and_the_session_goes_on(relay: Relay) -> None:
    for size in SIZES[1:]:
        relay.put_bytes(f"o/{size}", _content(size))
    for size in SIZES[1:]:
        with pytest.raises(ObjectTooLarge) as caught:
            relay.get_bytes(f"o/{size}", limit=size - 1)
        assert caught.value.name == f"o/{size}"
    # the refused reads' answers and the closes sent without waiting leave the session in step
    assert [e.name for e in relay.list("o")] == sorted(f"o/{size}" for size in SIZES[1:])
    assert relay.get_bytes("o/1", limit=1) == _content(1)


def test_many_small_gets_in_a_row_close_their_handles(relay: Relay) -> None:
    relay.put_bytes("m/one", b"payload")
    for _ in range(300):
        assert relay.get_bytes("m/one", limit=100) == b"payload"
    relay.put_bytes("m/one", b"changed")  # replacing works: nothing holds the object open
    assert relay.get_bytes("m/one", limit=100) == b"changed"


def test_put_commits_group_with_a_repeated_name_and_new_folders(relay: Relay) -> None:
    relay.put_bytes("g/taken", b"first")
    created = relay.put_commits([
        ("g/a", b"a" * 5000), ("g/taken", b"second"), ("g/new/b", b"b"), ("g/a", b"again"),
        ("g/other/c", _content(LARGEST_REQUEST + 3)),
    ])
    if relay.capabilities.exclusive_create:
        assert created == [True, False, True, False, True]
    assert relay.get_bytes("g/a") == b"a" * 5000 or not relay.capabilities.exclusive_create
    assert relay.get_bytes("g/taken") == b"first"
    assert relay.get_bytes("g/new/b") == b"b"
    assert relay.get_bytes("g/other/c") == _content(LARGEST_REQUEST + 3)
    assert relay.list_temporaries("g") == []
    assert relay.list_temporaries("g/new") == []


class _HeldSink(io.BytesIO):
    """A download's sink that takes its time over the first write (a
    consumer behind the server), so that the channel gathers many SSH
    packets and SFTP replies arrive split across, and several within, one
    receive of the client's."""

    def __init__(self) -> None:
        super().__init__()
        self._held = False

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if not self._held:
            self._held = True
            hashlib.sha256(bytes(4 << 20)).digest()  # busy, not asleep: the server keeps sending
        return super().write(data)


BIG_SIZES = [2 * 1024 * 1024 + 1, 9 * 1024 * 1024 + 3]  # beyond the channel window and the reads in flight


def test_objects_bigger_than_the_window_go_both_ways_and_the_session_stays_in_step(relay: Relay) -> None:
    for size in BIG_SIZES:
        relay.put(f"b/{size}", io.BytesIO(_content(size)))
    for size in BIG_SIZES:
        sink = _HeldSink()
        relay.get(f"b/{size}", sink)
        assert sink.getvalue() == _content(size)
        with pytest.raises(ObjectTooLarge):
            relay.get_bytes(f"b/{size}", limit=LARGEST_REQUEST)
        # paramiko's own requests after ours read from the same buffer: in step
        assert relay.stat(f"b/{size}").size == size
        assert relay.get_bytes("b/" + str(BIG_SIZES[0]))[-7:] == _content(BIG_SIZES[0])[-7:]
    assert [e.name for e in relay.list("b")] == sorted(f"b/{size}" for size in BIG_SIZES)
    assert relay.list_temporaries("b") == []


@pytest.fixture(scope="module")
def write_refusing_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """An OpenSSH sshd whose sftp-server refuses every WRITE request (``-P
    write``) while it opens, renames and removes files as usual: a write
    error that only shows in the answers to pipelined writes."""
    with sshd_refusing(str(tmp_path_factory.mktemp("sshd-no-write")), "write") as server:
        yield server


def test_refused_write_is_never_moved_into_place(write_refusing_sshd: SshServer) -> None:
    relay = make_relay(write_refusing_sshd.spec_for("no-write"))
    relay.open()
    try:
        relay.create_root()
        for exclusive in (False, True):
            with pytest.raises(RelayPermissionDenied):
                relay.put_bytes(f"obj-{exclusive}", b"content", exclusive=exclusive)
            assert not relay.exists(f"obj-{exclusive}")
        with pytest.raises(RelayPermissionDenied):
            relay.put_commits([("c/one", b"1"), ("c/two", b"2")])
        assert not relay.exists("c/one") and not relay.exists("c/two")
        relay.put_bytes("empty", b"")  # no write request: allowed
        assert relay.get_bytes("empty") == b""
        assert relay.list_temporaries() == []
        assert relay.list_temporaries("c") == []
    finally:
        relay.close()


#: more names than a dozen READDIR answers hold (OpenSSH answers 100 at a time)
MANY_NAMES = 1234


def _plant_on_disk(server: SshServer | RcloneSftpServer, folder: str, names: list[str]) -> None:
    """Write each of ``names`` (content: ``len(name) % 7`` zero bytes) into
    the served folder on disk, before the server has listed its folder (the
    rclone server caches what it listed)."""
    for name in names:
        plant_file(server.root, folder, name, bytes(len(name) % 7))


def test_a_folder_of_many_answers_is_listed_whole(served: tuple[SshServer | RcloneSftpServer, SftpRelay, str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Every name of a folder bigger than many READDIR answers, with its size
    and kind (READDIR kept in flight on OpenSSH, one at a time elsewhere); on
    OpenSSH a name that is not UTF-8 is left out with a warning, the others
    listed; the session is in step after it."""
    server, relay, folder = served
    names = [f"l/{number:0{1 + number % 9}d}" for number in range(MANY_NAMES)]
    _plant_on_disk(server, folder, [*names, "l/sub/inside"])
    if isinstance(server, SshServer):
        _plant_on_disk(server, folder, ["l/bad-\udcff"])  # the byte 0xff in the name on disk
    listed = relay.list("l")
    files = [e for e in listed if not e.is_dir]
    assert [(e.name, e.size) for e in files] == sorted((name, len(name) % 7) for name in names)
    assert all(e.mtime is not None for e in files)
    assert [e.name for e in listed if e.is_dir] == ["l/sub"]
    if isinstance(server, SshServer):
        assert [r.getMessage() for r in caplog.records if "bad-" in r.getMessage()], "no warning for the name"
    assert relay.stat(names[3]).size == len(names[3]) % 7  # paramiko's own request after ours: in step
    assert relay.get_bytes(names[6]) == bytes(len(names[6]) % 7)


def test_a_listing_left_early_takes_its_answers_and_closes(served: tuple[SshServer | RcloneSftpServer, SftpRelay,
                                                                         str]) -> None:
    """A listing whose reader stops after one entry (READDIR requests still
    in flight on OpenSSH) takes their answers and closes the folder: the
    session goes on."""
    server, relay, folder = served
    assert relay._readdir_ahead == (READDIR_AHEAD if isinstance(server, SshServer) else 1)
    names = [f"e/{number:05d}" for number in range(MANY_NAMES)]
    _plant_on_disk(server, folder, names)
    listing = _listed(relay._client(), relay._path("e"), relay._readdir_ahead)
    next(listing)
    listing.close()
    assert [e.name for e in relay.list("e")] == names
    assert relay.get_bytes(names[-1]) == bytes(len(names[-1]) % 7)


def _name_answer(*entries: bytes) -> paramiko.Message:
    body = paramiko.Message()
    body.add_int(len(entries))
    for entry in entries:
        body.add_bytes(entry)
    return paramiko.Message(body.asbytes())


def _entry(name: bytes, attributes: bytes) -> bytes:
    return struct.pack(">I", len(name)) + name + struct.pack(">I", 4) + b"long" + attributes


def test_an_answer_parsed_field_by_field() -> None:
    """Each attribute the flags announce is read or skipped in its place;
    the size and time only when stated."""
    every = struct.pack(">IQIIIII", 0x1 | 0x2 | 0x4 | 0x8 | 0x80000000, 42, 1000, 1000, 0o40755, 7, 1_700_000_000)
    every += struct.pack(">I", 1) + struct.pack(">I", 3) + b"k@x" + struct.pack(">I", 1) + b"v"
    bare = struct.pack(">I", 0)
    answer = _name_answer(_entry(b"dir", every), _entry(b"bare", bare), _entry("é".encode(), bare),
                          _entry(b"usual", USUAL))
    assert list(_names(answer)) == [("dir", 42, 1_700_000_000, True), ("bare", 0, None, False),
                                    ("é", 0, None, False), ("usual", 9, 1_600_000_000, False)]


#: what OpenSSH states of a file: size, uid and gid, permissions, times
USUAL = struct.pack(">IQIIIII", 0xF, 9, 1000, 1000, 0o100644, 5, 1_600_000_000)


@pytest.mark.parametrize(("attributes", "cut"), [(struct.pack(">IQ", 0x1, 5), cut) for cut in (3, 6, 9, 14, 20, 27)]
                         + [(USUAL, cut) for cut in (19, 25, 47)])
def test_an_answer_cut_short_is_a_protocol_error(attributes: bytes, cut: int) -> None:
    entry = _entry(b"name", attributes)
    answer = _name_answer(entry[:cut])
    with pytest.raises(paramiko.SSHException, match="cut short"):
        list(_names(answer))
