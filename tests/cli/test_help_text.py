"""``--help`` is plain text: no reStructuredText markup reaches the terminal."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from escale.cli import ctl, main
from escale.cli.plaintext import plain_text

#: What reStructuredText markup looks like once printed.
MARKUP = re.compile(r"``|`[^`\s][^`]*`_?|:(func|class|data|meth|mod|doc|ref|attr):|\*\*\S")


def _helps() -> dict[str, str]:
    """The help of ``escale``, ``escalectl`` and every ``escalectl`` command, by command line."""
    out = {"escale": main.build_parser().format_help()}
    parser = ctl.build_parser()
    out["escalectl"] = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[f"escalectl {name}"] = sub.format_help()
    return out


def test_no_help_shows_markup() -> None:
    helps = _helps()
    assert len(helps) > 10
    for command, text in helps.items():
        found = MARKUP.search(text)
        assert found is None, f"{command} --help shows {found[0]!r}:\n{text}"


@pytest.mark.parametrize("command", ["stop", "leases", "status"])
def test_the_printed_help_is_plain(command: str) -> None:
    shown = subprocess.run([sys.executable, "-m", "escale.cli.ctl", command, "--help"], capture_output=True,
                           text=True, timeout=60, check=True).stdout
    assert "``" not in shown and f"'escalectl {command}" in shown


def test_markup_is_removed_and_other_stars_kept() -> None:
    text = ("``escale -i``: *one* **two** :func:`~escale.ops.fix.fix_client` :doc:`the guide <guide>` "
            "`Modes`_ files *.txt and *.csv, 2 * 3\nExample::\n\n    escale --once\n")
    assert plain_text(text) == ("'escale -i': one two fix_client the guide Modes files *.txt and *.csv, 2 * 3\n"
                                "Example:\n\n    escale --once\n")
    assert plain_text("see ``escalectl stop\nCLIENT``") == "see 'escalectl stop\nCLIENT'"
