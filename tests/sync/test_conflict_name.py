"""Conflict-copy names always fit a file name, stay deterministic and distinct.

A 255-byte name edited on both sides must give a copy that can be created
(most filesystems refuse a component over 255 bytes); otherwise every pass
fails on the same conflict and the clients never converge.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from escale.sync.planner import NAME_MAX, conflict_name

# a file name: any character but "/" and NUL, no lone surrogate, 1..255 bytes
_NAME = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"), min_size=1,
                max_size=255).filter(lambda n: len(n.encode()) <= NAME_MAX and n not in (".", ".."))
_LABEL = st.text(max_size=300)
_ID = st.text(st.characters(blacklist_categories=["Cs"]), max_size=80)


def _last(path: str) -> str:
    return path.rpartition("/")[2]


@settings(max_examples=400, deadline=None)
@given(folder=st.sampled_from(["", "d", "a/b"]), name=_NAME, label=_LABEL, one=_ID, two=_ID)
def test_fits_is_deterministic_and_distinct(folder: str, name: str, label: str, one: str, two: str) -> None:
    path = f"{folder}/{name}" if folder else name
    copy = conflict_name(path, label, one)
    assert len(_last(copy).encode()) <= NAME_MAX
    assert copy.rpartition("/")[0] == folder  # same folder
    assert "/" not in _last(copy) and "\x00" not in copy
    assert copy == conflict_name(path, label, one)
    assert _last(copy) != name
    if one != two:
        assert copy != conflict_name(path, label, two)


def test_long_name_keeps_extension_and_marker() -> None:
    name = "é" * 124 + "ab.docx"  # 248 + 7 bytes
    assert len(name.encode()) == 255
    copy = conflict_name(f"dir/{name}", "laptop", "sha256:abc")
    assert re.fullmatch(r"dir/é+\.conflict-laptop-[0-9a-f]{8}\.docx", copy)
    assert len(_last(copy).encode()) <= NAME_MAX


def test_absurd_extension_and_label_are_cut() -> None:
    copy = conflict_name("n." + "e" * 250, "L" * 300, "id")
    assert len(copy.encode()) <= NAME_MAX
    assert copy.startswith("n.conflict-" + "L" * 64 + "-")


def test_short_names_unchanged() -> None:
    assert conflict_name("d/report.csv", "laptop", "c").startswith("d/report.conflict-laptop-")
    assert conflict_name("d/report.csv", "laptop", "c").endswith(".csv")
