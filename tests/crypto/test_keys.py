"""Key files and secrets: created private, never overwritten, never shown or logged."""

from __future__ import annotations

import base64
import io
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest

from escale.crypto import create_repository_header, generate_key_file, load_secret, open_repository_header
from escale.errors import KeyFileError, WrongKeyError
from tests.crypto.conftest import CHEAP_KDF

PASSPHRASE = "Tr0ub4dor&3-very-secret"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_key_file_is_private_and_loadable(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "escale.key"
    generate_key_file(str(path))
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700
    text = path.read_text()
    assert text.startswith("escale-key-1:") and text.endswith("\n") and text.count("\n") == 1
    assert load_secret(str(path), None).kind == "key"
    assert [p.name for p in path.parent.iterdir()] == ["escale.key"]  # no temporary left


def test_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "escale.key"
    path.write_text("my precious passphrase\n")
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_file(str(path))
    assert path.read_text() == "my precious passphrase\n"
    assert [p.name for p in tmp_path.iterdir()] == ["escale.key"]


def test_two_generated_keys_differ(tmp_path: Path) -> None:
    generate_key_file(str(tmp_path / "a"))
    generate_key_file(str(tmp_path / "b"))
    assert (tmp_path / "a").read_text() != (tmp_path / "b").read_text()


def test_missing_and_malformed_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"not found: .*nope"):
        load_secret(str(tmp_path / "nope"), None)
    bad = tmp_path / "bad.key"
    bad.write_text("escale-key-1:c2VjcmV0\n")  # base64 of 6 bytes
    bad.chmod(0o600)
    with pytest.raises(KeyFileError) as info:
        load_secret(str(bad), None)
    assert str(bad) in str(info.value) and "c2VjcmV0" not in str(info.value)
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(KeyFileError, match="empty"):
        load_secret(str(empty), None)
    with pytest.raises(KeyFileError, match="key file or a passphrase"):
        load_secret(None, None)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_secret(str(tmp_path), None)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_secret(str(tmp_path / "fifo"), None)  # and does not block


def test_passphrase_file_is_stripped_of_its_newline(tmp_path: Path) -> None:
    header, _ = create_repository_header("aes-256-gcm", load_secret(None, PASSPHRASE), kdf=CHEAP_KDF)
    for ending in ("\n", "\r\n", ""):
        path = tmp_path / f"pass{len(ending)}"
        path.write_text(PASSPHRASE + ending, newline="")
        path.chmod(0o600)
        open_repository_header(header, load_secret(str(path), None), relay="r")
    # inner and leading spaces are part of the passphrase
    path = tmp_path / "spaced"
    path.write_text(" " + PASSPHRASE + "\n")
    path.chmod(0o600)
    with pytest.raises(WrongKeyError):
        open_repository_header(header, load_secret(str(path), None), relay="r")


def test_group_readable_key_file_warns_without_the_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "shared.key"
    path.write_text(PASSPHRASE + "\n")
    path.chmod(0o640)
    with caplog.at_level(logging.DEBUG, logger="escale"):
        load_secret(str(path), None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage() and "0640" in warnings[0].getMessage()
    assert PASSPHRASE not in caplog.text


def test_private_key_file_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "private.key"
    generate_key_file(str(path))
    with caplog.at_level(logging.WARNING, logger="escale"):
        load_secret(str(path), None)
    assert not caplog.records


def test_secret_is_not_in_repr_or_pickle(tmp_path: Path) -> None:
    secret = load_secret(None, PASSPHRASE)
    assert PASSPHRASE not in repr(secret) and PASSPHRASE not in str(secret)
    assert "passphrase" in repr(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    path = tmp_path / "k"
    generate_key_file(str(path))
    encoded = path.read_text().strip().split(":", 1)[1]
    key = load_secret(str(path), None)
    assert encoded not in repr(key)
    _, env = create_repository_header("aes-256-gcm", key)
    assert encoded not in repr(env)


def test_no_secret_in_debug_logs_or_errors(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A DEBUG capture of every operation holds neither the key nor the passphrase."""
    key_path = tmp_path / "escale.key"
    pass_path = tmp_path / "pass.txt"
    pass_path.write_text(PASSPHRASE + "\n")
    pass_path.chmod(0o644)  # also exercises the warning path
    messages = []
    with caplog.at_level(logging.DEBUG):
        generate_key_file(str(key_path))
        key = load_secret(str(key_path), None)
        phrase = load_secret(str(pass_path), None)
        for secret, kdf in ((key, None), (phrase, CHEAP_KDF)):
            for algorithm in ("aes-256-gcm", "fernet", "blowfish"):
                header, env = create_repository_header(algorithm, secret, kdf=kdf)
                env = open_repository_header(header, secret, relay="r")
                sealed = env.seal("obj", b"hello")
                env.open("obj", sealed)
                env.open_stream("obj", io.BytesIO(sealed), io.BytesIO())
                for wrong in (load_secret(None, PASSPHRASE + "x"), load_secret(None, "y")):
                    try:
                        open_repository_header(header, wrong, relay="r")
                    except WrongKeyError as exc:
                        messages.append(str(exc))
    encoded = key_path.read_text().strip().split(":", 1)[1]
    raw_hex = base64.b64decode(encoded).hex()
    assert caplog.records  # something was logged at DEBUG
    for text in [caplog.text, *messages]:
        assert PASSPHRASE not in text
        assert encoded not in text and raw_hex not in text
