"""The progress bar: drawn on a terminal, silent in pipes and logs."""

from __future__ import annotations

import io
import os

from escale.cli.progress import Progress, human_size


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(10, "backup", stream=stream) as bar:
        for _ in range(10):
            bar.advance()
    assert stream.getvalue() == ""
    assert bar.done == 10


def test_drawn_on_a_terminal() -> None:
    stream = FakeTty()
    with Progress(4, "backup", stream=stream) as bar:
        bar.advance(2)
        bar.close()  # final state drawn, line ended
    text = stream.getvalue()
    assert text.endswith("\n")
    last = text.rstrip("\n").split("\r")[-1]
    assert last == "\033[K" + "backup [" + "#" * 15 + "-" * 15 + "]  50% 2/4"


def test_real_pty_and_bytes() -> None:
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as stream:
            with Progress(2_000_000, "restore", unit="bytes", stream=stream) as bar:
                bar.advance(1_500_000)
        output = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    assert "restore [" in output and "75% 1.5 MB/2.0 MB" in output


def test_unknown_total() -> None:
    stream = FakeTty()
    with Progress(None, "scan", stream=stream) as bar:
        bar.advance(7)
    assert stream.getvalue().rstrip("\n").split("\r")[-1] == "\033[Kscan 7"


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 1_234_567, 5 * 10**12)] == [
        "0 B", "999 B", "1.0 kB", "1.2 MB", "5.0 TB"]
