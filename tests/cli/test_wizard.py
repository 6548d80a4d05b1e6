"""escale -i: the interactive setup, driven through a pseudo-terminal on a real process."""

from __future__ import annotations

import os
import socket
import stat
import sys
from pathlib import Path

from escale.config import load_config
from escale.crypto.keys import load_secret
from tests.cli.terminal import Terminal


def _escale(*args: str) -> Terminal:
    return Terminal([sys.executable, "-m", "escale.cli.main", *args])


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_setup_with_a_file_relay_and_a_new_key(tmp_path: Path) -> None:
    local = tmp_path / "Documents"
    relay = tmp_path / "relay"
    term = _escale("-i")
    term.expect(r"Local folder to synchronise: ")
    term.send(str(local))
    term.expect(r"Name of this client \(the configuration section\) \[Documents\]: ")
    term.send("laptop")
    term.expect(r"\(empty: step by step\): ")
    term.send(f"file://{relay}")
    term.expect(r"Encrypt the files on the relay \(recommended\)\? \[Y/n\]: ")
    term.send("")
    term.expect(r"Existing key file \(empty: generate a new key\): ")
    term.send("")
    key_line = term.expect(r"generated a new key in \S+ \(mode 0600\)")
    term.expect(r"Every other client of this relay needs a copy of this key file")
    term.expect(r"Synchronisation mode \(shared/upload/download/conservative\) \[shared\]: ")
    term.send("sideways")
    term.expect(r"choose one of: shared, upload, download, conservative")
    term.expect(r"Synchronisation mode .*: ")
    term.send("upload")
    term.expect(r"puller count; empty: every registered client\): ")
    term.send("two")
    term.expect(r"puller count; empty: every registered client\): ")
    term.send("2")
    term.expect(r"Seconds between two passes \(refresh\) \[10\]: ")
    term.send("0.5")
    term.expect(r"\(index\)\? \[y/N\]: ")
    term.send("")
    term.expect(r"The relay answers")
    assert term.finish() == 0, term.transcript

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
    term.send(str(tmp_path / "work"))
    term.expect(r"\[work\]: ")
    term.send("")
    term.expect(r"\(empty: step by step\): ")
    term.send(f"ftp://syncer:secret@127.0.0.1:{port}/repo")  # a password in an address is refused
    term.expect(r"holds a password")
    term.expect(r"\(empty: step by step\): ")
    term.send(f"ftp://syncer@127.0.0.1:{port}/repo")
    term.expect(r"Password \(not shown; empty: none\): ")
    term.send("pa:ss word")
    term.expect(r"credentials written to \S+ \(mode 0600\)")
    term.expect(r"Encrypt the files on the relay \(recommended\)\? \[Y/n\]: ")
    term.send("n")
    term.expect(r"Synchronisation mode .*: ")
    term.send("")
    term.expect(r"puller count.*: ")
    term.send("")
    term.expect(r"\(refresh\) \[10\]: ")
    term.send("")
    term.expect(r"\(index\)\? \[y/N\]: ")
    term.send("y")
    term.expect(r"does not answer")
    term.expect(r"The configuration is kept in")
    assert term.finish() == 69, term.transcript
    assert "pa:ss word" not in term.transcript  # never echoed nor printed

    client = load_config(target).client("work")
    assert (client.relay.protocol, client.relay.host, client.relay.port) == ("ftp", "127.0.0.1", port)
    assert client.relay.username == "syncer" and client.relay.password == "pa:ss word"
    assert client.relay.directory == "/repo" and client.index is True and client.encryption is None
    secret = os.path.join(os.path.dirname(target), "work.secret")
    assert _mode(secret) == 0o600
    with open(target) as handle:
        text = handle.read()
    assert "pa:ss word" not in text and f"secret file = {secret}" in text


def test_end_of_input_cancels_without_writing(tmp_path: Path) -> None:
    target = tmp_path / "escale.conf"
    term = _escale("-i", "-c", str(target))
    term.expect(r"Local folder to synchronise: ")
    term.send_eof()
    assert term.finish() == 64
    assert "setup cancelled" in term.transcript
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
    term.send("n")
    term.expect(r"kept \[two\]")
    term.expect(r"Not imported \(global settings of \S+\): log file")
    term.expect(r"Imported \[one\] into")
    assert term.finish() == 0, term.transcript
    config = load_config(str(target))
    assert [c.name for c in config.clients] == ["two", "one"]
    one = config.client("one")
    assert one.local_path == str(source_dir / "one") and one.relay.directory == str(source_dir / "relay")
    assert one.refresh == 0.5
    two = config.client("two")
    assert two.local_path == str(tmp_path / "mine") and two.mode == "shared"
    assert config.globals.log_file is None
