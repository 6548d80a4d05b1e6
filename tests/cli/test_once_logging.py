"""``escale --once`` without ``-v`` or ``log file``: the records that no
handler would take are not made at all (a pass logs a line per file)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from escale.cli.main import _run_once, build_parser
from escale.config import load_config


@pytest.fixture
def made_records() -> Iterator[list[logging.LogRecord]]:
    """Every log record made while the test runs (the root logger's
    handlers and level are put back afterwards)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    made: list[logging.LogRecord] = []

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        made.append(record)
        return record

    logging.setLogRecordFactory(counting)
    try:
        yield made
    finally:
        logging.setLogRecordFactory(factory)
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def _config(tmp_path: Path) -> str:
    sections = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        sections.append(f"[{name}]\nlocal path = {tmp_path / name}\nprotocol = file\n"
                        f"relay directory = {tmp_path / 'relay'}\nencryption = no\n")
    path = tmp_path / "escale.conf"
    path.write_text("\n".join(sections), encoding="utf-8")
    return str(path)


def _once(config: str, *flags: str) -> int:
    args = build_parser().parse_args(["--once", "-c", config, *flags])
    return _run_once(load_config(config), args)


def test_a_quiet_once_makes_no_info_records(tmp_path: Path, made_records: list[logging.LogRecord]) -> None:
    config = _config(tmp_path)
    for i in range(5):
        (tmp_path / "a" / f"f{i}.txt").write_text(str(i))
    assert _once(config) == 0
    assert (tmp_path / "b" / "f4.txt").read_text() == "4"
    assert [r.getMessage() for r in made_records if r.levelno < logging.WARNING] == []
    (tmp_path / "b" / "back.txt").write_text("back")
    assert _once(config, "-v") == 0  # -v: each file sent has its INFO line
    assert any("back.txt" in r.getMessage() and r.levelno == logging.INFO for r in made_records)
