"""write_client_section: atomic, 0600 for new files, refuses to overwrite a section."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from escale.config import load_config, write_client_section
from escale.errors import ConfigError

SECTION = {"local path": "docs", "protocol": "file", "relay dir": "relay"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_is_created_private_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "escale" / "escale.conf"
    write_client_section(str(path), "docs", {**SECTION, "password": "s3cret"})
    assert _mode(path) == 0o600
    config = load_config(str(path))
    assert [c.name for c in config.clients] == ["docs"]
    assert config.clients[0].local_path == str(path.parent / "docs")
    assert os.listdir(path.parent) == ["escale.conf"]  # no temporary file left


def test_append_keeps_existing_content_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "escale.conf"
    original = "# my settings\nlog level = DEBUG\n\n[first]\npath = a\nprotocol = file\ndir = ra\n# end"
    path.write_text(original)
    path.chmod(0o640)
    write_client_section(str(path), "second", {"path": "b", "protocol": "file", "dir": "rb"})
    text = path.read_text()
    assert text.startswith(original + "\n\n[second]\n")
    assert _mode(path) == 0o640
    config = load_config(str(path))
    assert [c.name for c in config.clients] == ["first", "second"]
    assert config.globals.log_level == "DEBUG"


def test_existing_section_is_refused_and_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "escale.conf"
    write_client_section(str(path), "docs", SECTION)
    before = path.read_bytes()
    with pytest.raises(ConfigError) as info:
        write_client_section(str(path), "DOCS", {**SECTION, "refresh": "5"})
    assert "already exists" in str(info.value) and str(path) in str(info.value)
    assert info.value.exit_code == 78
    assert path.read_bytes() == before


def test_replace_rewrites_the_section_in_place(tmp_path: Path) -> None:
    path = tmp_path / "escale.conf"
    path.write_text("[a]\npath = a\nprotocol = file\ndir = ra\nrefresh = 3\n# about b\n"
                    "[b]\npath = b\nprotocol = file\ndir = rb\n")
    write_client_section(str(path), "a", {"path": "a2", "protocol": "file", "dir": "ra2"}, replace=True)
    config = load_config(str(path))
    a, b = config.clients
    assert (a.name, a.local_path, a.refresh) == ("a", str(tmp_path / "a2"), 10.0)
    assert b.local_path == str(tmp_path / "b")
    assert "# about b\n[b]" in path.read_text()


def test_readers_see_the_old_or_the_new_file_never_a_mix(tmp_path: Path) -> None:
    path = tmp_path / "escale.conf"
    write_client_section(str(path), "a", SECTION)
    with open(path, encoding="utf-8") as old_reader:
        write_client_section(str(path), "b", {**SECTION, "local path": "other", "relay dir": "relay2"})
        # The old file was replaced by a rename, not rewritten in place.
        assert "[b]" not in old_reader.read()
    assert "[b]" in path.read_text()


def test_symlinked_configuration_is_updated_behind_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.conf"
    write_client_section(str(real), "a", SECTION)
    link = tmp_path / "link.conf"
    link.symlink_to(real)
    write_client_section(str(link), "b", {**SECTION, "local path": "other", "relay dir": "relay2"})
    assert link.is_symlink() and "[b]" in real.read_text()


@pytest.mark.parametrize(
    ("name", "values", "fragment"),
    [
        ("docs", {"refrsh": "3"}, "did you mean 'refresh'"),
        ("docs", {"log file": "x"}, "global-only"),
        ("docs", {"password": "two\nlines"}, "line break"),
        ("a/b", SECTION, "'/'"),
        ("", SECTION, "empty"),
        ("docs", {"path": "a", "local path": "b"}, "duplicate key"),
    ],
)
def test_bad_input_is_refused_before_writing(tmp_path: Path, name: str, values: dict[str, str],
                                             fragment: str) -> None:
    path = tmp_path / "escale.conf"
    path.write_text("log level = INFO\n")
    with pytest.raises(ConfigError) as info:
        write_client_section(str(path), name, values)
    assert fragment in str(info.value) and "two" not in str(info.value)
    assert path.read_text() == "log level = INFO\n"
    assert os.listdir(tmp_path) == ["escale.conf"]
