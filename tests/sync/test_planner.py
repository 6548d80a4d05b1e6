"""The planner's rules, one table row per rule and mode, plus properties."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escale.config.settings import Mode
from escale.sync.planner import (
    Access,
    BaseEntry,
    LocalFile,
    Plan,
    RemoteEntry,
    conflict_name,
    folders_of,
    plan,
    plan_path,
)

A = LocalFile(10, 1000, "sha256:aaa")
A2 = LocalFile(12, 2000, "sha256:bbb")  # local edit
BASE = BaseEntry(10, 1000, "sha256:aaa", version=3, origin="local")
BASE_REMOTE = replace(BASE, origin="remote")


def remote(version: int = 3, checksum: str = "sha256:aaa", *, deleted: bool = False, available: bool = True,
           acked: bool = False, expects_me: bool = True, label: str = "other") -> RemoteEntry:
    return RemoteEntry(version=version, deleted=deleted, pusher="other-id", pusher_label=label,
                       size=0 if deleted else 10, mtime_ns=1000, checksum=None if deleted else checksum,
                       available=available and not deleted, acked=acked, expects_me=expects_me)


R_NEW = remote(4, "sha256:ccc")  # a newer version from another client
R_DEL = remote(4, deleted=True)  # a tombstone

MODES = ("shared", "download", "conservative", "upload")


def kinds(local: LocalFile | None, rem: RemoteEntry | None, base: BaseEntry | None, mode: Mode,
          access: Access | None = None) -> list[str]:
    return [a.kind for a in plan_path("f.txt", local, rem, base, mode=mode, label="me", access=access or Access())]


# (rule, local, remote, base, {mode: expected kinds})
RULES = [
    ("new local file", A, None, None,
     {"shared": ["push"], "download": [], "conservative": ["push"], "upload": ["push"]}),
    ("new relay file", None, R_NEW, None,
     {"shared": ["pull"], "download": ["pull"], "conservative": ["pull"], "upload": ["ack"]}),
    ("new relay file already reclaimed", None, remote(4, available=False), None,
     {"shared": [], "download": [], "conservative": [], "upload": ["ack"]}),
    ("identical on both sides, never synced", A, remote(1), None,
     {m: ["record", "ack"] for m in MODES}),
    ("both created, different content", A2, R_NEW, None,
     {"shared": ["conflict"], "download": ["conflict"], "conservative": ["pull_copy", "push"],
      "upload": ["push_copy", "record"]}),
    ("in sync", A, remote(3, acked=True), BASE, {m: [] for m in MODES}),
    ("in sync, acknowledgement missing", A, remote(3), BASE, {m: ["ack"] for m in MODES}),
    ("modified locally", A2, remote(3, acked=True), BASE,
     {"shared": ["push"], "download": [], "conservative": ["push"], "upload": ["push"]}),
    ("deleted locally", None, remote(3, acked=True), BASE,
     {"shared": ["push_delete"], "download": ["record"], "conservative": ["record"], "upload": ["record"]}),
    ("modified on the relay (file came from here)", A, R_NEW, BASE,
     {"shared": ["pull"], "download": ["pull"], "conservative": ["pull_copy"], "upload": ["record", "ack"]}),
    ("modified on the relay (file came from elsewhere)", A, R_NEW, BASE_REMOTE,
     {"shared": ["pull"], "download": ["pull"], "conservative": ["pull"], "upload": ["record", "ack"]}),
    ("deleted on the relay (file came from here)", A, R_DEL, BASE,
     {"shared": ["delete_local"], "download": ["delete_local"], "conservative": ["record"],
      "upload": ["record"]}),
    ("deleted on the relay (file came from elsewhere)", A, R_DEL, BASE_REMOTE,
     {"shared": ["delete_local"], "download": ["delete_local"], "conservative": ["delete_local"],
      "upload": ["record"]}),
    ("relay lost the path", A, None, BASE,
     {"shared": ["push"], "download": ["forget"], "conservative": ["push"], "upload": ["push"]}),
    ("modified on both sides", A2, R_NEW, BASE,
     {"shared": ["conflict"], "download": ["conflict"], "conservative": ["pull_copy", "push"],
      "upload": ["push_copy", "record"]}),
    ("same change on both sides", A2, remote(4, "sha256:bbb"), BASE,
     {m: ["record", "ack"] for m in MODES}),
    ("deleted locally, modified on the relay", None, R_NEW, BASE,
     {"shared": ["pull"], "download": ["pull"], "conservative": ["pull"], "upload": ["record", "ack"]}),
    ("deleted on both sides", None, R_DEL, BASE, {m: ["forget"] for m in MODES}),
    ("modified locally, deleted on the relay", A2, R_DEL, BASE,
     {"shared": ["push"], "download": ["record"], "conservative": ["push"], "upload": ["push"]}),
    ("deleted here before, new relay version", None, R_NEW, replace(BASE, local_deleted=True),
     {"shared": ["pull"], "download": ["pull"], "conservative": ["pull"], "upload": ["record", "ack"]}),
    ("deleted here before, nothing new", None, remote(3, acked=True), replace(BASE, local_deleted=True),
     {m: [] for m in MODES}),
    ("conflict when the relay version is gone", A2, remote(4, "sha256:ccc", available=False), BASE,
     {"shared": ["conflict"], "download": ["conflict"], "conservative": ["ack", "push_copy", "record"],
      "upload": ["push_copy", "record"]}),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("rule", "local", "rem", "base", "expected"), RULES, ids=[r[0] for r in RULES])
def test_rule(rule: str, local: LocalFile | None, rem: RemoteEntry | None, base: BaseEntry | None,
              expected: dict[str, list[str]], mode: Mode) -> None:
    assert kinds(local, rem, base, mode) == expected[mode], rule


@pytest.mark.parametrize(("access", "mode", "expected"), [
    (Access(read=False), "shared", []),  # r-: never sent
    (Access(read=True), "download", ["push"]),  # r+: sent even in download mode
])
def test_read_modifier(access: Access, mode: Mode, expected: list[str]) -> None:
    assert kinds(A2, remote(3, acked=True), BASE, mode, access) == expected


@pytest.mark.parametrize(("access", "mode", "expected"), [
    (Access(write=False), "shared", ["record", "ack"]),  # w-: never overwritten
    (Access(write=True), "upload", ["pull"]),  # w+: accepted even in upload mode
])
def test_write_modifier(access: Access, mode: Mode, expected: list[str]) -> None:
    assert kinds(A, R_NEW, BASE, mode, access) == expected


def test_pull_expects_the_scanned_local_file() -> None:
    [action] = plan_path("f.txt", A, R_NEW, BASE, mode="shared", label="me")
    assert action.expect_local == A and action.expect_version == 4 and action.ack


def test_conflict_copy_name_is_deterministic() -> None:
    [one] = plan_path("dir/report.csv", A2, R_NEW, BASE, mode="shared", label="laptop")
    [two] = plan_path("dir/report.csv", A2, R_NEW, BASE, mode="shared", label="laptop")
    assert one.copy_path == two.copy_path
    assert one.copy_path is not None
    assert one.copy_path.startswith("dir/report.conflict-laptop-") and one.copy_path.endswith(".csv")


@pytest.mark.parametrize(("path", "pattern"), [
    ("a.txt", r"a\.conflict-me-[0-9a-f]{8}\.txt"),
    ("noext", r"noext\.conflict-me-[0-9a-f]{8}"),
    (".hidden", r"\.hidden\.conflict-me-[0-9a-f]{8}"),
    ("d/e/x.tar.gz", r"d/e/x\.tar\.conflict-me-[0-9a-f]{8}\.gz"),
])
def test_conflict_name_shapes(path: str, pattern: str) -> None:
    import re

    assert re.fullmatch(pattern, conflict_name(path, "me", "sha256:abc"))


def test_conflict_name_label_is_sanitised() -> None:
    assert "/" not in conflict_name("a.txt", "evil/../x", "c").rpartition("/")[0]


def _many(n: int) -> tuple[dict[str, LocalFile], dict[str, RemoteEntry], dict[str, BaseEntry]]:
    base = {f"f{i}": BASE for i in range(n)}
    rem = {f"f{i}": remote(3, acked=True) for i in range(n)}
    return {}, rem, base


def test_mass_local_removal_is_held() -> None:
    local, rem, base = _many(20)
    local = {f"f{i}": A for i in range(5)}  # 15 of 20 deleted locally
    result = plan(local, rem, base, mode="shared", label="me")
    assert not result.of_kind("push_delete")
    assert len(result.held) == 15 and result.notes


def test_mass_deletion_allowed_explicitly() -> None:
    _, rem, base = _many(20)
    result = plan({}, rem, base, mode="shared", label="me", allow_mass_deletion=True)
    assert len(result.of_kind("push_delete")) == 20


def test_empty_local_folder_never_deletes_the_relay() -> None:
    _, rem, base = _many(3)  # few files, all gone: an unmounted disk looks like this
    result = plan({}, rem, base, mode="shared", label="me", local_root_missing=True)
    assert not result.of_kind("push_delete") and len(result.held) == 3


def test_mass_remote_deletion_is_held_but_the_rest_syncs() -> None:
    base = {f"f{i}": BASE_REMOTE for i in range(20)}
    local = {f"f{i}": A for i in range(20)}
    rem = {f"f{i}": R_DEL for i in range(20)}
    local["new"] = A2
    result = plan(local, rem, base, mode="shared", label="me")
    assert not result.of_kind("delete_local") and len(result.held) == 20
    assert [a.path for a in result.of_kind("push")] == ["new"]


def test_allowed_mass_deletion_is_marked_deliberate() -> None:
    _, rem, base = _many(20)
    allowed = plan({}, rem, base, mode="shared", label="me", allow_mass_deletion=True)
    assert all(a.deliberate for a in allowed.of_kind("push_delete"))
    local = {f"f{i}": A for i in range(2, 20)}  # two deletions: the guard would not hold them
    few = plan(local, rem, base, mode="shared", label="me", allow_mass_deletion=True)
    assert [a.deliberate for a in few.of_kind("push_delete")] == [False, False]


def test_deliberate_tombstones_are_not_held_by_the_receiver() -> None:
    base = {f"f{i}": BASE_REMOTE for i in range(20)}
    local = {f"f{i}": A for i in range(20)}
    rem = {f"f{i}": replace(R_DEL, deliberate=True) for i in range(15)}
    rem.update({f"f{i}": remote(3, acked=True) for i in range(15, 20)})
    result = plan(local, rem, base, mode="shared", label="me")
    assert len(result.of_kind("delete_local")) == 15 and not result.held
    # undeliberate tombstones beside them are judged on their own
    rem.update({f"f{i}": R_DEL for i in range(15, 20)})
    rem.update({f"g{i}": R_DEL for i in range(10)})
    base.update({f"g{i}": BASE_REMOTE for i in range(10)})
    local.update({f"g{i}": A for i in range(10)})
    result = plan(local, rem, base, mode="shared", label="me", deletion_guard=0.4)
    assert {a.path for a in result.of_kind("delete_local")} == {f"f{i}" for i in range(15)}
    assert len(result.held) == 15


def test_conservative_relay_copy_is_named_after_the_pusher_label_and_host() -> None:
    actions = plan_path("d/f.txt", A, remote(4, "sha256:ccc", label="lab@pc-2"), BASE, mode="conservative",
                        label="me@here")
    copies = [a.copy_path for a in actions if a.kind == "pull_copy"]
    assert len(copies) == 1 and copies[0] is not None
    assert copies[0].startswith("d/f.conflict-lab@pc-2-") and copies[0].endswith(".txt")


def test_few_deletions_are_not_held() -> None:
    local, rem, base = _many(20)
    local = {f"f{i}": A for i in range(2, 20)}
    result = plan(local, rem, base, mode="shared", label="me")
    assert len(result.of_kind("push_delete")) == 2 and not result.held


# --------------------------------------------------------------------------- properties

checksums = st.sampled_from(["sha256:aaa", "sha256:bbb", "sha256:ccc"])
locals_ = st.none() | st.builds(LocalFile, st.integers(0, 3), st.integers(0, 3), checksums)
remotes = st.none() | st.builds(
    RemoteEntry, version=st.integers(1, 5), deleted=st.booleans(), pusher=st.sampled_from(["me-id", "x"]),
    pusher_label=st.just("x"), size=st.integers(0, 3), mtime_ns=st.integers(0, 3), checksum=checksums,
    available=st.booleans(), acked=st.booleans(), expects_me=st.booleans())
bases = st.none() | st.builds(
    BaseEntry, size=st.integers(0, 3), mtime_ns=st.integers(0, 3), checksum=checksums,
    version=st.integers(1, 5), origin=st.sampled_from(["local", "remote"]), modified_here=st.booleans(),
    local_deleted=st.booleans())
modes = st.sampled_from(MODES)


@settings(max_examples=600, deadline=None)
@given(locals_, remotes, bases, modes)
def test_no_local_loss(local: LocalFile | None, rem: RemoteEntry | None, base: BaseEntry | None, mode: Mode) -> None:
    """A local file whose content differs from what the relay offers is never
    replaced or deleted unless it is unchanged since the last sync (and the
    mode allows it), or it is first kept as a conflict copy."""
    actions = plan_path("f", local, rem, base, mode=mode, label="me")
    for action in actions:
        if action.kind in ("pull", "delete_local") and local is not None:
            assert base is not None and not base.local_deleted
            assert (local.checksum == base.checksum), (action, local, base)
            assert mode != "upload"
        if action.kind == "conflict":
            assert action.copy_path and action.copy_path != "f"


@settings(max_examples=600, deadline=None)
@given(locals_, remotes, bases, modes)
def test_mode_boundaries(local: LocalFile | None, rem: RemoteEntry | None, base: BaseEntry | None, mode: Mode) -> None:
    """Upload clients never change local files; download clients never send."""
    kinds_ = {a.kind for a in plan_path("f", local, rem, base, mode=mode, label="me")}
    if mode == "upload":
        assert not kinds_ & {"pull", "pull_copy", "conflict", "delete_local"}
    if mode == "download":
        assert not kinds_ & {"push", "push_copy", "push_delete"}


@settings(max_examples=300, deadline=None)
@given(locals_, remotes, bases, modes)
def test_planning_is_deterministic(
    local: LocalFile | None, rem: RemoteEntry | None, base: BaseEntry | None, mode: Mode
) -> None:
    one = plan_path("f", local, rem, base, mode=mode, label="me")
    two = plan_path("f", local, rem, base, mode=mode, label="me")
    assert one == two


def test_renumbered_relay_version_with_same_content_is_not_a_conflict() -> None:
    """After ``escalectl fix`` re-commits a file with a higher version but the
    same content, a local edit is simply sent, not turned into a conflict."""
    renumbered = remote(7, "sha256:aaa")
    actions = plan_path("f.txt", A2, renumbered, BASE, mode="shared", label="me")
    assert [a.kind for a in actions] == ["record", "push"]
    assert actions[0].base is not None and actions[0].base.version == 7
    assert actions[1].expect_version == 7
    unchanged = plan_path("f.txt", A, renumbered, BASE, mode="shared", label="me")
    assert [a.kind for a in unchanged] == ["record", "ack"]


def test_conservative_never_pushes_over_a_version_it_could_not_keep() -> None:
    """A reclaimed relay version cannot be kept as a copy here, so the local
    version is sent under the conflict-copy name instead of over it."""
    gone = remote(4, "sha256:ccc", available=False)
    actions = plan_path("f.txt", A2, gone, BASE, mode="conservative", label="me")
    assert "push" not in [a.kind for a in actions]
    [copy] = [a for a in actions if a.kind == "push_copy"]
    assert copy.copy_path is not None and copy.copy_path.startswith("f.conflict-me-")


@settings(max_examples=600, deadline=None)
@given(locals_, remotes, bases, modes)
def test_upload_priority_never_sends_before_receiving_the_same_path(
    local: LocalFile | None, rem: RemoteEntry | None, base: BaseEntry | None, mode: Mode
) -> None:
    """``priority = upload`` runs the first part of the split before the
    local phase: none of its sends may replace a version that the local phase
    still has to receive; nothing is dropped or duplicated, and the order holds."""
    the_plan = Plan(actions=plan_path("f", local, rem, base, mode=mode, label="me"))
    first, later = the_plan.split_for_upload_priority()
    received = {a.path for a in first.actions if a.kind in ("pull", "pull_copy", "conflict")}
    assert not [a for a in first.actions if a.kind.startswith("push") and a.path in received]
    assert all(a.kind.startswith("push") for a in later.actions)
    assert sorted(map(repr, first.actions + later.actions)) == sorted(map(repr, the_plan.actions))
    assert [a for a in the_plan.actions if a in first.actions] == first.actions


def test_conservative_conflict_sends_after_keeping_the_relay_copy_under_upload_priority() -> None:
    """The case the split exists for: conservative mode keeps the relay's
    version as a copy and sends its own; the send waits for the copy."""
    actions = plan_path("f.txt", A2, remote(4, "sha256:ccc"), BASE, mode="conservative", label="me")
    first, later = Plan(actions=actions).split_for_upload_priority()
    assert [a.kind for a in first.actions] == ["pull_copy"]
    assert [a.kind for a in later.actions] == ["push"]


accesses = st.builds(Access, st.sampled_from([None, True, False]), st.sampled_from([None, True, False]))


@settings(max_examples=1500, deadline=None)
@given(locals_, remotes, bases, modes, accesses)
def test_no_remote_loss(
    local: LocalFile | None, rem: RemoteEntry | None, base: BaseEntry | None, mode: Mode, access: Access
) -> None:
    """A send never replaces a relay version that no one has kept: pushing over
    a fetchable version whose content is neither ours nor the one we descend
    from is allowed only when the same plan keeps that version here first."""
    actions = plan_path("f", local, rem, base, mode=mode, label="me", access=access)
    kinds_ = {a.kind for a in actions}
    if "push" not in kinds_ or rem is None or rem.deleted or not rem.available or local is None:
        return
    if rem.checksum == local.checksum or (base is not None and rem.checksum == base.checksum):
        return
    descends = base is not None and base.version == rem.version
    kept = bool(kinds_ & {"pull_copy", "conflict"})
    assert descends or kept, (actions, local, rem, base, mode, access)


@pytest.mark.parametrize("mode", ["shared", "conservative", "download", "upload"])
def test_write_refused_conflict_sends_a_copy_not_a_replacement(mode: Mode) -> None:
    """A ``w-`` client cannot keep the relay's version, so its own edit goes out
    under the conflict-copy name and the other client's version stays current."""
    actions = plan_path("f.txt", A2, remote(4, "sha256:ccc"), BASE, mode=mode, label="me",
                        access=Access(write=False))
    assert "push" not in [a.kind for a in actions]
    if mode != "download":
        [copy] = [a for a in actions if a.kind == "push_copy"]
        assert copy.copy_path is not None and copy.copy_path.startswith("f.conflict-me-")
        [record] = [a for a in actions if a.kind == "record"]
        assert record.base is not None and record.base.version == BASE.version


# --------------------------------------------------------------------------- a file and a folder of one name

Y = LocalFile(5, 500, "sha256:yyy")


def test_relay_file_named_like_a_local_folder_is_kept_as_a_copy() -> None:
    """b made the folder ``x/``, a sent the file ``x``: b keeps a's file under
    its conflict-copy name, records the name as free, and sends its folder."""
    result = plan({"x/y": Y}, {"x": remote(4, "sha256:ccc", label="a")}, {}, mode="shared", label="b")
    [copy] = result.of_kind("pull_copy")
    assert copy.path == "x" and copy.copy_path == conflict_name("x", "a", "sha256:ccc") and copy.ack
    assert copy.base is not None and copy.base.local_deleted and copy.base.version == 4
    assert [a.path for a in result.of_kind("push")] == ["x/y"]
    assert not result.of_kind("pull")


def test_local_file_named_like_a_relay_folder_is_renamed_aside_before_the_folder_comes() -> None:
    """a sent the file ``x`` and then the relay got ``x/y``: a renames its file
    to the very copy name the other clients use, and receives the folder."""
    rem = {"x": remote(3, "sha256:aaa", label="a", acked=True, expects_me=False), "x/y": remote(1, "sha256:yyy")}
    result = plan({"x": A}, rem, {"x": BASE}, mode="shared", label="a")
    assert [a.kind for a in result.actions] == ["conflict", "pull"]
    moved, pulled = result.actions
    assert moved.copy_path == conflict_name("x", "a", "sha256:aaa") and pulled.path == "x/y"
    assert moved.base is not None and moved.base.local_deleted and moved.base.version == 3
    # the copy is tracked as a copy of the relay's version, as a fetched copy is
    tracked = moved.copy_base
    assert tracked is not None and (tracked.version, tracked.origin, tracked.checksum) == (0, "remote", "sha256:aaa")
    assert not result.of_kind("push") and not result.of_kind("push_delete")


def test_unsent_local_file_named_like_a_relay_folder_keeps_both_versions() -> None:
    """A local edit of ``x`` (never sent) where the relay has both ``x`` and
    ``x/y``: the edit goes aside under this client's label, the relay's
    version is fetched under its pusher's, nothing is sent over anything."""
    rem = {"x": remote(4, "sha256:ccc", label="other"), "x/y": remote(1, "sha256:yyy")}
    result = plan({"x": A2}, rem, {"x": BASE}, mode="shared", label="me")
    assert [(a.kind, a.copy_path) for a in result.actions if a.path == "x"] == [
        ("conflict", conflict_name("x", "me", "sha256:bbb")), ("pull_copy", conflict_name("x", "other", "sha256:ccc"))]
    new = plan({"x": A2}, {"x/y": remote(1, "sha256:yyy")}, {}, mode="shared", label="me")
    assert [a.kind for a in new.actions] == ["conflict", "pull"] and not new.of_kind("push")


def test_a_client_that_may_not_write_the_name_keeps_the_ordinary_rules() -> None:
    rem = {"x": remote(3, "sha256:aaa", acked=True), "x/y": remote(1, "sha256:yyy")}
    protected = plan({"x": A}, rem, {"x": BASE}, mode="shared", label="me", access={"x": Access(write=False)})
    assert not protected.of_kind("conflict")
    upload = plan({"x": A}, rem, {"x": BASE}, mode="upload", label="me")
    assert not upload.of_kind("conflict") and not upload.of_kind("pull")


def test_relay_deletion_of_the_file_frees_the_name_by_the_ordinary_rule() -> None:
    rem = {"x": R_DEL, "x/y": remote(1, "sha256:yyy")}
    result = plan({"x": A}, rem, {"x": BASE_REMOTE}, mode="shared", label="me")
    assert [a.kind for a in result.actions] == ["pull", "delete_local"]


def test_folders_of_names_every_folder_once() -> None:
    assert folders_of(["a/b/c", "a/b/d", "a/e", "f"]) == {"a", "a/b"}


names = st.sampled_from(["x", "x/y", "x/y/z", "x/w", "v"])


@settings(max_examples=800, deadline=None)
@given(st.dictionaries(names, st.builds(LocalFile, st.integers(0, 3), st.integers(0, 3), checksums), max_size=3),
       st.dictionaries(names, remotes.filter(lambda r: r is not None), max_size=4),
       st.dictionaries(names, bases.filter(lambda b: b is not None), max_size=4), modes)
def test_a_name_is_never_written_as_a_file_and_a_folder_at_once(
    local: dict[str, LocalFile], rem: dict[str, RemoteEntry], base: dict[str, BaseEntry], mode: Mode
) -> None:
    """Whatever the relay and the local folder hold, the plan never writes a
    file at a local folder's name, nor under a local file that it does not
    first rename aside or delete; and a local file is moved only to a copy."""
    if any(p in folders_of(local) for p in local):
        return  # cannot exist on one file system
    result = plan(local, rem, base, mode=mode, label="me")
    freed = {a.path for a in result.actions if a.kind in ("conflict", "delete_local")}
    files_after = (set(local) - freed) | {a.path for a in result.actions if a.kind == "pull"}
    for action in result.actions:
        if action.kind == "pull":
            assert action.path not in folders_of(local) or action.path in freed, (action, local)
            assert not [f for f in local if f not in freed and action.path.startswith(f + "/")], (action, local)
        if action.kind == "conflict":
            assert action.copy_path and action.copy_path != action.path
    assert not [f for f in files_after if f in folders_of(files_after)] or result.held, (result.actions, local)


def test_a_copy_of_a_relay_version_made_here_is_tracked_not_forgotten() -> None:
    """A copy fetched from another client's version (base version 0: never on
    the relay under its own name) is sent on by senders and kept tracked by
    the others, so that an edit or deletion of it elsewhere applies here."""
    copy_base = BaseEntry(10, 1000, "sha256:aaa", version=0, origin="remote")
    assert kinds(A, None, copy_base, "shared") == ["push"]
    assert kinds(A, None, copy_base, "download") == []
    assert kinds(A, remote(2, "sha256:aaa"), copy_base, "download") == ["record", "ack"]
    assert kinds(A, remote(2, "sha256:ccc"), copy_base, "download") == ["pull"]
    assert kinds(A, remote(2, deleted=True), copy_base, "download") == ["delete_local"]


def test_conservative_conflict_without_a_send_keeps_the_copy_once() -> None:
    """A conservative file that is not sent (``r-``) keeps the relay's version
    as a copy; the base then records that version, so the next pass does not
    fetch the copy again (it used to, every pass, until the payload was
    reclaimed under it and the fetch failed)."""
    actions = plan_path("f.txt", A2, remote(4, "sha256:ccc"), BASE, mode="conservative", label="me",
                        access=Access(read=False))
    [copy] = actions
    assert copy.kind == "pull_copy" and copy.base is not None and copy.base.version == 4
    again = plan_path("f.txt", A2, remote(4, "sha256:ccc", acked=True), copy.base, mode="conservative", label="me",
                      access=Access(read=False))
    assert again == []


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(names, st.builds(LocalFile, st.integers(0, 3), st.integers(0, 3), checksums), max_size=3),
       st.dictionaries(names, remotes.filter(lambda r: r is not None), max_size=4),
       st.dictionaries(names, bases.filter(lambda b: b is not None), max_size=4), modes,
       st.dictionaries(names, accesses, max_size=2))
def test_no_remote_loss_across_nested_names(
    local: dict[str, LocalFile], rem: dict[str, RemoteEntry], base: dict[str, BaseEntry], mode: Mode,
    access: dict[str, Access],
) -> None:
    """``test_no_remote_loss`` for whole plans whose names nest (``x`` and
    ``x/y``), with access modifiers: a send over a fetchable relay version it
    does not descend from comes with a copy of that version kept here."""
    if any(p in folders_of(local) for p in local):
        return  # cannot exist on one file system
    result = plan(local, rem, base, mode=mode, label="me", access=access)
    kept = {a.path for a in result.actions if a.kind in ("pull_copy", "conflict")}
    for action in result.of_kind("push"):
        there, here, agreed = rem.get(action.path), local.get(action.path), base.get(action.path)
        if there is None or there.deleted or not there.available or here is None:
            continue
        if there.checksum in (here.checksum, agreed.checksum if agreed else None):
            continue
        assert (agreed is not None and agreed.version == there.version) or action.path in kept, (
            action, here, there, agreed, mode, access)
