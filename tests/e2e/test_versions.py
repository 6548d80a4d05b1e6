"""Versions kept: a file a pull replaces or deletes is kept, listed and restored
through ``escalectl versions``, with real ``escale --once`` processes."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.e2e.cluster import Cluster, write


def versions(cluster: Cluster, path: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(cluster.ctl("versions", path, "--json", check=True).stdout)["versions"]
    return listed


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def test_replaced_and_deleted_files_are_kept_and_restored(file_cluster: Cluster) -> None:
    a = file_cluster.add("a")
    b = file_cluster.add("b")
    write(a, "docs/report.txt", b"first draft\n")
    write(a, "other.txt", b"stays\n")  # a folder left empty would look unmounted (mass-deletion guard)
    file_cluster.sync_all()
    target = os.path.join(b, "docs", "report.txt")
    assert read(target) == b"first draft\n"
    assert versions(file_cluster, target) == []

    write(a, "docs/report.txt", b"second draft, longer\n")
    file_cluster.run("a")
    file_cluster.run("b")
    assert read(target) == b"second draft, longer\n"
    kept = versions(file_cluster, target)
    assert [(v["number"], v["reason"], v["size"]) for v in kept] == [(1, "replaced", len(b"first draft\n"))]

    os.remove(os.path.join(a, "docs", "report.txt"))
    file_cluster.run("a")
    file_cluster.run("b")
    assert not os.path.exists(target)
    kept = versions(file_cluster, target)
    assert [v["reason"] for v in kept] == ["deleted", "replaced"]

    # the human listing names the client, the path and each version
    listing = file_cluster.ctl("versions", target, check=True).stdout
    assert "[b] docs/report.txt" in listing and "deleted" in listing and "replaced" in listing

    # restore the oldest: the file comes back here, then travels to a
    done = file_cluster.ctl("versions", target, "--restore", "2", check=True)
    assert "restored version 2" in done.stdout
    assert read(target) == b"first draft\n"
    file_cluster.run("b")
    file_cluster.run("a")
    assert read(os.path.join(a, "docs", "report.txt")) == b"first draft\n"

    # restoring over an existing file keeps that file as a version first
    file_cluster.ctl("versions", target, "--restore", "1", check=True)  # newest is still the deleted second draft
    assert read(target) == b"second draft, longer\n"
    kept = versions(file_cluster, target)
    assert kept[0]["reason"] == "before-restore"
    assert read(os.path.join(file_cluster.path("b"), ".escale", "b", "versions", kept[0]["name"])) == \
        b"first draft\n"


def test_versions_usage_errors(file_cluster: Cluster) -> None:
    a = file_cluster.add("a")
    outside = file_cluster.ctl("versions", os.path.join(file_cluster.base, "elsewhere.txt"))
    assert outside.returncode == 64 and "not inside the local folder" in outside.stderr
    missing = file_cluster.ctl("versions", os.path.join(a, "x.txt"), "--restore", "1")
    assert missing.returncode == 64 and "no kept version" in missing.stderr


def test_keep_versions_no_keeps_nothing(file_cluster: Cluster) -> None:
    a = file_cluster.add("a")
    b = file_cluster.add("b", keep_versions="no")
    write(a, "f.txt", b"one\n")
    file_cluster.sync_all()
    write(a, "f.txt", b"two, longer\n")
    file_cluster.run("a")
    file_cluster.run("b")
    assert read(os.path.join(b, "f.txt")) == b"two, longer\n"
    assert versions(file_cluster, os.path.join(b, "f.txt")) == []
