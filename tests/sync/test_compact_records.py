"""The base and the scan held as packed records answer exactly as the objects did.

* every field of a :class:`LocalFile` and a :class:`BaseEntry` comes back
  from its record with its value and its type, for any values: numbers
  beyond 64 bits, checksums that are not ``algorithm:lower-case hex``
  (upper case, odd length, unknown algorithm, any text, lone surrogates)
  included, those without an exact record being held as objects;
* a :class:`LocalFile` is a value: equal, hashed, shown and frozen by its
  fields, however it is held;
* an :class:`Action` is a value too: every field given comes back, equal and
  hashed by its fields, copied with some changed by ``replace``; it keeps the
  scanned file's own record, not a second copy;
* the state database's base (:class:`BaseMap`) and the scan's files
  (:class:`LocalMap`) behave as dicts of those values, and a file unchanged
  since its base entry is held as that entry's own record.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escale.config.settings import FileFilter
from escale.sync import records
from escale.sync.planner import Action, BaseEntry, LocalFile, plan
from escale.sync.scanner import LocalMap, scan
from escale.sync.state import BaseMap, StateDB

INTS = st.integers(-(1 << 63), (1 << 63) - 1) | st.integers() | st.sampled_from([0, 1, -1, 1 << 63, -(1 << 63) - 1])
HEX = st.binary(max_size=80).map(bytes.hex)
CHECKSUMS = (
    st.none()
    | st.builds(lambda name, digits: f"{name}:{digits}", st.sampled_from([*records.ALGORITHMS, "sha3", "x"]), HEX)
    | st.builds(lambda name, digits: f"{name}:{digits.upper()}", st.sampled_from(records.ALGORITHMS), HEX)
    | st.sampled_from(["sha256:1", "sha256:", "sha256", ":", "", "sha256:ab cd", "sha256:0x12", "sha256:é"])
    | st.text()
    | st.text(alphabet=st.characters(blacklist_categories=()), max_size=8)  # lone surrogates too
)
LOCALS = st.builds(LocalFile, INTS, INTS, CHECKSUMS, INTS | st.just(0), INTS | st.just(0))
BASES = st.builds(BaseEntry, INTS, INTS, CHECKSUMS, INTS, st.sampled_from(["local", "remote"]), st.booleans(),
                  st.booleans())


def _typed(values: tuple[object, ...]) -> tuple[object, ...]:
    return tuple((type(v), v) for v in values)


@settings(max_examples=500, deadline=None)
@given(INTS, INTS, CHECKSUMS, INTS, INTS)
def test_a_local_file_gives_back_every_field_exactly(size: int, mtime_ns: int, checksum: str | None, inode: int,
                                                      ctime_ns: int) -> None:
    local = LocalFile(size, mtime_ns, checksum, inode, ctime_ns)
    expected = (size, mtime_ns, checksum, inode, ctime_ns)
    got = (local.size, local.mtime_ns, local.checksum, local.inode, local.ctime_ns)
    assert _typed(got) == _typed(expected)
    assert local == LocalFile(size, mtime_ns, checksum, inode, ctime_ns)
    assert hash(local) == hash(LocalFile(size, mtime_ns, checksum, inode, ctime_ns))
    assert repr(local) == (f"LocalFile(size={size!r}, mtime_ns={mtime_ns!r}, checksum={checksum!r}, "
                           f"inode={inode!r}, ctime_ns={ctime_ns!r})")
    assert pickle.loads(pickle.dumps(local)) == local
    record = local.record
    if record is not None:  # held packed: the map holds the record, and reads the same file back
        assert LocalFile.of_record(record) == local
    elif checksum is None or all(0xD800 > ord(c) or ord(c) > 0xDFFF for c in checksum):
        # only numbers beyond 64 bits (or text with no UTF-8 form) go without a record
        assert not all(-(1 << 63) <= v < (1 << 63) for v in (size, mtime_ns, inode, ctime_ns))


@settings(max_examples=500, deadline=None)
@given(BASES)
def test_a_base_entry_gives_back_every_field_exactly(entry: BaseEntry) -> None:
    held = BaseMap()
    held["p"] = entry
    back = held["p"]
    fields = ("size", "mtime_ns", "checksum", "version", "origin", "modified_here", "local_deleted")
    assert _typed(tuple(getattr(back, f) for f in fields)) == _typed(tuple(getattr(entry, f) for f in fields))
    assert held.tracked() == (0 if entry.local_deleted else 1)
    record = held.record("p")
    if record is not None:
        # a base record read as a local file: the same content, no identity
        assert LocalFile.of_record(record) == LocalFile(entry.size, entry.mtime_ns, entry.checksum)


def test_a_local_file_is_frozen_and_a_value() -> None:
    digest = "sha256:" + "ab" * 32
    local = LocalFile(10, 1000, digest)
    with pytest.raises(FrozenInstanceError):
        local.size = 3  # type: ignore[misc]
    assert local == LocalFile(size=10, mtime_ns=1000, checksum=digest, inode=0, ctime_ns=0)
    assert local != LocalFile(10, 1000, digest, 1, 0)
    assert local != (10, 1000, digest, 0, 0)
    assert len({local, LocalFile(10, 1000, digest)}) == 1
    # the usual checksum is held as its raw digest: the record is far smaller than the text
    assert local.record is not None and len(local.record) < 60


ACTION_FIELDS = st.fixed_dictionaries({
    "kind": st.sampled_from(["push", "pull", "conflict", "push_delete"]), "path": st.text(max_size=4),
    "expect_local": st.none() | LOCALS, "expect_version": INTS, "copy_path": st.none() | st.text(max_size=4),
    "base": st.none() | BASES, "ack": st.booleans(), "reason": st.text(max_size=4), "deliberate": st.booleans(),
    "copy_base": st.none() | BASES})


@settings(max_examples=200, deadline=None)
@given(ACTION_FIELDS, ACTION_FIELDS)
def test_an_action_is_a_value_of_its_fields(given_: dict[str, object], other: dict[str, object]) -> None:
    action = Action(**given_)  # type: ignore[arg-type]
    assert {name: getattr(action, name) for name in given_} == given_
    assert action == Action(**given_) and hash(action) == hash(Action(**given_))  # type: ignore[arg-type]
    assert (action == Action(**other)) == (given_ == other)  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(action)) == action
    assert repr(action).startswith(f"Action(kind={given_['kind']!r}, path={given_['path']!r}, ")
    changed = action.replace(**other)
    assert changed == Action(**other) and action == Action(**given_)  # type: ignore[arg-type]
    assert action.replace(deliberate=True).deliberate and action.replace().fields() == action.fields()
    with pytest.raises(TypeError):
        action.replace(size=1)
    with pytest.raises(FrozenInstanceError):
        action.kind = "pull"
    local = given_["expect_local"]
    if isinstance(local, LocalFile) and local.record is not None:
        assert action.expect_local is not None and action.expect_local.record is local.record


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=4), LOCALS), st.dictionaries(st.text(max_size=4), BASES))
def test_the_maps_behave_as_dicts_of_their_values(locals_: dict[str, LocalFile], bases: dict[str, BaseEntry]) -> None:
    local_map, base_map = LocalMap(), BaseMap()
    for path, local in locals_.items():
        local_map[path] = local
    for path, entry in bases.items():
        base_map[path] = entry
    assert local_map == locals_ and base_map == bases
    assert dict(local_map.items()) == locals_ and list(base_map.values()) == list(bases.values())
    assert base_map.tracked() == sum(1 for b in bases.values() if not b.local_deleted)
    for path in list(locals_)[:2]:
        assert local_map.pop(path) == locals_.pop(path)
        assert path not in local_map and local_map.get(path) is None
    assert local_map == locals_
    # the planner sees the same views
    assert plan(local_map, {}, base_map, mode="shared", label="me") == plan(locals_, {}, bases, mode="shared",
                                                                           label="me")


def test_the_state_database_base_round_trips(tmp_path: Path) -> None:
    db = StateDB(os.path.join(tmp_path, "state.db"))
    try:
        entries = {
            "a": BaseEntry(1, 2, "sha256:" + "0f" * 32, 3, "remote", True, False),
            "b/c": BaseEntry(0, -5, None, 1, "local", False, True),
            "d": BaseEntry(1 << 40, 1 << 62, "sha1:ABCD", 7),  # not lower-case hex: held as text
            "é": BaseEntry(4, 5, "blake2b:" + "00" * 64, 2, "local", True, True),
        }
        db.set_bases(list(entries.items()))
        base = db.base()
        assert isinstance(base, BaseMap)
        assert base == entries
        for path, entry in entries.items():
            assert base[path] == entry == db.base_entry(path)
        assert base.tracked() == 2
    finally:
        db.close()


def test_an_unchanged_file_shares_its_base_record(tmp_path: Path) -> None:
    root = tmp_path / "local"
    (root / "sub").mkdir(parents=True)
    (root / "same").write_bytes(b"kept")
    (root / "sub" / "edited").write_bytes(b"before")
    (root / "new").write_bytes(b"new")
    db = StateDB(os.path.join(tmp_path, "state.db"))
    try:
        first = scan(str(root), FileFilter(), checksum="sha256", db=db)
        db.set_bases([(p, BaseEntry(f.size, f.mtime_ns, f.checksum, 1)) for p, f in first.files.items()
                      if p != "new"])
        (root / "sub" / "edited").write_bytes(b"after!")
        base = db.base()
        again = scan(str(root), FileFilter(), checksum="sha256", db=db, known=base)
        assert again.files == {p: LocalFile(f.size, f.mtime_ns, f.checksum) for p, f in (
            (p, first.files[p]) for p in ("same", "new"))} | {"sub/edited": again.files["sub/edited"]}
        assert again.files["sub/edited"].checksum != first.files["sub/edited"].checksum
        assert again.files.source("same") is base.source("same")
        assert again.files.source("sub/edited") is not base.source("sub/edited")
        assert again.files["same"].checksum == first.files["same"].checksum == base["same"].checksum
    finally:
        db.close()
