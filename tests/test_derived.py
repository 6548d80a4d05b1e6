"""DerivedDict: a dict of derived values, whatever way it is read."""

from __future__ import annotations

from typing import Any

import pytest

from escale.derived import DerivedDict


class Doubled(DerivedDict[int]):
    """Stores n, reads 2 * n."""

    def derive(self, source: Any) -> int:
        return 2 * int(source)


def _filled() -> Doubled:
    d = Doubled()
    for key, n in (("a", 1), ("b", 2), ("c", 3)):
        d.store(key, n)
    return d


def test_every_read_gives_the_derived_value() -> None:
    d = _filled()
    expected = {"a": 2, "b": 4, "c": 6}
    assert d["a"] == 2 and d.get("b") == 4 and d.get("z") is None and d.get("z", 7) == 7
    assert dict(d) == {**d} == d.copy() == dict(d.items()) == expected
    assert sorted(d.values()) == [2, 4, 6] and list(d) == ["a", "b", "c"]
    assert d == expected
    assert d != {"a": 1}
    merged: dict[str, int] = {}
    merged.update(d)
    assert merged == expected
    assert d.source("c") == 3
    assert "Doubled(" in repr(d)


def test_removal_gives_the_derived_value_and_keeps_the_rest() -> None:
    d = _filled()
    assert d.pop("a") == 2 and d.pop("a", None) is None
    with pytest.raises(KeyError):
        d.pop("a")
    key, value = d.popitem()
    assert (key, value) == ("c", 6)
    del d["b"]
    assert len(d) == 0 and d == {}


def test_it_is_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(_filled())
