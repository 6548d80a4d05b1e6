"""Per-file delivery status (``escalectl status --files``), the hook, and the
handoff keys' configuration rules, with real ``escale --once`` processes."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

from escale.sync.labels import conflict_label
from tests.e2e.cluster import Cluster, write


def files(cluster: Cluster, client: str) -> dict[str, dict[str, Any]]:
    answer = json.loads(cluster.ctl("status", "--files", client, "--json", check=True).stdout)
    [entry] = answer["clients"]
    assert entry["name"] == client
    return {f["path"]: f for f in entry["files"]}


def script(cluster: Cluster, name: str, body: str) -> str:
    path = os.path.join(cluster.base, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("#!/bin/sh\n" + body)
    os.chmod(path, stat.S_IRWXU)
    return path


def log_text(cluster: Cluster) -> str:
    with open(os.path.join(cluster.base, "escale.log"), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def test_status_files_shows_pending_sent_delivered(file_cluster: Cluster) -> None:
    up = file_cluster.add("up", mode="upload", disk_quota="3KB")
    file_cluster.add("down", mode="download")
    file_cluster.run("down")
    write(up, "small.txt", b"s" * 100)
    write(up, "big.bin", b"b" * 5000)  # above the relay's quota: waits
    file_cluster.run("up")
    status = files(file_cluster, "up")
    assert status["small.txt"]["state"] == "sent" and status["small.txt"]["sent_at"]
    assert status["big.bin"]["state"] == "pending" and status["big.bin"]["sent_at"] is None
    file_cluster.run("down")
    file_cluster.run("up")  # reads the acknowledgement
    status = files(file_cluster, "up")
    assert status["small.txt"]["state"] == "delivered"
    assert status["small.txt"]["receivers"] == ["down"]
    assert status["small.txt"]["delivered_at"] >= status["small.txt"]["sent_at"]
    received = files(file_cluster, "down")
    # named as the sender names itself in what it pushes: its label and host
    assert received["small.txt"]["state"] == "received"
    assert received["small.txt"]["receivers"] == [conflict_label("up")]
    # the human table, without a daemon
    table = file_cluster.ctl("status", "--files", check=True).stdout
    lines = [line.split() for line in table.splitlines()]
    assert ["up", "small.txt", "delivered"] in [line[:3] for line in lines]
    assert ["up", "big.bin", "pending"] in [line[:3] for line in lines]
    assert ["down", "small.txt", "received"] in [line[:3] for line in lines]


def test_hook_runs_after_each_delivered_and_received_file(file_cluster: Cluster) -> None:
    record = os.path.join(file_cluster.base, "hook.log")
    hook = script(file_cluster, "hook.sh", f'echo "$1 $2 $ESCALE_CLIENT $ESCALE_PATH" >> {record}\n'
                                           'echo "hook says hello"\n')
    up = file_cluster.add("up", mode="upload", hook=hook)
    down = file_cluster.add("down", mode="download", hook=hook)
    file_cluster.run("down")
    write(up, "dir/a.txt", b"a\n")
    file_cluster.run("up")
    file_cluster.run("down")
    file_cluster.run("up")
    with open(record, encoding="utf-8") as handle:
        calls = handle.read().splitlines()
    assert calls == [f"received {os.path.join(down, 'dir', 'a.txt')} down dir/a.txt",
                     f"delivered {os.path.join(up, 'dir', 'a.txt')} up dir/a.txt"]
    assert "hook says hello" in log_text(file_cluster)


def test_failing_or_hanging_hook_is_logged_and_the_pass_succeeds(file_cluster: Cluster) -> None:
    failing = script(file_cluster, "fail.sh", "echo broken >&2\nexit 3\n")
    hanging = script(file_cluster, "hang.sh", "exec sleep 600\n")
    up = file_cluster.add("up", mode="upload", hook=failing)
    down = file_cluster.add("down", mode="download", hook=hanging, hook_timeout="1")
    file_cluster.run("down")
    write(up, "a.txt", b"a\n")
    write(up, "b.txt", b"b\n")
    file_cluster.run("up")
    file_cluster.run("down")  # check=True: exit 0 although the hook was killed
    file_cluster.run("up")
    with open(os.path.join(down, "a.txt"), "rb") as handle:
        assert handle.read() == b"a\n"
    text = log_text(file_cluster)
    assert "failed with exit status 3" in text and "broken" in text
    assert "killed after 1 s (hook timeout)" in text
    assert files(file_cluster, "up")["a.txt"]["state"] == "delivered"


def test_handoff_keys_outside_upload_mode_are_refused(file_cluster: Cluster) -> None:
    file_cluster.add("a", mode="shared", after_delivery="delete")
    result = file_cluster.run("a", check=False)
    assert result.returncode == 78
    assert "after delivery" in result.stderr and "needs mode upload" in result.stderr


def test_handoff_move_needs_a_holding_folder_outside_the_local_folder(file_cluster: Cluster) -> None:
    local = file_cluster.add("a", mode="upload", after_delivery="move")
    result = file_cluster.run("a", check=False)
    assert result.returncode == 78 and "holding folder" in result.stderr
    file_cluster.clients["a"]["holding folder"] = os.path.join(local, "held")
    file_cluster._write()
    result = file_cluster.run("a", check=False)
    assert result.returncode == 78 and "overlap" in result.stderr
