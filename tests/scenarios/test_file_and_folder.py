"""One name, a file on one client and a folder on another.

A name cannot be both on one file system. Before the rule in
:func:`escale.sync.planner.plan_name_taken_by_folder`, the client holding the
file failed every pass ("refusing to write below x: not a folder") and the
client holding the folder waited forever for a file it could not place:
nothing was lost, but the clients never converged. Now the folder keeps the
name everywhere and the file becomes the same conflict copy on every client.
"""

from __future__ import annotations

import os

import pytest

from tests.faults.world import Ledger, World, sha, tree

pytestmark = pytest.mark.timeout(180)


def _converged(world: World, ledger: Ledger, names: list[str]) -> dict[str, str]:
    world.quiesce(names)
    trees = [tree(world.path(n)) for n in names]
    assert not ledger.missing(trees), "a version was lost"
    assert all(t == trees[0] for t in trees), trees
    return trees[0]


@pytest.mark.parametrize("index", ["no", "yes"])
@pytest.mark.parametrize("file_first", [True, False], ids=["file-first", "folder-first"])
def test_a_file_and_a_folder_of_one_name_converge(file_world: World, index: str, file_first: bool) -> None:
    file_world.common["index"] = index
    ledger = Ledger()
    a = file_world.add("a")
    b = file_world.add("b", mode="conservative")
    c = file_world.add("c")
    file_world.quiesce(["c"])  # c receives, but passes only once both have sent
    ledger.write("a", a, "docs/x", b"a file named x\n")
    ledger.write("b", b, "docs/x/y", b"a file in a folder named x\n")
    ledger.write("b", b, "docs/x/z/deeper", b"deeper in that folder\n")
    order = ["a", "b"] if file_first else ["b", "a"]
    for name in order:
        report = file_world.sync(name)
        assert report.errors == [], report.errors
    # c, which never had either, finds the file and the folder on the relay at once
    report = file_world.sync("c")
    assert report.errors == [] and not report.warnings, (report.errors, report.warnings)
    common = _converged(file_world, ledger, [*order, "c"])
    assert {"docs/x/y", "docs/x/z/deeper"} <= set(common) and "docs/x" not in common
    assert len([p for p in common if p.startswith("docs/x.conflict-a")]) == 1, common
    assert tree(c) == common


@pytest.mark.parametrize("index", ["no", "yes"])
def test_edited_file_named_like_a_new_relay_folder_keeps_every_version(file_world: World, index: str) -> None:
    """a's file ``x`` is synced everywhere; b replaces it by a folder while a
    edits the file: a's edit, the version b replaced and b's folder all stay."""
    file_world.common["index"] = index
    ledger = Ledger()
    a, b = file_world.add("a"), file_world.add("b")
    ledger.write("a", a, "x", b"first\n")
    file_world.quiesce(["a", "b"])
    ledger.delete(b, "x")
    ledger.write("b", b, "x/y", b"the folder that took the name\n")
    file_world.sync("b")
    ledger.write("a", a, "x", b"edited on a meanwhile\n")
    common = _converged(file_world, ledger, ["a", "b"])
    assert "x/y" in common and "x" not in common
    copies = {p: h for p, h in common.items() if p.startswith("x.conflict-")}
    assert sha(b"edited on a meanwhile\n") in copies.values(), copies


@pytest.mark.parametrize("index", ["no", "yes"])
def test_an_empty_local_folder_keeps_its_name(file_world: World, index: str) -> None:
    """An empty folder is a name taken as much as a full one: the relay's file
    of that name arrives as its copy, at once, and the folder stays."""
    file_world.common["index"] = index
    ledger = Ledger()
    a, b = file_world.add("a"), file_world.add("b")
    file_world.quiesce(["b"])
    os.makedirs(os.path.join(b, "reports", "empty"))
    ledger.write("a", a, "reports/empty", b"a file where b has an empty folder\n")
    file_world.sync("a")
    report = file_world.sync("b")
    assert report.errors == [] and report.conflicts == ["reports/empty"], report
    assert os.path.isdir(os.path.join(b, "reports", "empty"))
    file_world.quiesce(["a", "b"])
    assert not ledger.missing([tree(b)])
    assert [p for p in tree(b) if p.startswith("reports/empty.conflict-a")], tree(b)
