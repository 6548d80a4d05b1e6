"""A client that keeps its own file never overwrites a version it never saw.

Upload clients never take relay versions, a ``w-`` access modifier refuses
them for one file, and any client declines a version for a file it deleted on
purpose. When such a client later edits (or
re-creates) the file, its edit does not descend from the relay's version: both
sides changed, so both must survive (the edit goes to the relay as a conflict
copy). Found by the random convergence scenario: the upload client's second
edit used to replace another client's version everywhere.
"""

from __future__ import annotations

import os

import pytest

from tests.faults.world import Ledger, World, tree

pytestmark = pytest.mark.timeout(120)


def _contents(world: World, names: list[str]) -> set[str]:
    out: set[str] = set()
    for name in names:
        out |= set(tree(world.path(name)).values())
    return out


def test_upload_client_edit_after_declining_keeps_the_other_version(file_world: World) -> None:
    ledger = Ledger()
    up = file_world.add("up", mode="upload")
    a = file_world.add("a")
    b = file_world.add("b")
    ledger.write("up", up, "log.csv", b"first from up\n")
    file_world.quiesce(["up", "a", "b"])
    ledger.write("a", a, "log.csv", b"edited by a\n")  # a's version: up never sees it
    file_world.quiesce(["a", "up", "b"])
    ledger.write("up", up, "log.csv", b"second from up\n")  # not an edit of a's version
    file_world.quiesce(["up", "a", "b"])
    trees = [tree(file_world.path(n)) for n in ("up", "a", "b")]
    assert not ledger.missing(trees), "a version was replaced by a client that never saw it"
    assert tree(a) == tree(b)
    with open(os.path.join(a, "log.csv"), "rb") as handle:
        assert handle.read() == b"edited by a\n"


def test_recreated_after_local_delete_keeps_the_newer_relay_version(file_world: World) -> None:
    ledger = Ledger()
    up = file_world.add("up", mode="upload")
    a = file_world.add("a")
    ledger.write("up", up, "notes.txt", b"v1 by up\n")
    file_world.quiesce(["up", "a"])
    ledger.delete(up, "notes.txt")  # an upload client's deletion stays local
    ledger.write("a", a, "notes.txt", b"v2 by a\n")  # up declines it: it was deleted there
    file_world.quiesce(["a", "up"])
    ledger.write("up", up, "notes.txt", b"recreated on up, which never saw v2\n")
    file_world.quiesce(["up", "a"])
    assert not ledger.missing([tree(up), tree(a)]), "v2 was replaced by a client that never saw it"
    with open(os.path.join(a, "notes.txt"), "rb") as handle:
        assert handle.read() == b"v2 by a\n"


@pytest.mark.parametrize("index", ["no", "yes"])
def test_upload_priority_conservative_conflict_keeps_the_relay_version(file_world: World, index: str) -> None:
    """``priority = upload`` sends before receiving; a conservative client
    that also keeps the relay's conflicting version as a copy must fetch it
    before its own send replaces it on the relay (in both layouts)."""
    file_world.common["index"] = index
    ledger = Ledger()
    a = file_world.add("a", mode="conservative", priority="upload")
    b = file_world.add("b")
    ledger.write("a", a, "plan.txt", b"first\n")
    file_world.quiesce(["a", "b"])
    ledger.write("b", b, "plan.txt", b"edited by b\n")
    file_world.sync("b")
    ledger.write("a", a, "plan.txt", b"edited by a\n")
    report = file_world.sync("a")
    assert report.errors == [] and report.pushed == ["plan.txt"], report
    assert not ledger.missing([tree(a)]), "b's version was replaced before a kept its copy"
    file_world.quiesce(["a", "b"])
    assert not ledger.missing([tree(a)]) and not ledger.missing([tree(b)])
    with open(os.path.join(a, "plan.txt"), "rb") as handle:
        assert handle.read() == b"edited by a\n"


@pytest.mark.parametrize("index", ["no", "yes"])
@pytest.mark.parametrize("mode", ["shared", "conservative"])
def test_write_refused_client_edit_keeps_the_other_version(file_world: World, index: str, mode: str) -> None:
    """b refuses relay versions of a file (``w-``) and edits it while a sends
    its own edit: b cannot keep a's version, so b's edit must not replace it
    on the relay; it goes out as a conflict copy and a keeps its edit."""
    file_world.common["index"] = index
    ledger = Ledger()
    a = file_world.add("a")
    b = file_world.add("b", mode=mode)
    ledger.write("a", a, "plan.txt", b"first\n")
    file_world.quiesce(["a", "b"])
    file_world.access(os.path.join(b, "plan.txt"), "w-")
    ledger.write("a", a, "plan.txt", b"edited by a\n")
    file_world.sync("a")
    ledger.write("b", b, "plan.txt", b"edited by b, which refuses a's versions\n")
    file_world.quiesce(["b", "a"])
    assert not ledger.missing([tree(a), tree(b)]), "a version was replaced by a client that refused it"
    with open(os.path.join(a, "plan.txt"), "rb") as handle:
        assert handle.read() == b"edited by a\n"
    with open(os.path.join(b, "plan.txt"), "rb") as handle:
        assert handle.read() == b"edited by b, which refuses a's versions\n"
    copies = [name for name in tree(a) if name.startswith("plan.conflict-b")]
    assert len(copies) == 1, tree(a)
