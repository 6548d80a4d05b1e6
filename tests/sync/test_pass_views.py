"""The per-file views of a pass hold no copy of the tree, and answer as before.

* the plan lists every path of its three views once, its actions ordered by
  kind and then by path, whatever the views hold;
* the state database's delivery records are read a chunk at a time, each
  matching record once, even when the reader changes records meanwhile;
* the versions seen, looked up a chunk of keys at a time, are those recorded;
* the planner's view of the relay is the relay state's own map less the paths
  it leaves out (frozen, refused by the filters, removed), and the plan made
  from it (a path in sync planned without building its entry) is the plan
  made from every entry built;
* the rollback check freezes every path whose relay version is below the one
  seen or synced, and records every other version above the one seen;
* the passes over every relay version that build a placeholder only for the
  few they keep (lost payloads, missed versions) answer as building them all
  would, whether the relay state stores placeholders or index entries.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from escale.config.settings import ClientSettings
from escale.protocol.objects import Placeholder
from escale.protocol.repository import LatestMap, RelayState, Repository
from escale.sync.planner import _ORDER, BaseEntry, LocalFile, RemoteEntry, folders_of, plan
from escale.sync.receivers import missed_versions
from escale.sync.relay_view import lost_payloads, remote_view, rolled_back
from escale.sync.report import Announcer, PassReport
from escale.sync.state import SEEN_CHUNK, Delivery, StateDB

PATHS = st.sampled_from(["a", "a/b", "a/c", "b", "b/a", "c", "é", "z/y"])
LOCAL = st.builds(LocalFile, st.integers(0, 2), st.integers(0, 2), st.sampled_from([None, "sha256:1", "sha256:2"]))
REMOTE = st.builds(RemoteEntry, version=st.integers(1, 3), deleted=st.booleans(), pusher=st.just("other"),
                   pusher_label=st.just("other"), size=st.integers(0, 2), mtime_ns=st.integers(0, 2),
                   checksum=st.sampled_from([None, "sha256:1", "sha256:2"]), available=st.booleans(),
                   acked=st.booleans(), expects_me=st.booleans(), deliberate=st.booleans())
BASE = st.builds(BaseEntry, st.integers(0, 2), st.integers(0, 2), st.sampled_from([None, "sha256:1"]),
                 st.integers(1, 3), st.sampled_from(["local", "remote"]), st.booleans(), st.booleans())


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(PATHS, LOCAL), st.dictionaries(PATHS, REMOTE), st.dictionaries(PATHS, BASE),
       st.sampled_from(["shared", "download", "conservative", "upload"]))
def test_plan_covers_every_path_once_in_kind_then_path_order(
        local: dict[str, LocalFile], remote: dict[str, RemoteEntry], base: dict[str, BaseEntry], mode: str) -> None:
    result = plan(local, remote, base, mode=mode, label="me")  # type: ignore[arg-type]
    keys = [(_ORDER[a.kind], a.path) for a in result.actions]
    assert keys == sorted(keys)
    touched = {a.path for a in result.actions} | {a.path for a in result.held}
    assert touched <= set(local) | set(remote) | set(base)


def test_delivery_records_are_read_in_chunks_while_being_changed(tmp_path: os.PathLike[str]) -> None:
    db = StateDB(os.path.join(str(tmp_path), "state.db"))
    try:
        for i in range(7):
            db.set_delivery(Delivery(f"f{i}", 1, 10, "sent" if i % 2 == 0 else "received", 1.0))
        seen = []
        for record in db.deliveries_in(("sent",), chunk=2):
            seen.append(record.path)
            # what after_pass does: the record leaves the state being read
            db.set_delivery(Delivery(record.path, 1, 10, "delivered", 2.0))
        assert seen == ["f0", "f2", "f4", "f6"]
        assert [d.path for d in db.deliveries_in(("delivered",), chunk=3)] == seen
        assert db.delivery("f1") == Delivery("f1", 1, 10, "received", 1.0)
        assert db.delivery("missing") is None
    finally:
        db.close()


def test_versions_seen_looked_up_by_chunks(tmp_path: os.PathLike[str]) -> None:
    db = StateDB(os.path.join(str(tmp_path), "state.db"))
    try:
        for key, version in (("k2", 4), ("k1", 2), ("k3", 1), ("k1", 1)):
            db.set_seen(key, version)
        assert db.seen_of_keys(["k3", "none", "k1"]) == {"k1": 2, "k3": 1}
        assert db.seen_of_keys([]) == {}
        assert db.seen_version("k2") == 4 and db.seen_version("none") == 0
        many = [f"m{i:05d}" for i in range(2 * SEEN_CHUNK + 3)]  # more than one query's worth
        db.set_seen_many([(key, i) for i, key in enumerate(many) if i % 3 == 0])
        found = db.seen_of_keys([*many, "k2"])
        assert found == {**{key: i for i, key in enumerate(many) if i % 3 == 0}, "k2": 4}
    finally:
        db.close()


@dataclass(frozen=True)
class _Source:
    """An index entry's stand-in: the stored fields, and the placeholder it builds."""

    path: str
    key: str
    version: int
    kind: str
    pusher: str
    placeholder: Placeholder


def _placeholder(path: str, version: int, tombstone: bool, pusher: str, payload: str | None, size: int) -> Placeholder:
    return Placeholder(path=path, key="k" + path, version=version, generation=1,
                       kind="tombstone" if tombstone else "file", pusher=pusher, pusher_label=pusher, size=size,
                       mtime_ns=1, checksum=None, payload=None if tombstone else payload, receivers=(),
                       puller_count=None)


#: per path: version, tombstone, pusher, payload, size, and who acknowledged it
VERSIONS = st.dictionaries(PATHS, st.tuples(
    st.integers(1, 3), st.booleans(), st.sampled_from(["me", "other"]), st.sampled_from([None, "p1", "p2"]),
    st.integers(0, 2), st.sets(st.sampled_from(["me", "other", "third"]))), min_size=1)


def _relay_state(versions: dict[str, tuple[int, bool, str, str | None, int, set[str]]], present: set[str],
                 as_entries: bool) -> tuple[dict[str, Placeholder], RelayState]:
    """The placeholders of ``versions`` and a relay state holding them (as
    index-entry stand-ins in a :class:`LatestMap` when ``as_entries``), with
    the payloads of ``present`` and each version's acknowledgements."""
    placeholders = {path: _placeholder(path, *fields[:5]) for path, fields in versions.items()}
    state = RelayState(payloads={name: 1 for name in present},
                       acks={(ph.key, ph.version): frozenset(versions[path][5]) for path, ph in placeholders.items()})
    if as_entries:
        latest = LatestMap(lambda source: cast(_Source, source).placeholder,
                           lambda source: cast(_Source, source).placeholder.payload)
        for path, ph in placeholders.items():
            latest.store(path, _Source(path, ph.key, ph.version, ph.kind, ph.pusher, ph))
        state.latest = latest
    else:
        state.latest = dict(placeholders)
    return placeholders, state


@settings(max_examples=300, deadline=None)
@given(VERSIONS, st.sets(st.sampled_from(["p1", "p2"]), max_size=1), st.dictionaries(PATHS, LOCAL),
       st.dictionaries(PATHS, BASE), st.booleans())
def test_passes_over_every_version_answer_as_building_every_placeholder(
        versions: dict[str, tuple[int, bool, str, str | None, int, set[str]]], present: set[str],
        local: dict[str, LocalFile], base: dict[str, BaseEntry], as_entries: bool) -> None:
    placeholders, state = _relay_state(versions, present, as_entries)
    settings_ = cast(ClientSettings, SimpleNamespace(sends=True, name="me"))
    repo = cast(Repository, SimpleNamespace(client_id="me"))
    # the reference: every placeholder built, the rules as the docstrings state them
    lost: list[str] = []
    missed: list[tuple[str, Any]] = []
    for path, ph in sorted(placeholders.items()):
        has = ph.payload is not None and ph.payload in present
        holders = state.acks[(ph.key, ph.version)]
        mine = local.get(path)
        # (these placeholders carry no checksum: the mtime decides)
        if ph.pusher == "me" and not ph.deleted and not has and not holders - {"me"} and mine is not None \
                and mine.size == ph.size and mine.mtime_ns == ph.mtime_ns:
            lost.append(path)
        if not ph.deleted and ph.pusher != "me" and not has and holders and "me" not in holders \
                and holders - {ph.pusher} and not (path in base and base[path].version >= ph.version):
            missed.append((path, ph))
    assert sorted(a.path for a in lost_payloads(settings_, repo, state, local)) == lost
    assert [(ph.path, ph) for ph, _ in missed_versions(state, "me", base)] == missed


@settings(max_examples=200, deadline=None)
@given(VERSIONS, st.sets(st.sampled_from(["p1", "p2"]), max_size=1), st.sets(PATHS), st.sets(PATHS),
       st.sets(PATHS), st.booleans(), st.booleans())
def test_remote_view_is_the_relay_state_less_what_it_leaves_out(
        versions: dict[str, tuple[int, bool, str, str | None, int, set[str]]], present: set[str],
        frozen: set[str], refused: set[str], popped: set[str], receives: bool, as_entries: bool) -> None:
    placeholders, state = _relay_state(versions, present, as_entries)
    filters = SimpleNamespace(accepts_file=lambda path: path not in refused)
    settings_ = cast(ClientSettings, SimpleNamespace(receives=receives, local_path="/nonexistent", filters=filters))
    acknowledged: list[str] = []
    repo = cast(Repository, SimpleNamespace(client_id="me", acknowledge=lambda ph: acknowledged.append(ph.path)))
    # the reference: an entry built for every path the view keeps, as the docstrings state
    kept = {path: ph for path, ph in placeholders.items()
            if path not in frozen and (ph.deleted or path not in refused)}
    expected = {path: RemoteEntry(
        version=ph.version, deleted=ph.deleted, pusher=ph.pusher, pusher_label=ph.pusher_label, size=ph.size,
        mtime_ns=ph.mtime_ns, checksum=ph.checksum, available=ph.payload is not None and ph.payload in present,
        acked="me" in versions[path][5], expects_me=receives and ph.pusher != "me", deliberate=ph.deliberate)
        for path, ph in kept.items()}
    with tempfile.TemporaryDirectory() as folder:
        db = StateDB(os.path.join(folder, "state.db"))
        try:
            view = remote_view(settings_, db, repo, state, set(frozen))
            assert view == expected and dict(view) == expected
            assert len(view) == len(expected) and sorted(view) == sorted(expected)
            assert all((path in view) == (path in expected) for path in set(placeholders) | frozen | refused)
            assert view.live_folders() == folders_of(p for p, e in expected.items() if not e.deleted)
            for path in expected:
                assert view.placeholder(path) == placeholders[path]
            # what the planner reads of a path in sync, without building its entry
            for path in set(placeholders) | frozen | refused:
                entry = expected.get(path)
                assert view.version_of(path) == (entry.version if entry is not None else None)
                if entry is not None:
                    assert view.ack_due(path) == (entry.expects_me and not entry.acked and not entry.deleted)
            # a refused file is acknowledged when this client is expected to receive it
            assert sorted(acknowledged) == sorted(
                path for path, ph in placeholders.items() if path not in frozen and not ph.deleted
                and path in refused and receives and ph.pusher != "me" and "me" not in versions[path][5])
            assert db.seen_of_keys([ph.key for ph in placeholders.values()]) == {}  # (rolled_back's job)
        finally:
            db.close()
    # what pop leaves out is gone from every reading; the relay state keeps it
    for path in popped:
        assert view.pop(path, None) == expected.pop(path, None)
        assert view.pop(path, "gone") == "gone"
    assert view == expected and len(view) == len(expected) and sorted(view) == sorted(expected)
    assert set(state.latest) == set(placeholders)


@settings(max_examples=300, deadline=None)
@given(VERSIONS, st.sets(st.sampled_from(["p1", "p2"]), max_size=1), st.sets(PATHS), st.dictionaries(PATHS, LOCAL),
       st.dictionaries(PATHS, BASE), st.booleans(), st.booleans(),
       st.sampled_from(["shared", "download", "conservative", "upload"]))
def test_the_plan_from_the_view_is_the_plan_from_every_entry_built(
        versions: dict[str, tuple[int, bool, str, str | None, int, set[str]]], present: set[str],
        frozen: set[str], local: dict[str, LocalFile], base: dict[str, BaseEntry], receives: bool,
        as_entries: bool, mode: str) -> None:
    """The planner takes a path in sync from the view's version and
    acknowledgement answers alone; its plan is the one it makes from a
    dictionary of every entry built."""
    _placeholders, state = _relay_state(versions, present, as_entries)
    settings_ = cast(ClientSettings, SimpleNamespace(receives=receives, local_path="/nonexistent",
                                                     filters=SimpleNamespace(accepts_file=lambda path: True)))
    repo = cast(Repository, SimpleNamespace(client_id="me", acknowledge=lambda ph: None))
    with tempfile.TemporaryDirectory() as folder:
        db = StateDB(os.path.join(folder, "state.db"))
        try:
            view = remote_view(settings_, db, repo, state, set(frozen))
        finally:
            db.close()
    built = dict(view)
    from_view = plan(local, view, base, mode=mode, label="me")  # type: ignore[arg-type]
    from_built = plan(local, built, base, mode=mode, label="me")  # type: ignore[arg-type]
    assert from_view.actions == from_built.actions
    assert from_view.held == from_built.held and from_view.notes == from_built.notes


@settings(max_examples=200, deadline=None)
@given(VERSIONS, st.dictionaries(PATHS, st.integers(0, 4)), st.dictionaries(PATHS, BASE))
def test_the_rollback_check_freezes_what_is_behind_and_records_the_rest_as_seen(
        versions: dict[str, tuple[int, bool, str, str | None, int, set[str]]], seen_before: dict[str, int],
        base: dict[str, BaseEntry]) -> None:
    placeholders, state = _relay_state(versions, set(), as_entries=False)
    repo = cast(Repository, SimpleNamespace(client_id="me", sealer=SimpleNamespace(object_key=lambda p: "k" + p)))
    with tempfile.TemporaryDirectory() as folder:
        db = StateDB(os.path.join(folder, "state.db"))
        try:
            db.set_seen_many([("k" + path, version) for path, version in seen_before.items()])
            report = PassReport("me")
            frozen = rolled_back(db, repo, state, base, report, Announcer("me", logging.getLogger("test")))
            behind = {path for path, ph in placeholders.items()
                      if ph.version < max(seen_before.get(path, 0), base[path].version if path in base else 0)}
            missing = {path for path, entry in base.items() if path not in placeholders and entry.version > 0}
            assert frozen == behind | missing
            assert len(report.warnings) == len(frozen)
            expected = {"k" + path: version for path, version in seen_before.items()}
            for path, ph in placeholders.items():
                if path not in behind:
                    expected[ph.key] = max(expected.get(ph.key, 0), ph.version)
            assert db.seen_of_keys(["k" + path for path in set(placeholders) | set(seen_before)]) == expected
        finally:
            db.close()
