"""The planner: a pure function from three views of a folder to actions.

Inputs, per relative path: the local file now (:class:`LocalFile`), the relay's
latest placeholder (:class:`RemoteEntry`) and the last state both sides agreed on
(:class:`BaseEntry`, from the state database). Plus the client's mode and the
per-file access modifiers. Output: a :class:`Plan`. No I/O happens here; every
rule is a branch of :func:`plan_path` and has a table-driven test.

Comparison is three-way. A side *changed* when it differs from the base: the
local file by content (checksum when both are known, else size and mtime), the
relay by version number. A change on one side propagates; a change on both is a
conflict, in which no version is lost: the relay's version, already committed,
keeps the name, and the local one becomes a *conflict copy* named
:func:`conflict_name` (deterministic: the same conflict always gives the same
name).

Modes (overridden per file by access modifiers ``r+``/``r-``, ``w+``/``w-``):

============  ===========  ==============================  =====================
mode          sends        may replace or delete local     applies remote deletions
============  ===========  ==============================  =====================
shared        yes          yes, unless changed here        yes
download      no           yes, unless changed here        yes
conservative  yes          only files that came from       only those files
                           another client, never changed
                           here
upload        yes          never                           never
============  ===========  ==============================  =====================

Only ``shared`` clients turn local deletions into relay tombstones; the others
keep a note that the file is gone locally and do not fetch that version again.
Whether a mode sends, and whether it writes relay files here at all, is stated
once in :func:`escale.config.settings.mode_sends` and
:func:`~escale.config.settings.mode_receives`; the rules below call them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import FrozenInstanceError, dataclass, field, replace
from typing import Literal

from escale.config.settings import Mode, mode_receives, mode_sends
from escale.sync import records


class _Value:
    """A frozen value of the fields its :meth:`fields` gives: equal and
    hashed by them (an instance of the same class only), never changed."""

    __slots__ = ()

    def fields(self) -> tuple[object, ...]:
        raise NotImplementedError

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _Value)
        return self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(self.fields())


class LocalFile(_Value):
    """A local file as scanned. ``checksum`` is None with ``checksum = no``.

    ``inode`` and ``ctime_ns``: the file's identity when the scan took its
    checksum, recorded only where hashing it again would cost (see
    :data:`escale.sync.scanner.IDENTITY_MIN_SIZE`) and where any later write
    must change the ctime; 0 otherwise. A pusher that finds the file it reads
    with this identity (and this size and mtime) before and after reading it
    may take ``checksum`` for what it read instead of hashing it again.

    An immutable value with the fields ``size``, ``mtime_ns``, ``checksum``,
    ``inode``, ``ctime_ns`` (equal and hashed by them, as a frozen
    dataclass). It holds them packed in one ``bytes`` record
    (:mod:`escale.sync.records`), possibly shared with the scan's map and the
    base entry's record, and reads each field from it when asked; a value
    without an exact record (see :func:`~escale.sync.records.pack_local`)
    holds a tuple of its fields instead."""

    __slots__ = ("_record",)
    __match_args__ = ("size", "mtime_ns", "checksum", "inode", "ctime_ns")
    _record: bytes | tuple[int, int, str | None, int, int]

    def __init__(self, size: int, mtime_ns: int, checksum: str | None = None, inode: int = 0,
                 ctime_ns: int = 0) -> None:
        record = records.pack_local(size, mtime_ns, checksum, inode, ctime_ns)
        object.__setattr__(self, "_record", (size, mtime_ns, checksum, inode, ctime_ns) if record is None else record)

    @classmethod
    def of_record(cls, record: bytes) -> LocalFile:
        """The file a record packs (a local file's, or a base entry's: then
        without identity); the record is kept, not copied."""
        local = object.__new__(cls)
        object.__setattr__(local, "_record", record)
        return local

    @property
    def record(self) -> bytes | None:
        """The packed record behind this value (None: held as a tuple)."""
        record = self._record
        return record if isinstance(record, bytes) else None

    @property
    def size(self) -> int:
        record = self._record
        return records.size_mtime(record)[0] if isinstance(record, bytes) else record[0]

    @property
    def mtime_ns(self) -> int:
        record = self._record
        return records.size_mtime(record)[1] if isinstance(record, bytes) else record[1]

    @property
    def checksum(self) -> str | None:
        # decoded at each read, never kept: a plan holds a value per file for
        # the whole pass, and the text is larger than the record it comes from
        record = self._record
        return records.checksum_of(record) if isinstance(record, bytes) else record[2]

    @property
    def inode(self) -> int:
        record = self._record
        return records.identity_of(record)[0] if isinstance(record, bytes) else record[3]

    @property
    def ctime_ns(self) -> int:
        record = self._record
        return records.identity_of(record)[1] if isinstance(record, bytes) else record[4]

    def fields(self) -> tuple[int, int, str | None, int, int]:
        """``(size, mtime_ns, checksum, inode, ctime_ns)``."""
        record = self._record
        return records.unpack_local(record) if isinstance(record, bytes) else record

    def __repr__(self) -> str:
        size, mtime_ns, checksum, inode, ctime_ns = self.fields()
        return (f"LocalFile(size={size!r}, mtime_ns={mtime_ns!r}, checksum={checksum!r}, inode={inode!r}, "
                f"ctime_ns={ctime_ns!r})")

    def __reduce__(self) -> tuple[type[LocalFile], tuple[int, int, str | None, int, int]]:
        return LocalFile, self.fields()


@dataclass(frozen=True, slots=True)
class RemoteEntry:
    """The relay's latest version of a path, as far as the planner cares."""

    version: int
    deleted: bool
    pusher: str
    pusher_label: str
    size: int
    mtime_ns: int
    checksum: str | None
    available: bool  # payload still on the relay
    acked: bool  # this client already acknowledged this version
    expects_me: bool  # this client must acknowledge it (a receiver, not the pusher)
    deliberate: bool = False  # a tombstone allowed past its pusher's mass-deletion guard


@dataclass(frozen=True, slots=True)
class BaseEntry:
    """What this client last synced for a path.

    ``version`` is the relay version it agreed with; ``origin`` says whether the
    content came from this client (``local``) or another (``remote``);
    ``modified_here`` whether it was ever changed here since it came;
    ``local_deleted`` that the file is known to be gone locally on purpose.
    """

    size: int
    mtime_ns: int
    checksum: str | None
    version: int
    origin: Literal["local", "remote"] = "local"
    modified_here: bool = False
    local_deleted: bool = False


@dataclass(frozen=True)
class Access:
    """Per-file modifiers: True (``+``), False (``-``) or None (unset)."""

    read: bool | None = None
    write: bool | None = None


ActionKind = Literal[
    "push",  # send the local file as the path's next version
    "push_delete",  # commit a tombstone for the path
    "push_copy",  # send the local file under the conflict-copy path (upload mode)
    "pull",  # fetch the relay version into the path (replacing local if expected)
    "pull_copy",  # fetch the relay version into the conflict-copy path
    "conflict",  # rename local to the conflict copy, then pull into the path
    "delete_local",  # apply a relay tombstone to the local file
    "record",  # update the base without any transfer
    "forget",  # drop the base entry
    "ack",  # acknowledge the relay version without transfer
    "diverged",  # report: the relay's newer version can no longer be fetched here
]


#: the fields of an :class:`Action`, in the order of its constructor's parameters
ACTION_FIELDS = ("kind", "path", "expect_local", "expect_version", "copy_path", "base", "ack", "reason",
                 "deliberate", "copy_base")
#: the rarely set fields of an :class:`Action` (copy_path, base, ack, deliberate,
#: copy_base) when only the flags may differ from their defaults: one tuple
#: shared by every action of each combination, by (ack, deliberate)
_FLAGS_ONLY = {(ack, deliberate): (None, None, ack, deliberate, None)
               for ack in (False, True) for deliberate in (False, True)}


class Action(_Value):
    """One step for the executor.

    ``expect_local`` is the local file the plan was made against (None: absent);
    the executor re-checks it right before touching the local file and skips the
    action if the file changed meanwhile. ``expect_version`` is the relay
    version the plan saw (0: none); pushes are skipped if it moved.
    ``base`` is the base entry to store after ``record``. ``copy_base``
    (``conflict``): the base entry to store for ``copy_path`` once the local
    file is renamed there, when that file is a copy of a relay version.
    ``ack``: also acknowledge the relay version once done. ``deliberate``
    (``push_delete``): allowed past the mass-deletion guard (marked on the
    relay).

    An immutable value, equal and hashed by its fields as a frozen dataclass
    would be; :meth:`replace` gives a copy with some fields changed. A plan
    holds one per file to send or receive on a first sync, for the whole
    pass: it keeps the local file's packed record (shared with the scan)
    rather than a :class:`LocalFile` object, and the fields that most actions
    leave at their defaults in a tuple shared by all such actions."""

    __slots__ = ("_local", "_more", "expect_version", "kind", "path", "reason")
    kind: ActionKind
    path: str
    _local: LocalFile | bytes | None
    expect_version: int
    reason: str
    _more: tuple[str | None, BaseEntry | None, bool, bool, BaseEntry | None]

    def __init__(self, kind: ActionKind, path: str, expect_local: LocalFile | None = None, expect_version: int = 0,
                 copy_path: str | None = None, base: BaseEntry | None = None, ack: bool = False, reason: str = "",
                 deliberate: bool = False, copy_base: BaseEntry | None = None) -> None:
        record = expect_local.record if expect_local is not None else None
        shared = copy_path is None and base is None and copy_base is None
        set_field = object.__setattr__
        set_field(self, "kind", kind)
        set_field(self, "path", path)
        set_field(self, "_local", record if record is not None else expect_local)
        set_field(self, "expect_version", expect_version)
        set_field(self, "reason", reason)
        set_field(self, "_more", _FLAGS_ONLY[bool(ack), bool(deliberate)] if shared and type(ack) is bool
                  and type(deliberate) is bool else (copy_path, base, ack, deliberate, copy_base))

    @property
    def expect_local(self) -> LocalFile | None:
        local = self._local
        return LocalFile.of_record(local) if isinstance(local, bytes) else local

    @property
    def copy_path(self) -> str | None:
        return self._more[0]

    @property
    def base(self) -> BaseEntry | None:
        return self._more[1]

    @property
    def ack(self) -> bool:
        return self._more[2]

    @property
    def deliberate(self) -> bool:
        return self._more[3]

    @property
    def copy_base(self) -> BaseEntry | None:
        return self._more[4]

    def fields(self) -> tuple[object, ...]:
        """Every field, in the order of :data:`ACTION_FIELDS` (the
        constructor's parameters)."""
        copy_path, base, ack, deliberate, copy_base = self._more
        return (self.kind, self.path, self.expect_local, self.expect_version, copy_path, base, ack, self.reason,
                deliberate, copy_base)

    def replace(self, **changes: object) -> Action:
        """A copy with the fields named in ``changes`` set to their values."""
        unknown = set(changes) - set(ACTION_FIELDS)
        if unknown:
            raise TypeError(f"Action has no field {sorted(unknown)[0]!r}")
        values = dict(zip(ACTION_FIELDS, self.fields(), strict=True))
        values.update(changes)
        return Action(**values)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(ACTION_FIELDS, self.fields(), strict=True))
        return f"Action({shown})"

    def __reduce__(self) -> tuple[type[Action], tuple[object, ...]]:
        return Action, self.fields()


@dataclass
class Plan:
    """Actions in execution order, plus deletions held back by the guard."""

    actions: list[Action] = field(default_factory=list)
    held: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of_kind(self, *kinds: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    @property
    def needs_lease(self) -> bool:
        return any(a.kind in _SENDS for a in self.actions)

    def split_for_upload_priority(self) -> tuple[Plan, Plan]:
        """For ``priority = upload``: (what may run before the local phase,
        the sends that must wait for it). A send of a path that this plan
        also receives (conservative mode keeps the relay's version as a copy
        and sends its own) waits: sent first, it would replace on the relay
        the version the receive has yet to fetch, and that version would be
        lost everywhere. The first plan keeps every other action, in order;
        the second holds only the sends that wait."""
        received = {a.path for a in self.actions if a.kind in RECEIVES}
        later = [a for a in self.actions if a.kind in _SENDS and a.path in received]
        if not later:
            return self, Plan()
        waiting = {id(a) for a in later}
        first = Plan(actions=[a for a in self.actions if id(a) not in waiting], held=self.held, notes=self.notes)
        return first, Plan(actions=later)


_SENDS = frozenset({"push", "push_delete", "push_copy"})
#: the kinds of action that receive a relay version into the local folder
RECEIVES: frozenset[ActionKind] = frozenset({"pull", "pull_copy", "conflict"})


# --------------------------------------------------------------------------- helpers


def same_content(a: LocalFile | BaseEntry | RemoteEntry, b: LocalFile | BaseEntry | RemoteEntry) -> bool:
    """Equal content: by checksum when both have one of the same algorithm,
    else by size and mtime (two checksums of different algorithms say nothing
    about each other: comparing them would make equal files look changed)."""
    if (a.checksum is not None and b.checksum is not None
            and a.checksum.partition(":")[0] == b.checksum.partition(":")[0]):
        return a.checksum == b.checksum
    return a.size == b.size and a.mtime_ns == b.mtime_ns


#: Longest file name (one path component) most filesystems accept, in bytes.
NAME_MAX = 255
_LABEL_MAX = 64  # bytes of the client label kept in a conflict name
_STEM_MIN = 16  # bytes of the original name kept before the extension is cut


def _cut(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that is at most ``limit`` bytes of UTF-8
    (cut at a character boundary)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[: max(limit, 0)].decode("utf-8", "ignore")


def conflict_name(path: str, label: str, content_id: str) -> str:
    """The deterministic conflict-copy path: ``dir/name.conflict-<label>-<id8>.ext``.

    ``content_id`` identifies the losing content (its checksum, or size and
    mtime); the same conflict therefore always yields the same name, and
    different contents give different names. The last component is at most
    :data:`NAME_MAX` bytes of UTF-8, so the copy can be created wherever the
    original could: when it would be longer, the name before the extension is
    shortened (at a character boundary); the ``.conflict-<label>-<id8>`` marker
    and the extension are kept, except that a label is cut to 64 bytes and an
    extension so long that fewer than 16 bytes of the name would remain is cut
    as well.
    """
    folder, _, base = path.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not stem:  # no extension, or a dot-file like ".bashrc"
        stem, dot, ext = base, "", ""
    safe_label = "".join(c if c.isalnum() or c in "-_@" else "_" for c in label) or "client"
    short = hashlib.sha256(content_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    marker = f".conflict-{_cut(safe_label, _LABEL_MAX)}-{short}"

    def size(text: str) -> int:
        return len(text.encode("utf-8", "surrogatepass"))

    suffix = f"{dot}{ext}"
    room = NAME_MAX - size(marker)
    if size(stem) + size(suffix) > room:
        suffix = _cut(suffix, room - min(size(stem), _STEM_MIN))
        stem = _cut(stem, room - size(suffix))
    name = f"{stem}{marker}{suffix}"
    return f"{folder}/{name}" if folder else name


def _content_id(entry: LocalFile | RemoteEntry) -> str:
    return entry.checksum or f"{entry.size}:{entry.mtime_ns}"


def _may_send(mode: Mode, access: Access) -> bool:
    """Whether the client may send this file: its ``r`` modifier, else its mode."""
    if access.read is not None:
        return access.read
    return mode_sends(mode)


def _may_write(mode: Mode, access: Access) -> bool:
    """Whether the client may create local files from the relay at all: the
    file's ``w`` modifier, else its mode."""
    if access.write is not None:
        return access.write
    return mode_receives(mode)


def _may_replace(mode: Mode, access: Access, base: BaseEntry | None) -> bool:
    """Whether an existing, locally unchanged file may be replaced or deleted."""
    if access.write is not None:
        return access.write
    if mode == "upload":
        return False
    if mode == "conservative":
        return base is not None and base.origin == "remote" and not base.modified_here
    return True


def _base_from_remote(remote: RemoteEntry, local: LocalFile | None, origin: Literal["local", "remote"]) -> BaseEntry:
    if local is not None:
        return BaseEntry(local.size, local.mtime_ns, local.checksum or remote.checksum, remote.version, origin)
    return BaseEntry(remote.size, remote.mtime_ns, remote.checksum, remote.version, origin)


def _local_changed(local: LocalFile | None, base: BaseEntry) -> bool:
    if local is None:
        return not base.local_deleted
    if base.local_deleted:
        return True
    return not same_content(local, base)


# --------------------------------------------------------------------------- rules


def plan_path(
    path: str,
    local: LocalFile | None,
    remote: RemoteEntry | None,
    base: BaseEntry | None,
    *,
    mode: Mode,
    label: str,
    access: Access = Access(),
) -> list[Action]:
    """The actions for one path. See the module docstring for the rules."""
    send = _may_send(mode, access)
    write = _may_write(mode, access)
    relay_version = remote.version if remote is not None else 0
    ack = remote is not None and remote.expects_me and not remote.acked and not remote.deleted

    def decline(reason: str, new_base: BaseEntry | None) -> list[Action]:
        """Keep local as it is, note the relay version as seen, acknowledge it."""
        out = []
        if new_base is not None:
            out.append(Action("record", path, expect_local=local, expect_version=relay_version, base=new_base,
                              reason=reason))
        if ack:
            out.append(Action("ack", path, expect_version=relay_version, reason=reason))
        return out

    def push(reason: str) -> list[Action]:
        return [Action("push", path, expect_local=local, expect_version=relay_version, reason=reason)]

    # ---- never synced before
    if base is None:
        if local is not None and (remote is None or remote.deleted):
            return push("new local file") if send else []
        if local is None and remote is not None and not remote.deleted:
            if write and remote.available:
                return [Action("pull", path, expect_local=None, expect_version=relay_version, ack=ack,
                               reason="new relay file")]
            if not write:
                return decline("not accepted here", None)
            return []  # payload already reclaimed: nothing to fetch
        if local is not None and remote is not None and not remote.deleted:
            if same_content(local, remote):
                origin: Literal["local", "remote"] = "local"
                return decline("identical on both sides", _base_from_remote(remote, local, origin))
            return _conflict(path, local, remote, base, mode, access, label, send, write, ack)
        return []

    prefix: list[Action] = []
    if (remote is not None and not remote.deleted and remote.version != base.version
            and not base.local_deleted and same_content(remote, base)):
        # the relay moved to a new version holding the content last synced here
        # (``escalectl fix``, or an identical re-push): only the number changed
        base = replace(base, version=remote.version)
        prefix = [Action("record", path, expect_local=local, expect_version=relay_version, base=base,
                         reason="relay version renumbered, same content")]
    return prefix + _plan_synced(path, local, remote, base, mode=mode, access=access, label=label,
                                 send=send, write=write, ack=ack, decline=decline, push=push)


def _in_sync(path: str, version: int, ack: bool) -> list[Action]:
    """The actions for a path in sync at relay ``version`` (the local file
    and the relay as last synced): its acknowledgement when one is due."""
    if ack:
        return [Action("ack", path, expect_version=version, reason="acknowledgement missing")]
    return []


def _plan_synced(
    path: str,
    local: LocalFile | None,
    remote: RemoteEntry | None,
    base: BaseEntry,
    *,
    mode: Mode,
    access: Access,
    label: str,
    send: bool,
    write: bool,
    ack: bool,
    decline: Callable[[str, BaseEntry | None], list[Action]],
    push: Callable[[str], list[Action]],
) -> list[Action]:
    """The rules for a path synced before (``base`` known)."""
    relay_version = remote.version if remote is not None else 0
    local_changed = _local_changed(local, base)
    relay_changed = remote is None or remote.version != base.version

    # ---- in sync
    if not local_changed and not relay_changed:
        return _in_sync(path, relay_version, ack)

    # ---- only the local side changed
    if local_changed and not relay_changed:
        assert remote is not None
        if local is not None:
            if send:
                return push("modified locally" if not base.local_deleted else "recreated locally")
            if base.origin == "remote" and not base.modified_here:
                return [Action("record", path, expect_local=local, expect_version=relay_version,
                               base=_replace_base(base, modified_here=True), reason="modified locally")]
            return []
        if mode == "shared" and send and not remote.deleted:
            return [Action("push_delete", path, expect_local=None, expect_version=relay_version,
                           reason="deleted locally")]
        return [Action("record", path, expect_local=None, expect_version=relay_version,
                       base=_replace_base(base, local_deleted=True), reason="deleted locally, kept on relay")]

    # ---- only the relay side changed
    if not local_changed and relay_changed:
        if remote is None:
            if base.version == 0 and local is not None:
                # a copy of another client's version made here, never on the relay under this name
                return push("copy of a relay version") if send else []
            # the relay lost this path's metadata
            if local is not None and send:
                return push("missing on relay")
            return [Action("forget", path, reason="gone on both sides")]
        if remote.deleted:
            if local is None:
                return [Action("forget", path, reason="deleted on both sides")]
            if _may_replace(mode, access, base):
                return [Action("delete_local", path, expect_local=local, expect_version=relay_version,
                               reason=f"deleted by {remote.pusher_label}")]
            return decline("remote deletion not applied here", _replace_base(base, version=relay_version))
        if local is not None and same_content(local, remote):
            return decline("already identical", _replace_base(base, version=relay_version))
        if base.local_deleted and local is None:
            if write and remote.available:
                return [Action("pull", path, expect_local=None, expect_version=relay_version, ack=ack,
                               reason=f"new version from {remote.pusher_label}")]
            # the base keeps the version last agreed on: a re-creation here does
            # not descend from ``relay_version`` and must not replace it (conflict)
            return decline("not accepted here", base)
        if _may_replace(mode, access, base) and remote.available:
            return [Action("pull", path, expect_local=local, expect_version=relay_version, ack=ack,
                           reason=f"modified by {remote.pusher_label}")]
        if not _may_replace(mode, access, base) and mode == "conservative" and remote.available and write:
            copy = conflict_name(path, remote.pusher_label, _content_id(remote))
            return [Action("pull_copy", path, expect_local=None, expect_version=relay_version, copy_path=copy,
                           ack=ack, base=_replace_base(base, version=relay_version),
                           reason="conservative: relay version kept beside the local file")]
        if not remote.available and _may_replace(mode, access, base):
            if not remote.acked:
                return []  # reclaimed without us (puller count: reported as missed), or lost (re-sent)
            # this client declined that version earlier (an access modifier
            # refused it) and it was reclaimed since: the copies differ until a
            # newer version comes; say so rather than wait in silence
            return [Action("diverged", path, expect_local=local, expect_version=relay_version,
                           reason=f"version {relay_version} from {remote.pusher_label} was reclaimed from the "
                                  f"relay after this client declined it; the local file keeps version "
                                  f"{base.version} until a newer one comes")]
        # keep the base at the version the local content descends from: a later
        # edit here is then a conflict with ``relay_version``, never a silent
        # replacement of a version this client did not take
        return decline("local file protected", base)

    # ---- both sides changed
    if remote is None:
        if local is not None and send:
            return push("missing on relay")
        return [Action("forget", path, reason="gone")]
    if local is None:
        if remote.deleted:
            return [Action("forget", path, reason="deleted on both sides")]
        if write and remote.available:
            return [Action("pull", path, expect_local=None, expect_version=relay_version, ack=ack,
                           reason="modified remotely after local deletion")]
        return decline("deleted here", _replace_base(base, local_deleted=True))  # see "not accepted here"
    if remote.deleted:
        if send:
            return push("modified locally after remote deletion")
        return decline("kept after remote deletion", _replace_base(base, version=relay_version))
    if same_content(local, remote):
        return decline("same change on both sides", _base_from_remote(remote, local, base.origin))
    return _conflict(path, local, remote, base, mode, access, label, send, write, ack)


def _replace_base(base: BaseEntry, **changes: object) -> BaseEntry:
    return replace(base, **changes)  # type: ignore[arg-type]


def _conflict(
    path: str,
    local: LocalFile,
    remote: RemoteEntry,
    base: BaseEntry | None,
    mode: Mode,
    access: Access,
    label: str,
    send: bool,
    write: bool,
    ack: bool,
) -> list[Action]:
    """Both sides hold different content: keep both, never lose one."""
    relay_version = remote.version
    local_copy = conflict_name(path, label, _content_id(local))
    if mode == "conservative" or (access.write is False and write is False):
        actions: list[Action] = []
        # the relay version is kept here only when this client may write it
        kept = remote.available and _may_write(mode, access)
        if kept:
            remote_copy = conflict_name(path, remote.pusher_label, _content_id(remote))
            # without a send to record the outcome, the base records the relay version as
            # kept (beside the local content, which stays this client's own): else the
            # copy would be fetched again at every pass, until its payload is reclaimed
            kept_base = None if send else BaseEntry(local.size, local.mtime_ns, local.checksum, relay_version,
                                                    "local", modified_here=True)
            actions.append(Action("pull_copy", path, expect_local=None, expect_version=relay_version,
                                  copy_path=remote_copy, ack=ack, base=kept_base,
                                  reason="conflict: relay version as copy"))
        elif ack:
            actions.append(Action("ack", path, expect_version=relay_version, reason="conflict"))
        if send and kept:
            # the relay version is kept here as a copy (and sent on from here)
            actions.append(Action("push", path, expect_local=local, expect_version=relay_version,
                                  reason="conflict: local version kept and sent"))
        elif send:
            # the relay version is not kept here (reclaimed before this client could
            # keep a copy, or refused by a ``w-`` modifier): sending ours over it would
            # replace it on every other client without a copy anywhere, so ours goes
            # out as a conflict copy and the base stays where it descends from
            actions.append(Action("push_copy", path, expect_local=local, expect_version=relay_version,
                                  copy_path=local_copy, reason="conflict: local version sent as a copy"))
            actions.append(Action("record", path, expect_local=local, expect_version=relay_version,
                                  base=BaseEntry(local.size, local.mtime_ns, local.checksum,
                                                 base.version if base else 0, "local", modified_here=True),
                                  reason="conflict"))
        return actions
    if not write:  # upload mode: local files are never modified
        if not send:
            return []
        return [
            Action("push_copy", path, expect_local=local, expect_version=relay_version, copy_path=local_copy,
                   reason="conflict: local version sent as a copy"),
            # the local content does not descend from ``relay_version``: the base keeps the
            # version it descends from, so the next edit is a conflict again
            Action("record", path, expect_local=local, expect_version=relay_version,
                   base=BaseEntry(local.size, local.mtime_ns, local.checksum, base.version if base else 0,
                                  "local"),
                   reason="conflict"),
        ]
    if remote.available:
        return [Action("conflict", path, expect_local=local, expect_version=relay_version, copy_path=local_copy,
                       ack=ack, reason=f"conflict with {remote.pusher_label}")]
    # the relay version can no longer be fetched: keep ours as a copy, leave the name free
    return [Action("conflict", path, expect_local=local, expect_version=relay_version, copy_path=local_copy,
                   ack=ack, base=_replace_base(
                       base or BaseEntry(remote.size, remote.mtime_ns, remote.checksum, relay_version, "remote"),
                       version=relay_version, local_deleted=True),
                   reason=f"conflict with {remote.pusher_label} (its version was reclaimed)")]


def folders_of(paths: Iterable[str]) -> set[str]:
    """Every folder that holds one of ``paths`` (``a`` and ``a/b`` for
    ``a/b/c``): one string per folder, however many files it holds."""
    folders: set[str] = set()
    for path in paths:
        cut = path.rfind("/")
        while cut > 0:
            folder = path[:cut]
            if folder in folders:
                break  # its own folders are in already
            folders.add(folder)
            cut = path.rfind("/", 0, cut)
    return folders


def plan_name_taken_by_folder(
    path: str,
    local: LocalFile | None,
    remote: RemoteEntry | None,
    base: BaseEntry | None,
    *,
    mode: Mode,
    label: str,
    access: Access,
    relay_folder: bool,
) -> list[Action] | None:
    """The actions for a file whose name is a folder on the other side
    (one client made the file ``x``, another the folder ``x/``), or None when
    the ordinary rules apply. ``relay_folder``: the relay holds files under
    ``path/``; otherwise the local folder does.

    A name cannot be a file and a folder at once, so the folder keeps the
    name everywhere and the file lives on beside it as a conflict copy with
    the name the ordinary rules give it (the relay's version under its
    pusher's label, a local version never sent under this client's): every
    client ends with the same copies, and the copies travel as new files.
    Nothing is replaced: a relay version is fetched to its copy, a local file
    is renamed to its copy, and the base records the name as free here at
    the relay's version (no tombstone is sent: the relay's file stays, and
    each client keeps it aside in the same way). A client that may not write
    the path (its mode or a ``w-`` modifier) keeps the ordinary rules: it
    never renames a local file; it declines the relay's file."""
    if not _may_write(mode, access):
        return None
    live = remote is not None and not remote.deleted
    relay_version = remote.version if remote is not None else 0
    ack = live and remote is not None and remote.expects_me and not remote.acked
    if local is None:
        # the relay's file against a folder: keep it aside if it is new here
        if not live or remote is None:
            return None
        if base is not None and base.version == remote.version:
            return None  # nothing new on the relay: a local deletion follows the ordinary rules
        freed = BaseEntry(remote.size, remote.mtime_ns, remote.checksum, relay_version, "remote",
                          local_deleted=True)
        if not remote.available:
            declined = [Action("record", path, expect_local=None, expect_version=relay_version, base=freed,
                               reason="name taken by a folder (relay version already reclaimed)")]
            if ack:
                declined.append(Action("ack", path, expect_version=relay_version, reason="name taken by a folder"))
            return declined
        return [Action("pull_copy", path, expect_local=None, expect_version=relay_version,
                       copy_path=conflict_name(path, remote.pusher_label, _content_id(remote)), ack=ack,
                       base=freed, reason="name taken by a folder: relay version kept as a copy")]
    if not relay_folder:
        return None  # (a local file and a local folder of one name cannot both exist)
    if (remote is not None and remote.deleted and base is not None and not _local_changed(local, base)
            and _may_replace(mode, access, base)):
        return None  # deleted on the relay: the ordinary rules delete it here, freeing the name
    # a local file where the relay has a folder: rename it aside so the folder can come in
    if live and remote is not None and same_content(local, remote):
        # the local file is the relay's version: its copy is tracked as a copy of that
        # version (as a fetched one is), the same file as every other client's copy
        copy = conflict_name(path, remote.pusher_label, _content_id(remote))
        copy_base: BaseEntry | None = BaseEntry(local.size, local.mtime_ns, local.checksum or remote.checksum, 0,
                                                "remote")
        keep_relay: list[Action] = []
    else:
        copy = conflict_name(path, label, _content_id(local))
        copy_base = None  # this client's own content: a new local file
        keep_relay = []
        if live and remote is not None and remote.available:
            keep_relay = [Action("pull_copy", path, expect_local=None, expect_version=relay_version,
                                 copy_path=conflict_name(path, remote.pusher_label, _content_id(remote)),
                                 ack=ack, reason="name taken by a folder: relay version kept as a copy")]
    freed = BaseEntry(local.size, local.mtime_ns, local.checksum, relay_version, "local", local_deleted=True)
    return [Action("conflict", path, expect_local=local, expect_version=relay_version, copy_path=copy,
                   ack=ack and not keep_relay, base=freed, copy_base=copy_base,
                   reason="name taken by a folder on the relay"),
            *keep_relay]


# --------------------------------------------------------------------------- whole plan

_ORDER = {"conflict": 0, "pull_copy": 1, "pull": 2, "delete_local": 3, "record": 4, "forget": 5,
          "ack": 6, "diverged": 7, "push": 8, "push_copy": 9, "push_delete": 10}


def plan(
    local: Mapping[str, LocalFile],
    remote: Mapping[str, RemoteEntry],
    base: Mapping[str, BaseEntry],
    *,
    mode: Mode,
    label: str,
    access: Mapping[str, Access] | None = None,
    deletion_guard: float = 0.5,
    allow_mass_deletion: bool = False,
    local_root_missing: bool = False,
    local_folders: AbstractSet[str] | None = None,
) -> Plan:
    """Plan every path of the union of the three views.

    Mass-deletion guard: when the deletions of one kind (local files removed
    because of relay tombstones, or tombstones for local removals) number at
    least 10 and more than ``deletion_guard`` of the files tracked in the base,
    or when the local folder is missing or empty while the base tracks files
    (an unmounted disk), those deletions are held back in ``Plan.held`` and the
    rest of the plan goes ahead. ``allow_mass_deletion`` lifts the guard; the
    relay deletions it lets through are marked ``deliberate``. Local deletions
    for tombstones marked ``deliberate`` (their pusher was allowed past its own
    guard) are never held, nor counted.

    ``local_folders``: every local folder, empty ones included (the scan's
    :attr:`~escale.sync.scanner.ScanResult.folders`); when None, the folders
    of ``local``'s paths. A relay file named like one of them, or like a
    relay folder, is planned by :func:`plan_name_taken_by_folder`.
    """
    access = access or {}
    result = Plan()
    listed = getattr(remote, "live_folders", None)  # a RemoteView answers without building its entries
    relay_folders = listed() if callable(listed) else folders_of(p for p, e in remote.items() if not e.deleted)
    local_folders = folders_of(local) if local_folders is None else local_folders
    # a RemoteView tells a path's version and whether an acknowledgement is due
    # without building its entry: a path in sync is planned from those alone
    version_of = getattr(remote, "version_of", None)
    ack_due = getattr(remote, "ack_due", None)
    for path in _union_sorted(local, remote, base):
        here, agreed = local.get(path), base.get(path)
        if (agreed is not None and version_of is not None and ack_due is not None
                and path not in relay_folders and path not in local_folders
                and version_of(path) == agreed.version and not _local_changed(here, agreed)):
            # in sync (plan_path's first rule for a path synced before, whatever the mode)
            result.actions.extend(_in_sync(path, agreed.version, ack_due(path)))
            continue
        there = remote.get(path)
        path_access = access.get(path, Access())
        if path in relay_folders or path in local_folders:
            taken = plan_name_taken_by_folder(path, here, there, agreed, mode=mode, label=label,
                                              access=path_access, relay_folder=path in relay_folders)
            if taken is not None:
                result.actions.extend(taken)
                continue
        result.actions.extend(plan_path(path, here, there, agreed, mode=mode, label=label, access=path_access))
    counted = getattr(base, "tracked", None)  # a packed base counts without building its entries
    tracked = counted() if callable(counted) else sum(1 for b in base.values() if not b.local_deleted)

    def guarded(action: Action, kind: ActionKind) -> bool:
        if action.kind != kind:
            return False
        if kind != "delete_local":
            return True
        entry = remote.get(action.path)  # built on each read: only for the actions that need it
        return not (entry is not None and entry.deliberate)

    kinds: tuple[ActionKind, ...] = ("delete_local", "push_delete")
    for kind in kinds:
        doomed = [a for a in result.actions if guarded(a, kind)]
        unmounted = kind == "push_delete" and tracked > 0 and (local_root_missing or not local)
        if doomed and (unmounted or (len(doomed) >= 10 and len(doomed) > deletion_guard * tracked)):
            if allow_mass_deletion:
                if kind == "push_delete":
                    result.actions = [a.replace(deliberate=True) if a.kind == kind else a for a in result.actions]
            else:
                result.held.extend(doomed)
                result.actions = [a for a in result.actions if not guarded(a, kind)]
                result.notes.append(
                    f"held back {len(doomed)} {'local' if kind == 'delete_local' else 'relay'} deletions "
                    f"of {tracked} tracked files (mass-deletion guard)"
                )
    # the actions were made in path order and the sort is stable: sorting by kind
    # alone gives the order of (kind, path) without a key tuple per action
    result.actions.sort(key=_kind_rank)
    return result


def _kind_rank(action: Action) -> int:
    return _ORDER[action.kind]


def _union_sorted(local: Mapping[str, object], remote: Mapping[str, object], base: Mapping[str, object]) -> list[str]:
    """The paths of the three views, each once, sorted: one list of
    references to the views' own strings (no set of every path beside it)."""
    paths = list(local)
    paths.extend(p for p in remote if p not in local)
    paths.extend(p for p in base if p not in local and p not in remote)
    paths.sort()
    return paths
