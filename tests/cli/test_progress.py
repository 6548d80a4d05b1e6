"""The progress bar: drawn on a terminal, silent in pipes, logs and under ``--json``."""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import sys
import termios
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import pytest

from escale.cli.ops_progress import progress_for
from escale.cli.progress import Progress, human_size


@contextmanager
def terminal(columns: int = 100) -> Iterator[tuple[TextIO, Callable[[], str]]]:
    """A real pseudo-terminal ``columns`` wide: its writing end, and a function that
    returns (and consumes) what was written to it so far."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))

    def written() -> str:
        chunks = []
        while select.select([master], [], [], 0)[0]:
            chunks.append(os.read(master, 65536))
        return b"".join(chunks).decode()

    try:
        with open(slave, "w", encoding="utf-8", closefd=False) as stream:
            yield stream, written
    finally:
        os.close(master)
        os.close(slave)


def last_line(output: str) -> str:
    """The line a terminal shows last: the text after the final carriage return."""
    return output.replace("\r\n", "\n").rstrip("\n").split("\n")[-1].split("\r")[-1]


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(10, "backup", stream=stream) as bar:
        for _ in range(10):
            bar.advance()
    assert stream.getvalue() == ""
    assert bar.done == 10


def test_drawn_on_a_terminal_and_line_ended() -> None:
    with terminal() as (stream, written):
        with Progress(4, "backup", stream=stream) as bar:
            bar.advance(2)
        output = written()
    assert output.endswith("\n")
    shown = last_line(output)
    assert shown.startswith("backup:  50%|") and " 2/4 " in shown


def test_bytes_are_scaled() -> None:
    with terminal() as (stream, written):
        with Progress(2_000_000, "restore", unit="bytes", stream=stream) as bar:
            bar.advance(1_500_000)
        shown = last_line(written())
    assert shown.startswith("restore:  75%|") and "1.50M/2.00M" in shown


def test_unknown_total_shows_a_counter() -> None:
    with terminal() as (stream, written):
        with Progress(None, "scan", stream=stream) as bar:
            bar.advance(7)
        shown = last_line(written())
    assert shown.startswith("scan: 7 items") and "%" not in shown


def test_total_may_change_while_running() -> None:
    with terminal() as (stream, written):
        with Progress(None, "sync", stream=stream) as bar:
            bar.total = 10
            bar.advance(10)
        shown = last_line(written())
    assert shown.startswith("sync: 100%|") and " 10/10 " in shown


def test_disabled_on_a_terminal_draws_nothing() -> None:
    with terminal() as (stream, written):
        with Progress(3, "backup", stream=stream, enabled=False) as bar:
            bar.advance(3)
        assert written() == ""
    assert bar.done == 3


def test_json_output_draws_no_bar_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    with terminal() as (stream, written):
        monkeypatch.setattr(sys, "stderr", stream)
        with progress_for("backup", json_output=True) as progress:
            progress(0, 2)
            progress(2, 2)
        assert written() == ""
        with progress_for("backup", json_output=False) as progress:
            progress(0, 2)
            progress(2, 2)
        assert last_line(written()).startswith("backup: 100%|")


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 1_234_567, 5 * 10**12)] == [
        "0 B", "999 B", "1.0 kB", "1.2 MB", "5.0 TB"]
