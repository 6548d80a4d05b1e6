"""The relay state of the index layout: versions and acknowledgements read
from the materialised index when asked, never copied per path.

In the placeholder layout, :class:`~escale.protocol.repository.RelayState`
holds what a listing of ``meta/`` and ``acks/`` showed: a version per key and
the acknowledging clients per version, one dict entry each. In the index
layout both follow from what the repository already holds: the index entry of
each path (its key, version, index generation and pusher) and one
acknowledgement record per receiver (the generation it processed up to, less
the versions it still misses). :class:`IndexRelayState` answers
``versions`` and ``acks`` from those, so that a pass over 100,000 files does
not keep 100,000 key strings, (key, version) pairs and dict slots besides the
index (the issue's per-file memory budget).

The two views are read-only: the index changes only through the repository's
commits (which update the entries these views read), the acknowledgements only
through records. Writing to them raises TypeError: a caller written for the
placeholder layout's listings is a bug here, not something to absorb.

Look-ups by path (:meth:`IndexRelayState.acks_of`,
:meth:`IndexRelayState.next_version`) read that path's entry. Look-ups by key
alone (``versions.get(key)``, ``acks.get((key, version))``: whole-repository
operations such as a conversion) go through a key-to-path table built on the
first such look-up and kept for the state's life.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import NoReturn

from escale.protocol.index.objects import AckRecord, Brief, PackedEntry, PackedIndex
from escale.protocol.objects import Placeholder
from escale.protocol.repository import RelayState

__all__ = ["IndexRelayState"]

_NOBODY: frozenset[str] = frozenset()


def _read_only(what: str) -> NoReturn:
    raise TypeError(f"the index layout's {what} are read from its index and records; they are not set")


class IndexRelayState(RelayState):
    """A :class:`RelayState` whose ``versions`` and ``acks`` are views of
    ``index`` (the repository's materialised index, path to entry) and of the
    receivers' acknowledgement records (:meth:`use_records`).

    ``versions``: one version per key, the entry's. ``acks``: the clients
    whose record acknowledges (key, version): a record of a client other than
    the pusher, at or above the entry's index generation, that does not list
    the version as missing; tombstones are acknowledged by nobody. Versions
    acknowledged by the same clients share one frozenset.
    """

    def __init__(self, index: PackedIndex) -> None:
        super().__init__()
        self._index = index
        self._records: list[tuple[str, frozenset[tuple[str, int]], int]] = []
        self._shared: dict[tuple[str, ...], frozenset[str]] = {}
        self._paths: dict[str, str] | None = None
        self._paths_of = 0  # how many entries the key-to-path table was built on
        #: versions a caller declared taken above a key's entry (add_version): the
        #: next commit of that key goes above them (``escalectl fix`` re-sending a
        #: rolled-back file above the version its clients saw)
        self._floors: dict[str, int] = {}
        self.versions = _Versions(self)  # type: ignore[assignment]
        self.acks = _Acks(self)  # type: ignore[assignment]

    def take(self, fresh: IndexRelayState) -> None:
        """Hold what ``fresh`` holds (its own containers, not copies), with
        views of this state's own: whoever holds this state sees the new
        reading."""
        self.__dict__.update(fresh.__dict__)
        self.versions = _Versions(self)  # type: ignore[assignment]
        self.acks = _Acks(self)  # type: ignore[assignment]

    def use_index(self, index: PackedIndex) -> None:
        """Read the versions and acknowledgements from ``index`` from now on:
        the repository's materialised index when it replaced the one this
        state was made with (a checkpoint read to catch up). Reading the
        replaced one would show the versions and acknowledgements of before
        the checkpoint (none, for a new client): a commit numbered from them
        would reuse a version the index holds."""
        if index is not self._index:
            self._index = index
            self._paths, self._paths_of = None, 0

    def use_records(self, records: Mapping[str, AckRecord]) -> None:
        """Count the acknowledgements of ``records`` (client to its newest
        record) from now on."""
        self._records = [(client, frozenset(r.missing), r.generation) for client, r in sorted(records.items())]

    # ----------------------------------------------------------- by path

    def acks_of(self, placeholder: Placeholder) -> frozenset[str]:
        brief = self._brief(placeholder.path)
        if brief is None or brief[0] != placeholder.key or brief[1] != placeholder.version:
            return _NOBODY
        return self._acknowledgers(brief)

    def acked_by_another(self, path: str, stored: object, client: str) -> bool:
        """As :meth:`RelayState.acked_by_another`; for ``path``'s own record
        in the index (the common case), read from its head and the records,
        stopping at the first client that acknowledged it (no set built,
        the key spelled only when a record lists versions it misses)."""
        if type(stored) is not PackedEntry or self._index.stored(path) is not stored:
            return super().acked_by_another(path, stored, client)
        raw_key, version, generation, tombstone = stored.head()
        if tombstone:
            return False
        pusher, key = stored.pusher, None
        for other, missing, top in self._records:
            if other in (client, pusher) or generation > top:
                continue
            if missing:
                if key is None:
                    key = raw_key.hex()
                if (key, version) in missing:
                    continue
            return True
        return False

    def lists(self, key: str, path: str) -> bool:
        """Whether the index holds an entry for ``path`` (of ``key``): the
        index layout lists nothing that its index does not hold."""
        brief = self._brief(path)
        return brief is not None and brief[0] == key

    def next_version(self, key: str, path: str) -> int:
        """The number of ``path``'s next commit: above its entry's version
        (1 for a path the index does not hold) and above a version declared
        with :meth:`add_version`. The index holds one version per path, so no
        listed version can lie above it."""
        brief = self._brief(path)
        top = 0 if brief is None or brief[0] != key else brief[1]
        return self._version_above(max(top, self._floors.get(key, 0)), key, path)

    def add_version(self, key: str, version: int) -> None:
        """Declare ``version`` of ``key`` taken: :meth:`latest_version` and
        :meth:`next_version` count it until :meth:`remove_version`. The
        index and its views are not changed."""
        self._floors[key] = max(version, self._floors.get(key, 0))

    def remove_version(self, key: str, version: int) -> None:
        """Take back :meth:`add_version` of ``version``."""
        if self._floors.get(key) == version:
            del self._floors[key]

    def latest_version(self, key: str) -> int:
        return max(super().latest_version(key), self._floors.get(key, 0))

    def superseded(self) -> list[tuple[str, int]]:
        """None: the index holds one version per path, the latest."""
        return []

    # ----------------------------------------------------------- by key

    def _brief(self, path: str) -> Brief | None:
        stored = self._index.stored(path)
        return None if stored is None else stored.brief()

    def _path_of(self, key: str) -> str | None:
        """The path whose entry has ``key`` (None if none); the table is
        built on the first call and again when the index grew since."""
        if self._paths is None or (key not in self._paths and self._paths_of != len(self._index)):
            self._paths = {stored.brief()[0]: path for path, stored in self._index.stored_items()}
            self._paths_of = len(self._index)
        return self._paths.get(key)

    def _brief_of_key(self, key: str) -> Brief | None:
        path = self._path_of(key)
        brief = None if path is None else self._brief(path)
        return brief if brief is not None and brief[0] == key else None

    def _acknowledgers(self, brief: Brief) -> frozenset[str]:
        key, version, generation, kind, pusher = brief[:5]
        if kind != "file":
            return _NOBODY
        clients = tuple(client for client, missing, top in self._records
                        if generation <= top and client != pusher and (key, version) not in missing)
        if not clients:
            return _NOBODY
        group = self._shared.get(clients)
        if group is None:
            group = self._shared[clients] = frozenset(clients)
        return group


class _Versions(MutableMapping[str, "int | tuple[int, ...]"]):
    """``RelayState.versions`` of the index layout (see the module)."""

    def __init__(self, state: IndexRelayState) -> None:
        self._state = state

    def __getitem__(self, key: str) -> int:
        brief = self._state._brief_of_key(key)
        if brief is None:
            raise KeyError(key)
        return brief[1]

    def __iter__(self) -> Iterator[str]:
        return (stored.brief()[0] for stored in self._state._index.stored_values())

    def __len__(self) -> int:
        return len(self._state._index)

    def __setitem__(self, key: str, value: int | tuple[int, ...]) -> None:
        _read_only("versions")

    def __delitem__(self, key: str) -> None:
        _read_only("versions")


class _Acks(MutableMapping[tuple[str, int], frozenset[str]]):
    """``RelayState.acks`` of the index layout: only the versions that some
    client acknowledged are keys (see the module)."""

    def __init__(self, state: IndexRelayState) -> None:
        self._state = state

    def __getitem__(self, pair: tuple[str, int]) -> frozenset[str]:
        key, version = pair
        brief = self._state._brief_of_key(key)
        group = _NOBODY if brief is None or brief[1] != version else self._state._acknowledgers(brief)
        if not group:
            raise KeyError(pair)
        return group

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for stored in self._state._index.stored_values():
            brief = stored.brief()
            if self._state._acknowledgers(brief):
                yield brief[0], brief[1]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, pair: tuple[str, int], value: frozenset[str]) -> None:
        _read_only("acknowledgements")

    def __delitem__(self, pair: tuple[str, int]) -> None:
        _read_only("acknowledgements")
