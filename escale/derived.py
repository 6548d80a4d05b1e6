"""A dict that keeps one object per key and hands out a value derived from it.

Used where a pass would otherwise hold a second object per tracked file: the
relay state's latest versions (built from the index layout's materialised
index, or from the placeholder layout's packed records) and the materialised
index itself. Only a memory matter: to its readers it is a dict of derived values.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, ValuesView
from typing import Any, Generic, TypeVar, cast

V = TypeVar("V")


class DerivedDict(dict[str, V], Generic[V]):
    """A dict of ``str`` to ``V`` that stores a *source* object per key and
    builds the value each time it is read (``[]``, ``get``, ``pop``,
    ``values``, ``items``, ``copy``, ``==``, ``dict(d)``, ``{**d}``) with
    :meth:`derive`, which must give equal values for the same source whenever
    it is called. :meth:`store` puts a source; what ``d[key] = value`` does is
    the subclass's choice. Iterating, ``in`` and ``len`` see the keys."""

    def derive(self, source: Any) -> V:
        """The value of ``source`` (one of the stored objects)."""
        raise NotImplementedError

    def store(self, key: str, source: object) -> None:
        """Keep ``source`` for ``key``; read back as ``derive(source)``."""
        dict.__setitem__(self, key, cast(V, source))  # the source, not a value: see derive

    def source(self, key: str) -> Any:
        """The object stored for ``key`` (KeyError if none)."""
        return dict.__getitem__(self, key)

    def __getitem__(self, key: str) -> V:
        return self.derive(dict.__getitem__(self, key))

    def get(self, key: str, default: Any = None) -> Any:
        stored = dict.get(self, key)
        return default if stored is None else self.derive(stored)

    def pop(self, key: str, *default: Any) -> Any:
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        return self.derive(dict.pop(self, key))

    def popitem(self) -> tuple[str, V]:
        key, stored = dict.popitem(self)
        return key, self.derive(stored)

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def __iter__(self) -> Iterator[str]:
        # defined so that dict(d), {**d} and d2.update(d) go through __getitem__
        return dict.__iter__(self)

    def values(self) -> ValuesView[V]:  # type: ignore[override]
        return ValuesView(self)

    def items(self) -> ItemsView[str, V]:  # type: ignore[override]
        return ItemsView(self)

    def copy(self) -> dict[str, V]:
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict) and dict(self.items()) == dict(other.items())

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.items())!r})"
