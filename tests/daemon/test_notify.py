"""Maintainer notices, sent through a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from escale.config import load_config
from escale.config.settings import ClientSettings
from escale.crypto import generate_key_file
from escale.daemon.notify import Notifier, smtp_address
from tests.daemon.helpers import write_config
from tests.daemon.smtp_sink import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink().start()
    try:
        yield server
    finally:
        server.stop()


def _settings(tmp_path: Path, maintainer: str | None = "ops@example.org") -> tuple[ClientSettings, str]:
    key = str(tmp_path / "k.key")
    generate_key_file(key)
    values = {"local path": "local", "protocol": "ftp", "host address": "127.0.0.1", "port": "2121",
              "username": "syncer", "password": "s3cret-pass", "encryption": "yes", "key": key}
    if maintainer:
        values["maintainer"] = maintainer
    config = load_config(write_config(str(tmp_path), {"work": values}))
    return config.clients[0], open(key).read().strip()


def test_notice_is_sent_once_per_error_and_holds_no_secret(tmp_path: Path, sink: SmtpSink) -> None:
    settings, key_text = _settings(tmp_path)
    notifier = Notifier(config_path="/etc/escale.conf", address=sink.address)
    assert notifier.notify(settings, "relay ftp://syncer@127.0.0.1:2121/ refused the login") is True
    assert notifier.notify(settings, "relay ftp://syncer@127.0.0.1:2121/ refused the login") is False
    assert notifier.notify(settings, "another error") is True
    received = sink.received()
    assert len(received) == 2
    first = received[0]
    assert first.recipients == ["ops@example.org"]
    message = first.message
    assert message["To"] == "ops@example.org"
    assert message["Subject"] == f"escale: client [work] on {socket.gethostname()} stopped on an error"
    body = first.body()
    assert "refused the login" in body and "ftp://syncer@127.0.0.1:2121/" in body
    assert "/etc/escale.conf" in body
    raw = first.data.decode()
    assert "s3cret-pass" not in raw
    assert key_text not in raw and key_text.split(":", 1)[1] not in raw


def test_no_maintainer_no_notice(tmp_path: Path, sink: SmtpSink) -> None:
    settings, _ = _settings(tmp_path, maintainer=None)
    assert Notifier(address=sink.address).notify(settings, "boom") is False
    assert sink.received() == []


def test_unreachable_smtp_server_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings, _ = _settings(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    notifier = Notifier(address=("127.0.0.1", port), timeout=5)
    with caplog.at_level(logging.WARNING):
        assert notifier.notify(settings, "boom") is False
    assert "could not send the notice to ops@example.org" in caplog.text
    # a failed notice is tried again at the next abort
    sink = SmtpSink().start()
    try:
        notifier.address = sink.address
        assert notifier.notify(settings, "boom") is True
    finally:
        sink.stop()


def test_smtp_address_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESCALE_SMTP", raising=False)
    assert smtp_address() == ("localhost", 25)
    monkeypatch.setenv("ESCALE_SMTP", "127.0.0.1:2525")
    assert smtp_address() == ("127.0.0.1", 2525)
    monkeypatch.setenv("ESCALE_SMTP", "nonsense")
    assert smtp_address() == ("localhost", 25)
    assert os.environ["ESCALE_SMTP"] == "nonsense"
