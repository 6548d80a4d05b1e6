"""Search order without -c: XDG config folder, ~/.escale, /etc (injectable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escale.config import default_search_paths, find_config, load_config
from escale.errors import ConfigError
from tests.config.helpers import section_text


def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


def test_default_search_paths_follow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(tmp_path, monkeypatch)
    assert default_search_paths() == [
        str(home / ".config" / "escale" / "escale.conf"),
        str(home / ".escale" / "escale.conf"),
        "/etc/escale.conf",
    ]


def test_xdg_config_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(tmp_path, monkeypatch)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_search_paths()[0] == str(tmp_path / "xdg" / "escale" / "escale.conf")
    for invalid in ("", "relative/dir"):  # the XDG spec says: ignore these
        monkeypatch.setenv("XDG_CONFIG_HOME", invalid)
        assert default_search_paths()[0] == str(home / ".config" / "escale" / "escale.conf")


def test_first_existing_file_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _home(tmp_path, monkeypatch)
    system = tmp_path / "etc" / "escale.conf"
    xdg, legacy, _ = default_search_paths()
    search = [xdg, legacy, str(system)]
    with pytest.raises(ConfigError) as info:
        find_config(search)
    message = str(info.value)
    assert "escale -i" in message and "-c FILE" in message and xdg in message and str(system) in message
    assert info.value.exit_code == 78
    for path in (system, Path(legacy), Path(xdg)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(section_text({}, name=path.parent.name))
        assert find_config(search) == str(path)
    assert load_config(None, search_paths=search).clients[0].name == "escale"
    os.unlink(xdg)
    assert load_config(None, search_paths=search).clients[0].name == ".escale"


def test_a_folder_is_not_a_configuration_file(tmp_path: Path) -> None:
    (tmp_path / "escale.conf").mkdir()
    with pytest.raises(ConfigError):
        find_config([str(tmp_path / "escale.conf")])


def test_load_config_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(tmp_path, monkeypatch)
    (home / "my.conf").write_text(section_text({}))
    config = load_config("~/my.conf")
    assert config.path == str(home / "my.conf")
    assert config.clients[0].local_path == str(home / "local")
