"""The shipped example loads, and the example and the reference mention every key."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from escale.config import load_config
from escale.config.keys import ALL_KEYS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "escale.conf.example"
REFERENCE = ROOT / "doc" / "configuration.rst"


@pytest.mark.parametrize("document", [EXAMPLE, REFERENCE], ids=["example", "reference"])
def test_every_key_and_alias_is_documented(document: Path) -> None:
    text = " ".join(document.read_text(encoding="utf-8").split())
    missing = [name for key in ALL_KEYS for name in key.names
               if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]
    assert missing == []


def test_the_example_loads(tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])  # an empty folder per test (tests/conftest.py)
    for name, content in [(".ssh/id_ed25519", "k"), (".config/escale/documents.key", "k"),
                          (".escale/ftp.credential", "bob:pw")]:
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text(content)
        (home / name).chmod(0o600)
    config = load_config(str(EXAMPLE))
    names = [c.name for c in config.clients]
    assert names == ["documents", "pictures", "music", "archive"]
    docs, pictures, music, archive = config.clients
    assert (docs.relay.protocol, docs.encryption, docs.disk_quota, docs.refresh) == ("sftp", "aes-256-gcm",
                                                                                     2 * 10**9, 60.0)
    assert docs.key_file == str(home / ".config/escale/documents.key")
    assert (pictures.relay.protocol, pictures.mode) == ("file", "upload")
    assert (music.relay.protocol, music.relay.username, music.relay.port) == ("ftps", "bob", 990)
    assert (archive.relay.protocol, archive.relay.rclone_remote, archive.mode) == ("s3", "my-s3", "download")
