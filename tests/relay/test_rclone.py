"""The rclone backend: its rcd process (secrets, lifetime, death and rebirth),
remote naming, error translation and declared capabilities."""

from __future__ import annotations

import gc
import logging
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from escale.config.parser import parse_config
from escale.errors import RelayConnectionError, RelayError, RelayExists, RelayNotFound
from escale.processes import pid_alive
from escale.relay import RelaySpec, make_relay
from escale.relay.rclone import RcloneRelay, fs_string
from escale.relay.retry import RetryingRelay
from tests.servers.rclone import RcloneConf, old_rclone_relay
from tests.servers.sshd import HOST, SshServer, silent_server
from tests.servers.target import RelayTarget

pytestmark = pytest.mark.timeout(120)


def _proc_file(pid: int, name: str) -> list[bytes]:
    with open(f"/proc/{pid}/{name}", "rb") as handle:
        return handle.read().split(b"\0")


def _open(target: RelayTarget, folder: str | None = None) -> RcloneRelay:
    relay = target.relay(folder)
    assert isinstance(relay, RcloneRelay)
    relay.open()
    return relay


def test_rcd_listens_where_only_this_user_reaches_it(target_rclone_local: RelayTarget) -> None:
    """The rcd serves on a unix socket in a folder of mode 0700 (no rc
    credentials: the folder is the access control), on no TCP port, and its
    command line carries no secret."""
    relay = _open(target_rclone_local)
    rcd = relay._rcd
    assert rcd is not None and rcd.socket_path and rcd.auth is None
    folder = os.path.dirname(rcd.socket_path)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert os.stat(folder).st_uid == os.getuid()
    assert stat.S_ISSOCK(os.stat(rcd.socket_path).st_mode)
    argv = _proc_file(rcd.pid, "cmdline")
    assert argv[1] == b"rcd"
    assert b"--rc-addr" in argv and f"unix://{rcd.socket_path}".encode() in argv
    assert not any(b"127.0.0.1" in arg or b"pass" in arg.lower() for arg in argv)
    environ = dict(item.split(b"=", 1) for item in _proc_file(rcd.pid, "environ") if b"=" in item)
    assert b"RCLONE_RC_PASS" not in environ and b"RCLONE_RC_USER" not in environ
    spec = target_rclone_local.spec_for("x")
    assert environ[b"RCLONE_CONFIG"] == str(spec.rclone_config).encode()
    relay.close()
    assert not os.path.exists(folder)  # removed with the rcd


def test_close_stops_the_rcd(target_rclone_local: RelayTarget) -> None:
    relay = _open(target_rclone_local)
    pid = relay.rcd_pid
    assert pid is not None and pid_alive(pid)
    relay.close()
    assert not pid_alive(pid)
    assert relay.rcd_pid is None


def test_unclosed_relay_does_not_leak_its_rcd(target_rclone_local: RelayTarget) -> None:
    relay = _open(target_rclone_local)
    pid = relay.rcd_pid
    assert pid is not None and pid_alive(pid)
    del relay
    gc.collect()
    assert not pid_alive(pid)


def test_dead_rcd_is_transient_and_reopen_starts_a_new_one(target_rclone_local: RelayTarget) -> None:
    folder = target_rclone_local.new_folder()
    relay = _open(target_rclone_local, folder)
    relay.put_bytes("obj", b"kept")
    first = relay.rcd_pid
    assert first is not None
    os.kill(first, 9)  # our own child process
    while pid_alive(first):
        time.sleep(0.01)
    with pytest.raises(RelayConnectionError) as caught:
        relay.list()
    assert caught.value.transient
    relay.close()
    relay.open()
    assert relay.rcd_pid not in (None, first)
    assert relay.get_bytes("obj") == b"kept"
    relay.close()


def test_retry_wrapper_survives_a_dying_rcd(target_rclone_local: RelayTarget) -> None:
    inner = target_rclone_local.relay()
    assert isinstance(inner, RcloneRelay)
    waits: list[float] = []  # one wait before each retry

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    relay = RetryingRelay(inner, attempts=4, base_delay=0.05, max_delay=0.2, sleep=sleep)
    relay.open()
    relay.put_bytes("a", b"1")
    pid = inner.rcd_pid
    assert pid is not None
    os.kill(pid, 9)
    while pid_alive(pid):  # dead (a zombie until the relay reaps it) before we go on
        time.sleep(0.01)
    assert relay.get_bytes("a") == b"1"
    assert len(waits) >= 1
    assert inner.rcd_pid != pid
    relay.close()


def test_no_secret_in_logs(target_rclone_local: RelayTarget, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    relay = _open(target_rclone_local)
    pid = relay.rcd_pid
    assert pid is not None
    environ = dict(item.split(b"=", 1) for item in _proc_file(pid, "environ") if b"=" in item)
    relay.put_bytes("s", b"x")
    relay.get_bytes("s")
    with pytest.raises(RelayNotFound):
        relay.get_bytes("missing")
    relay.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records
    # no rc secret to leak (the socket's folder guards the rcd); the log is still written
    assert b"RCLONE_RC_PASS" not in environ and b"RCLONE_RC_USER" not in environ
    assert "RCLONE_RC" not in text


def test_fs_string() -> None:
    assert fs_string("local", "/tmp/repo") == "local:/tmp/repo"
    assert fs_string("s3:bucket", "escale/repo") == "s3:bucket/escale/repo"
    assert fs_string("s3:bucket", "") == "s3:bucket"
    assert fs_string("drive", "") == "drive:"
    assert fs_string("drive:", "sync") == "drive:sync"
    assert fs_string(":local", "/srv/relay") == ":local:/srv/relay"
    assert fs_string(":local:/srv", "relay") == ":local:/srv/relay"


@pytest.mark.parametrize("protocol", ["s3", "dropbox", "googledrive", "onedrive", "b2", "swift"])
def test_cloud_protocols_select_rclone_with_that_remote(protocol: str) -> None:
    relay = make_relay(RelaySpec(protocol=protocol, directory="escale"))
    assert isinstance(relay, RcloneRelay)
    assert relay.fs == f"{protocol}:escale"
    named = make_relay(RelaySpec(protocol=protocol, rclone_remote="mine:bucket", directory="escale"))
    assert isinstance(named, RcloneRelay) and named.fs == "mine:bucket/escale"


def test_unknown_remote_is_a_clear_permanent_error(rclone_conf: RcloneConf, tmp_path: Path) -> None:
    spec = RelaySpec(
        protocol="rclone",
        rclone_remote="nosuchremote",
        directory="x",
        rclone_config=rclone_conf.path,
        rclone_binary=rclone_conf.binary,
        timeout=10,
    )
    relay = make_relay(spec)
    with pytest.raises(RelayError) as caught:
        relay.open()
    assert "nosuchremote" in str(caught.value)
    assert not caught.value.transient
    assert isinstance(relay, RcloneRelay) and relay.rcd_pid is None


def test_missing_binary_is_named(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-rclone")
    relay = make_relay(RelaySpec(protocol="rclone", rclone_remote="local", rclone_binary=missing))
    with pytest.raises(RelayError, match=r"rclone binary .*no-rclone.* not found"):
        relay.open()


def test_silent_sftp_remote_is_a_transient_error(
    rclone_conf: RcloneConf, sshd_server: SshServer, tmp_path: Path
) -> None:
    with silent_server() as port:
        config = tmp_path / "rclone.conf"
        config.write_text(
            f"[silent]\ntype = sftp\nhost = {HOST}\nport = {port}\nuser = nobody\n"
            f"key_file = {sshd_server.user_key}\nshell_type = none\n"
        )
        spec = RelaySpec(
            protocol="rclone",
            rclone_remote="silent",
            directory="x",
            rclone_config=str(config),
            rclone_binary=rclone_conf.binary,
            timeout=2,
        )
        relay = make_relay(spec)
        with pytest.raises(RelayConnectionError) as caught:
            relay.open()
    assert caught.value.transient
    assert "ssh" in str(caught.value).lower()


def test_local_remote_mtime_precision_and_usage(target_rclone_local: RelayTarget) -> None:
    relay = _open(target_rclone_local)
    caps = relay.capabilities  # its flags: tests/relay/test_capabilities.py
    assert caps.mtime_precision is not None and caps.mtime_precision <= 1.0
    usage = relay.usage()
    assert usage is not None and usage.total
    relay.close()


def test_open_creates_the_repository_folder(target_rclone_local: RelayTarget) -> None:
    folder = "deep/er/" + target_rclone_local.new_folder()
    relay = _open(target_rclone_local, folder)
    relay.close()
    directory = target_rclone_local.spec_for(folder).directory
    assert os.path.isdir(directory)


@pytest.mark.parametrize("name", ["rclone_local", "rclone_sftp"])
def test_config_lines_describe_the_same_relay(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """What a target hands to a separate escale process is the relay the tests use."""
    target: RelayTarget = request.getfixturevalue(f"target_{name}")
    lines = "\n".join(f"{key} = {value}" for key, value in target.config_for("repo").items())
    config = parse_config(f"[c]\nlocal path = {tmp_path}\n{lines}\n", str(tmp_path / "escale.conf"))
    assert config.clients[0].relay == target.spec_for("repo")


def test_rcd_dies_with_a_killed_escale(tmp_path: Path, target_rclone_local: RelayTarget) -> None:
    """An escale process killed with SIGKILL leaves no rclone rcd behind."""
    import os
    import signal
    import sys
    import time

    spec = target_rclone_local.spec_for("orphan-check")
    script = (
        "import sys, time\n"
        "from escale.relay import RelaySpec, make_relay\n"
        f"relay = make_relay(RelaySpec(protocol='rclone', directory={spec.directory!r}, "
        f"rclone_remote={spec.rclone_remote!r}, rclone_config={spec.rclone_config!r}, "
        f"rclone_binary={spec.rclone_binary!r}))\n"
        "relay.open()\n"
        "print(relay.rcd_pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    rcd_pid = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(rcd_pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it if it became our zombie (it did not: it is re-parented to init)
            os.waitpid(rcd_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.kill(rcd_pid, signal.SIGKILL)
    raise AssertionError("rclone rcd outlived the escale process that started it")


def test_put_commits_answers_a_repeated_name_once(target_rclone_local: RelayTarget) -> None:
    """A name twice in one group is created by its first item only, as two
    puts in a row would do; nothing temporary is left behind."""
    relay = _open(target_rclone_local, target_rclone_local.new_folder())
    try:
        assert relay.put_commits([("m/a", b"first"), ("m/b", b"b"), ("m/a", b"second")]) == [True, True, False]
        assert relay.get_bytes("m/a") == b"first"
        assert relay.list_temporaries("m") == []
    finally:
        relay.close()


def test_put_commits_of_a_large_group_in_a_crowded_folder(target_rclone_local: RelayTarget) -> None:
    """More items than one round of requests takes, next to names already
    there: each existing name answered False and kept, every other created."""
    relay = _open(target_rclone_local, target_rclone_local.new_folder())
    try:
        for i in range(0, 600, 7):
            relay.put_bytes(f"c/{i:04d}", b"old", exclusive=True)
        items = [(f"c/{i:04d}", f"new {i}".encode()) for i in range(600)]
        created = relay.put_commits(items)
        assert created == [i % 7 != 0 for i in range(600)]
        assert relay.get_bytes("c/0007") == b"old"
        assert relay.get_bytes("c/0008") == b"new 8"
        assert len(relay.list("c")) == 600
        assert relay.list_temporaries("c") == []
    finally:
        relay.close()


def test_put_many_replaces_without_lookups(target_rclone_local: RelayTarget,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A replacing group put costs an upload and a batch of moves: no name is
    looked up (what an exclusive group needs), existing objects are replaced,
    nothing temporary is left; more names than one round takes, too."""
    relay = _open(target_rclone_local, target_rclone_local.new_folder())
    try:
        for i in range(0, 300, 5):
            relay.put_bytes(f"k/{i:04d}", b"old")

        def no_lookup(*names: object) -> None:
            raise AssertionError(f"looked up {names}")

        for lookup in ("_objects_exist", "_object_exists", "_stat", "_exists"):
            monkeypatch.setattr(relay, lookup, no_lookup)
        relay.put_many([(f"k/{i:04d}", f"new {i}".encode()) for i in range(300)])
        monkeypatch.undo()
        assert relay.get_bytes("k/0005") == b"new 5" and relay.get_bytes("k/0299") == b"new 299"
        assert len(relay.list("k")) == 300
        assert relay.list_temporaries("k") == []
    finally:
        relay.close()


def test_put_many_without_job_batch(target_rclone_local: RelayTarget) -> None:
    """An rclone without ``job/batch`` replaces the group one put at a time."""
    relay = old_rclone_relay(target_rclone_local)
    try:
        relay.put_bytes("o/taken", b"old")
        relay.put_many([("o/taken", b"new"), ("o/a", b"a"), ("o/a", b"b")])
        assert relay.get_bytes("o/taken") == b"new" and relay.get_bytes("o/a") == b"b"
        assert relay.list_temporaries("o") == []
    finally:
        relay.close()


def test_stat_tells_objects_folders_and_absence(target_rclone_local: RelayTarget) -> None:
    relay = _open(target_rclone_local, target_rclone_local.new_folder())
    try:
        relay.put_bytes("f/sub/obj", b"12345")
        relay.mkdir("f/empty")
        assert relay.stat("f/sub/obj").size == 5 and not relay.stat("f/sub/obj").is_dir
        assert relay.stat("f/sub").is_dir and relay.stat("f/empty").is_dir
        for missing in ("f/nothing", "f/sub/nothing", "f/nothing/deeper"):
            with pytest.raises(RelayNotFound):
                relay.stat(missing)
        with pytest.raises(RelayExists):
            relay.put_bytes("f/sub/obj", b"other", exclusive=True)
    finally:
        relay.close()


def test_put_commits_without_job_batch(target_rclone_local: RelayTarget) -> None:
    """An rclone without ``job/batch`` gets the group one put at a time, same answers."""
    relay = old_rclone_relay(target_rclone_local)
    try:
        relay.put_bytes("o/taken", b"kept", exclusive=True)
        assert relay.put_commits([("o/a", b"a"), ("o/taken", b"x"), ("o/a", b"y")]) == [True, False, False]
        assert relay.get_bytes("o/taken") == b"kept" and relay.get_bytes("o/a") == b"a"
        assert relay.put_commits([("o/b", b"b")]) == [True]
        assert not relay.capabilities.group_put  # one put after the other: no cheap group
        assert not relay.capabilities.group_delete
        got = relay.delete_many(["o/a", "o/none", "o/b"])  # one delete after the other, same answers
        assert got[0] is None and isinstance(got[1], RelayNotFound) and got[2] is None
        assert not relay.exists("o/a") and relay.exists("o/taken")
    finally:
        relay.close()


def test_a_group_put_is_declared_and_keeps_what_exists(target_rclone_local: RelayTarget) -> None:
    """rclone's job/batch makes a group of puts cheap: declared, so that
    callers with many small objects (acknowledgements) gather them; a group
    answers False for a name that exists and leaves that object as it was."""
    relay = target_rclone_local.relay()
    relay.open()
    try:
        relay.create_root()
        assert relay.capabilities.group_put and relay.capabilities.group_delete
        relay.put_bytes("acks/k.1.b", b"earlier")
        items = [(f"acks/k.{i}.a", b"ack %d" % i) for i in range(100)] + [("acks/k.1.b", b"again")]
        created = relay.put_commits(items)
        assert created == [True] * 100 + [False]
        assert relay.get_bytes("acks/k.1.b") == b"earlier"
        assert all(relay.get_bytes(name) == data for name, data in items[:100])
        assert not relay.list_temporaries("acks")
    finally:
        relay.close()


def test_connections_of_one_process_share_one_rcd(target_rclone_local: RelayTarget) -> None:
    """Relays of one remote and configuration share an rcd, each with its own
    connection; it outlives the thread that started it and stops with the
    last relay that uses it."""
    folder = target_rclone_local.new_folder()
    opened: list[RcloneRelay] = []
    worker = threading.Thread(target=lambda: opened.append(_open(target_rclone_local, folder)))
    worker.start()
    worker.join(60)
    first = opened[0]
    second = _open(target_rclone_local, folder)
    try:
        pid = first.rcd_pid
        assert pid is not None and second.rcd_pid == pid
        first.put_bytes("shared", b"one")  # the thread that started the rcd has ended
        assert second.get_bytes("shared") == b"one"
        first.close()
        assert pid_alive(pid)
        assert second.list() == [second.stat("shared")]
    finally:
        second.close()
    assert not pid_alive(pid)
