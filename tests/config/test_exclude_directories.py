"""``exclude directories``: a folder name excludes that folder at any depth; a
path with ``/`` excludes that path from the root. Checked on a real folder
scanned as a pass scans it."""

from __future__ import annotations

from pathlib import Path

from escale.sync.scanner import scan
from tests.config.helpers import client

TREE = (
    "keep.txt",
    "cache/top.txt",
    "docs/cache/deep.txt",
    "docs/cache/older/deeper.txt",
    "a/b/cache/c/deepest.txt",
    "docs/cached/kept.txt",
    "docs/tmp/x.txt",
    "src/docs/tmp/kept.txt",
    "build-1/out.o",
    "src/build-22/out.o",
)


def _synced(tmp_path: Path, patterns: str) -> set[str]:
    settings = client(tmp_path, {"exclude directories": patterns})
    root = Path(settings.local_path)
    for rel in TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    return set(scan(str(root), settings.filters, checksum=None, db=None).files)


def test_a_name_excludes_that_folder_at_every_depth(tmp_path: Path) -> None:
    files = _synced(tmp_path, "cache")
    assert files == set(TREE) - {"cache/top.txt", "docs/cache/deep.txt", "docs/cache/older/deeper.txt",
                                 "a/b/cache/c/deepest.txt"}


def test_a_path_excludes_from_the_root_only(tmp_path: Path) -> None:
    files = _synced(tmp_path, "docs/tmp")
    assert files == set(TREE) - {"docs/tmp/x.txt"}


def test_wildcards_and_regular_expressions_match_names_too(tmp_path: Path) -> None:
    files = _synced(tmp_path, "build-*, /ca(che)?/")
    assert files == {"keep.txt", "docs/cached/kept.txt", "docs/tmp/x.txt", "src/docs/tmp/kept.txt"}


def test_the_filter_answers_like_the_scan(tmp_path: Path) -> None:
    filters = client(tmp_path, {"exclude directories": "cache"}).filters
    assert filters.excludes_dir("docs/cache") and filters.excludes_dir("cache/x")
    assert not filters.excludes_dir("docs/cached") and not filters.accepts_file("docs/cache/f.txt")
    assert filters.accepts_file("docs/cached/f.txt")
