"""escale -i: the interactive setup, driven through a pseudo-terminal on a real process (pexpect)."""

from __future__ import annotations

import io
import os
import socket
import stat
import sys
from pathlib import Path

import pexpect

from escale.config import load_config
from escale.crypto.keys import load_secret
from tests.servers.ftp import FtpServer


def _escale(*args: str) -> pexpect.spawn[str]:
    """``escale ARGS`` on a new pseudo-terminal; everything it shows is kept in ``logfile_read``."""
    term = pexpect.spawn(sys.executable, ["-m", "escale.cli.main", *args], encoding="utf-8",
                         codec_errors="replace", timeout=60)
    term.logfile_read = io.StringIO()
    return term


def _transcript(term: pexpect.spawn[str]) -> str:
    """All the terminal showed so far (input echoed by the terminal included)."""
    log = term.logfile_read
    assert isinstance(log, io.StringIO)
    return log.getvalue().replace("\r\n", "\n")


def _finish(term: pexpect.spawn[str]) -> int:
    """Read until the process ends; its exit code."""
    term.expect(pexpect.EOF, timeout=120)
    term.close()
    assert term.exitstatus is not None, f"killed by signal {term.signalstatus}"
    return term.exitstatus


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_setup_with_a_file_relay_and_a_new_key(tmp_path: Path) -> None:
    local = tmp_path / "Documents"
    relay = tmp_path / "relay"
    term = _escale("-i")
    term.expect(r"Local folder to synchronise: ")
    term.sendline(str(local))
    term.expect(r"Name of this client \(the configuration section\) \[Documents\]: ")
    term.sendline("laptop")
    term.expect(r"\(empty: step by step\): ")
    term.sendline(f"file://{relay}")
    term.expect(r"The relay answers")
    term.expect(r"Encrypt the files on the relay \(recommended\)\? \[Y/n\]: ")
    term.sendline("")
    term.expect(r"Existing key file \(empty: generate a new key\): ")
    term.sendline("")
    term.expect(r"generated a new key in \S+ \(mode 0600\)")
    key_line = term.after
    assert isinstance(key_line, str)
    term.expect(r"Every other client of this relay needs a copy of this key file")
    term.expect(r"packs many small files into a few relay requests")
    term.expect(r"Use the index layout \(index\)\? \[y/N\]: ")
    term.sendline("")
    term.expect(r"Synchronisation mode \(shared/upload/download/conservative\) \[shared\]: ")
    term.sendline("sideways")
    term.expect(r"choose one of: shared, upload, download, conservative")
    term.expect(r"Synchronisation mode .*: ")
    term.sendline("upload")
    term.expect(r"puller count; empty: every registered client\): ")
    term.sendline("two")
    term.expect(r"puller count; empty: every registered client\): ")
    term.sendline("2")
    term.expect(r"Seconds between two passes \(refresh\) \[10\]: ")
    term.sendline("0.5")
    term.expect(r"Done\. Run 'escale -c ")
    assert _finish(term) == 0, _transcript(term)

    target = os.path.join(os.environ["HOME"], ".config", "escale", "escale.conf")
    config = load_config(target)
    client = config.client("laptop")
    assert client.local_path == str(local) and local.is_dir()
    assert client.relay.protocol == "file" and client.relay.directory == str(relay)
    assert client.mode == "upload" and client.puller_count == 2 and client.refresh == 0.5
    assert client.encryption == "aes-256-gcm" and client.index is False
    key = os.path.join(os.path.dirname(target), "laptop.key")
    assert client.key_file == key and key in key_line
    assert _mode(key) == 0o600 and _mode(target) == 0o600
    load_secret(key, None)


def test_setup_with_credentials_and_an_unreachable_relay(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    target = str(tmp_path / "conf" / "escale.conf")
    term = _escale("-i", "-c", target)
    term.expect(r"Local folder to synchronise: ")
    term.sendline(str(tmp_path / "work"))
    term.expect(r"\[work\]: ")
    term.sendline("")
    term.expect(r"\(empty: step by step\): ")
    term.sendline(f"ftp://syncer:secret@127.0.0.1:{port}/repo")  # a password in an address is refused
    term.expect(r"holds a password")
    term.expect(r"\(empty: step by step\): ")
    term.sendline(f"ftp://syncer@127.0.0.1:{port}/repo")
    term.expect(r"Password \(not shown; empty: none\): ")
    term.sendline("pa:ss word")
    term.expect(r"credentials written to \S+ \(mode 0600\)")
    term.expect(r"The relay ftp://\S+ cannot be used: ")
    term.expect(r"Enter the relay again, keep these settings anyway, or cancel\? \(again/keep/cancel\) \[again\]: ")
    assert not os.path.exists(target)  # nothing written before the relay was checked
    term.sendline("keep")
    term.expect(r"Encrypt the files on the relay \(recommended\)\? \[Y/n\]: ")
    term.sendline("n")
    term.expect(r"Use the index layout \(index\)\? \[y/N\]: ")
    term.sendline("")
    term.expect(r"Synchronisation mode .*: ")
    term.sendline("")
    term.expect(r"puller count.*: ")
    term.sendline("")
    term.expect(r"\(refresh\) \[10\]: ")
    term.sendline("")
    term.expect(r"The configuration is kept in")
    assert _finish(term) == 69, _transcript(term)
    assert "pa:ss word" not in _transcript(term)  # never echoed nor printed

    client = load_config(target).client("work")
    assert (client.relay.protocol, client.relay.host, client.relay.port) == ("ftp", "127.0.0.1", port)
    assert client.relay.username == "syncer" and client.relay.password == "pa:ss word"
    assert client.relay.directory == "/repo" and client.index is False and client.encryption is None
    secret = os.path.join(os.path.dirname(target), "work.secret")
    assert _mode(secret) == 0o600
    with open(target) as handle:
        text = handle.read()
    assert "pa:ss word" not in text and f"secret file = {secret}" in text


def test_end_of_input_cancels_without_writing(tmp_path: Path) -> None:
    target = tmp_path / "escale.conf"
    term = _escale("-i", "-c", str(target))
    term.expect(r"Local folder to synchronise: ")
    term.sendeof()
    assert _finish(term) == 64
    assert "setup cancelled" in _transcript(term)
    assert not target.exists()


def test_import_sections(tmp_path: Path) -> None:
    source_dir = tmp_path / "elsewhere"
    source_dir.mkdir()
    source = source_dir / "old.conf"
    source.write_text(
        "log file = old.log\nrefresh = 0.5\n\n"
        "[one]\nlocal path = one\nprotocol = file\nrelay directory = relay\n\n"
        "[two]\nlocal path = two\nprotocol = file\nrelay directory = relay\nmode = download\n")
    target = tmp_path / "home.conf"
    target.write_text("[two]\nlocal path = mine\nprotocol = file\nrelay directory = myrelay\n")
    term = _escale("-i", str(source), "-c", str(target))
    term.expect(r"Section \[two\] exists in \S+; replace it with \[two\] of \S+\? \[y/N\]: ")
    term.sendline("n")
    term.expect(r"kept \[two\]")
    term.expect(r"Not imported \(global settings of \S+\): log file")
    term.expect(r"Imported \[one\] into")
    assert _finish(term) == 0, _transcript(term)
    config = load_config(str(target))
    assert [c.name for c in config.clients] == ["two", "one"]
    one = config.client("one")
    assert one.local_path == str(source_dir / "one") and one.relay.directory == str(source_dir / "relay")
    assert one.refresh == 0.5
    two = config.client("two")
    assert two.local_path == str(tmp_path / "mine") and two.mode == "shared"
    assert config.globals.log_file is None


def test_a_mistyped_address_and_a_refused_login_are_asked_again(tmp_path: Path, ftp_server: FtpServer) -> None:
    target = tmp_path / "conf" / "escale.conf"
    term = _escale("-i", "-c", str(target))
    term.expect(r"Local folder to synchronise: ")
    term.sendline(str(tmp_path / "lab"))
    term.expect(r"\[lab\]: ")
    term.sendline("")
    term.expect(r"\(empty: step by step\): ")
    term.sendline(f"ftp//127.0.0.1:{ftp_server.port}/data")  # not read as a host named "ftp"
    term.expect(rf"malformed address: .*did you mean ftp://127\.0\.0\.1:{ftp_server.port}/data\?")
    term.expect(r"\(empty: step by step\): ")
    term.sendline(f"ftp://{ftp_server.user}@127.0.0.1:{ftp_server.port}/data")
    term.expect(r"Password \(not shown; empty: none\): ")
    term.sendline("not the password")
    term.expect(r"cannot be used: ")
    term.expect(r"\(again/keep/cancel\) \[again\]: ")
    assert not target.exists()
    term.sendline("")  # again
    term.expect(r"\(empty: step by step\): ")
    term.sendline(f"ftp://{ftp_server.user}@127.0.0.1:{ftp_server.port}/data")
    term.expect(r"Password \(not shown; empty: none\): ")
    term.sendline(ftp_server.password)
    term.expect(r"The relay answers")
    term.expect(r"Encrypt the files on the relay \(recommended\)\? \[Y/n\]: ")
    term.sendline("n")
    for question in (r"Use the index layout \(index\)\? \[y/N\]: ", r"Synchronisation mode .*: ",
                     r"puller count.*: ", r"\(refresh\) \[10\]: "):
        term.expect(question)
        term.sendline("")
    term.expect(r"Done\.")
    assert _finish(term) == 0, _transcript(term)
    transcript = _transcript(term)
    assert ftp_server.password not in transcript
    assert load_config(str(target)).client("lab").index is False  # the default: no

    client = load_config(str(target)).client("lab")
    assert (client.relay.protocol, client.relay.host, client.relay.port) == ("ftp", "127.0.0.1", ftp_server.port)
    assert client.relay.password == ftp_server.password and client.relay.directory == "/data"
    # the secret file of the refused attempt was replaced; no temporary copy is left
    assert sorted(p.name for p in target.parent.iterdir()) == ["escale.conf", "lab.secret"]


def test_cancel_after_a_refused_relay_writes_nothing(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    target = tmp_path / "conf" / "escale.conf"
    term = _escale("-i", "-c", str(target))
    term.expect(r"Local folder to synchronise: ")
    term.sendline(str(tmp_path / "work"))
    term.expect(r"\[work\]: ")
    term.sendline("")
    term.expect(r"\(empty: step by step\): ")
    term.sendline("")  # step by step
    term.expect(r"Protocol .*: ")
    term.sendline("ftp")
    term.expect(r"Server host name or address: ")
    term.sendline("ftp//127.0.0.1")
    term.expect(r"a host name or address only")
    term.expect(r"Server host name or address: ")
    term.sendline("127.0.0.1")
    term.expect(r"Port .*: ")
    term.sendline(str(port))
    term.expect(r"User name \(empty: none\): ")
    term.sendline("someone")
    term.expect(r"Folder on the server .*: ")
    term.sendline("")
    term.expect(r"User name on the relay|Password \(not shown; empty: none\): ")
    term.sendline("secret")
    term.expect(r"cannot be used: ")
    term.expect(r"\(again/keep/cancel\) \[again\]: ")
    term.sendline("cancel")
    assert _finish(term) == 64, _transcript(term)
    assert "was not changed" in _transcript(term)
    assert not target.exists() and list(target.parent.iterdir()) == []  # no section, no secret file


def test_setup_offers_the_index_layout(tmp_path: Path) -> None:
    local = tmp_path / "Photos"
    relay = tmp_path / "relay"
    target = tmp_path / "conf" / "escale.conf"
    term = _escale("-i", "-c", str(target))
    term.expect(r"Local folder to synchronise: ")
    term.sendline(str(local))
    term.expect(r"\[Photos\]: ")
    term.sendline("")
    term.expect(r"\(empty: step by step\): ")
    term.sendline(f"file://{relay}")
    term.expect(r"Encrypt the files on the relay \(recommended\)\? \[Y/n\]: ")
    term.sendline("n")
    term.expect(r"The index layout packs many small files into a few relay requests")
    term.expect(r"Use the index layout \(index\)\? \[y/N\]: ")
    term.sendline("maybe")
    term.expect(r"please answer y or n")
    term.expect(r"Use the index layout \(index\)\? \[y/N\]: ")
    term.sendline("y")
    for question in (r"Synchronisation mode .*: ", r"puller count.*: ", r"\(refresh\) \[10\]: "):
        term.expect(question)
        term.sendline("")
    term.expect(r"Done\.")
    assert _finish(term) == 0, _transcript(term)
    assert "index = yes" in target.read_text()
    assert load_config(str(target)).client("Photos").index is True
