"""Deliberate mass deletions reach the receivers; accidental ones stay held.

Through real ``escale --once`` processes on a folder relay, in both layouts
(placeholder, and ``index = yes``), encrypted and not:

* ``escalectl allow-deletions A`` on the deleting client is enough: A's next
  pass sends the deletions marked deliberate, and B applies them without an
  ``allow-deletions`` of its own;
* the same deletions sent without an allowance (A's guard set to let them
  through) are held by B's guard.

Also: a conservative client's copy of a relay version it may not apply is
named after the pusher's label *and host*, as conflict copies are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from escale.crypto import generate_key_file
from escale.sync.labels import conflict_label
from tests.e2e.cluster import Cluster, tree, write

pytestmark = pytest.mark.timeout(300)

NAMES = [f"folder/f{i:02}.txt" for i in range(12)]
GONE = NAMES[:10]  # most of them: the mass-deletion guard holds these by default


def _setup(cluster: Cluster, tmp_path: Path, index: str, encrypted: bool, **a_keys: str) -> tuple[str, str]:
    cluster.common["index"] = index
    if encrypted:
        key = str(tmp_path / "shared.key")
        generate_key_file(key)
        cluster.common.update({"encryption": "yes", "key": key})
    else:
        cluster.common["encryption"] = "no"
    a = cluster.add("a", **a_keys)
    b = cluster.add("b")
    for name in NAMES:
        write(a, name, f"content of {name}\n")
    cluster.sync_all(2)
    assert set(tree(b)) == set(NAMES)
    return a, b


LAYOUTS = pytest.mark.parametrize(("index", "encrypted"), [("no", False), ("no", True), ("yes", False),
                                                           ("yes", True)])


@LAYOUTS
def test_one_allowance_on_the_deleting_client_covers_the_receivers(
        file_cluster: Cluster, tmp_path: Path, index: str, encrypted: bool) -> None:
    a, b = _setup(file_cluster, tmp_path, index, encrypted)
    for name in GONE:
        os.unlink(os.path.join(a, name))
    file_cluster.run("a")
    file_cluster.run("b")
    assert set(tree(b)) == set(NAMES)  # a's own guard held them: nothing was sent

    allowed = file_cluster.ctl("allow-deletions", "a")
    assert allowed.returncode == 0, allowed.stderr
    file_cluster.run("a")
    file_cluster.run("b")  # no allow-deletions for b
    assert set(tree(b)) == set(NAMES) - set(GONE)
    assert tree(a) == tree(b)
    assert not os.path.exists(os.path.join(b, ".escale", "b", "allow-deletions"))

    # the allowance was one pass of a: a later mass deletion is held again, by a
    for name in NAMES[10:]:
        os.unlink(os.path.join(a, name))
    file_cluster.run("a")
    file_cluster.run("b")
    assert set(tree(b)) == set(NAMES[10:])


@LAYOUTS
def test_mass_deletions_sent_without_an_allowance_are_held_by_the_receiver(
        file_cluster: Cluster, tmp_path: Path, index: str, encrypted: bool) -> None:
    # a's guard lets any share of deletions through, b's is the default
    a, b = _setup(file_cluster, tmp_path, index, encrypted, deletion_guard="1")
    for name in GONE:
        os.unlink(os.path.join(a, name))
    file_cluster.run("a")
    result = file_cluster.run("b")
    assert set(tree(a)) == set(NAMES) - set(GONE)  # sent by a
    assert set(tree(b)) == set(NAMES)  # held by b
    log = Path(file_cluster.base, "escale.log").read_text(encoding="utf-8", errors="replace")
    assert "mass-deletion guard" in log + result.stderr


def test_conservative_relay_copy_names_the_pusher_and_its_host(file_cluster: Cluster) -> None:
    keeper = file_cluster.add("keeper", mode="conservative")
    editor = file_cluster.add("editor")
    write(keeper, "doc/report.txt", "written by the conservative client\n")
    file_cluster.sync_all(2)
    write(editor, "doc/report.txt", "edited by the other client\n")
    file_cluster.run("editor")
    file_cluster.run("keeper")
    with open(os.path.join(keeper, "doc/report.txt"), encoding="utf-8") as handle:
        assert handle.read() == "written by the conservative client\n"  # its own file is never replaced
    copies = [p for p in tree(keeper) if p != "doc/report.txt"]
    label = re.escape(conflict_label("editor"))  # editor@<this host>: both processes run here
    assert len(copies) == 1 and re.fullmatch(rf"doc/report\.conflict-{label}-[0-9a-f]{{8}}\.txt", copies[0]), copies
    with open(os.path.join(keeper, copies[0]), encoding="utf-8") as handle:
        assert handle.read() == "edited by the other client\n"
