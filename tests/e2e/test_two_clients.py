"""Two or three real ``escale --once`` processes converging through one relay.

Runs over every backend a separate process can reach (file, and each network
server of the conformance suite).
"""

from __future__ import annotations

import os

import pytest

from tests.e2e.cluster import Cluster, tree, write

pytestmark = pytest.mark.timeout(600)


def test_create_modify_delete_nested_converge(cluster: Cluster) -> None:
    a = cluster.add("a")
    b = cluster.add("b")
    write(a, "top.txt", "top from a")
    write(a, "deep/er/nested file.bin", os.urandom(70_000))
    write(a, "ünïcode/名前.txt", "non-ascii path")
    write(b, "from-b/notes.md", "b writes too")
    cluster.sync_all(2)
    assert tree(a) == tree(b)
    assert len(tree(a)) == 4

    write(a, "top.txt", "modified on a")
    os.remove(os.path.join(b, "from-b/notes.md"))
    write(b, "deep/er/second.txt", "added on b")
    cluster.sync_all(2)
    assert tree(a) == tree(b)
    assert "from-b/notes.md" not in tree(a)
    with open(os.path.join(b, "top.txt")) as handle:
        assert handle.read() == "modified on a"


def test_upload_client_never_modified_by_pulls(primary_cluster: Cluster) -> None:
    up = primary_cluster.add("up", mode="upload")
    other = primary_cluster.add("other")
    write(up, "data.csv", "instrument data")
    primary_cluster.sync_all(1)
    before = os.stat(os.path.join(up, "data.csv"))
    write(other, "data.csv", "someone else's edit")
    write(other, "extra.txt", "new file elsewhere")
    primary_cluster.sync_all(2)
    after = os.stat(os.path.join(up, "data.csv"))
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)
    with open(os.path.join(up, "data.csv")) as handle:
        assert handle.read() == "instrument data"
    assert sorted(tree(up)) == ["data.csv"]  # nothing pulled into an upload client
    assert "data.csv" in tree(other)


def test_download_client_never_sends(primary_cluster: Cluster) -> None:
    src = primary_cluster.add("src")
    down = primary_cluster.add("down", mode="download")
    write(src, "a.txt", "from src")
    write(down, "local-only.txt", "must stay here")
    primary_cluster.sync_all(2)
    assert tree(down).keys() == {"a.txt", "local-only.txt"}
    assert "local-only.txt" not in tree(src)
    write(down, "a.txt", "edited in download mode")
    primary_cluster.sync_all(2)
    with open(os.path.join(src, "a.txt")) as handle:
        assert handle.read() == "from src"


def test_conflict_keeps_both_versions(primary_cluster: Cluster) -> None:
    a = primary_cluster.add("a")
    b = primary_cluster.add("b")
    write(a, "shared.txt", "original")
    primary_cluster.sync_all(2)
    write(a, "shared.txt", "edit on a")
    write(b, "shared.txt", "edit on b")
    primary_cluster.sync_all(3)
    assert tree(a) == tree(b)
    contents = set()
    for rel in tree(a):
        with open(os.path.join(a, rel)) as handle:
            contents.add(handle.read())
    assert contents == {"edit on a", "edit on b"}
    assert len(tree(a)) == 2


def _relay_names(cluster: Cluster, folder: str) -> list[str]:
    relay = cluster.target.relay(cluster.folder)
    relay.open()
    try:
        return [e.name for e in relay.list(folder)]
    finally:
        relay.close()


def _relay_payloads(cluster: Cluster) -> list[str]:
    return _relay_names(cluster, "data")


def _relay_placeholders(cluster: Cluster) -> list[str]:
    return _relay_names(cluster, "meta")


def test_three_clients_puller_count_two(primary_cluster: Cluster) -> None:
    a = primary_cluster.add("a", puller_count="2")
    primary_cluster.add("b", puller_count="2")
    primary_cluster.add("c", puller_count="2")
    write(a, "payload.bin", os.urandom(10_000))
    primary_cluster.run("a")
    assert len(_relay_payloads(primary_cluster)) == 1
    primary_cluster.run("b")
    primary_cluster.run("a")
    assert len(_relay_payloads(primary_cluster)) == 1, "reclaimed before the second receiver had it"
    primary_cluster.run("c")
    primary_cluster.run("a")
    assert _relay_payloads(primary_cluster) == []
    assert len(_relay_placeholders(primary_cluster)) == 1, "the placeholder must stay"
    for name in ("b", "c"):
        assert tree(primary_cluster.path(name)) == tree(a)


def test_receivers_known_from_registry(primary_cluster: Cluster) -> None:
    """Without puller count, every registered receiver must acknowledge."""
    a = primary_cluster.add("a")
    primary_cluster.add("b")
    primary_cluster.add("c")
    primary_cluster.add("u", mode="upload")  # registered, but receives nothing
    for name in ("b", "c", "u"):
        primary_cluster.run(name)  # register
    write(a, "f.txt", "x")
    primary_cluster.run("a")
    primary_cluster.run("b")
    primary_cluster.run("a")
    assert len(_relay_payloads(primary_cluster)) == 1
    primary_cluster.run("c")
    primary_cluster.run("a")
    assert _relay_payloads(primary_cluster) == []


def test_second_once_run_on_same_client_waits_or_says_so(file_cluster: Cluster) -> None:
    from escale.sync.client import ClientLock

    a = file_cluster.add("a")
    lock = ClientLock(os.path.join(a, ".escale", "a"), "a")
    lock.acquire()
    try:
        result = file_cluster.run("a", check=False)
    finally:
        lock.release()
    assert result.returncode == 75  # quietly (cron): tests/e2e/test_cron_and_dry_run.py
    assert "already being synced" not in result.stderr
