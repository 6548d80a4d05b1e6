"""The acknowledgements a pass buffers (escale.protocol.index.acked): the
same answers as a set, over any mix of additions and questions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from escale.protocol.index.acked import Acknowledged
from escale.protocol.index.objects import PackedEntry

records = st.binary(min_size=0, max_size=6).map(PackedEntry)
pairs = st.tuples(st.sampled_from(["00" * 16, "ab" * 16]), st.integers(0, 3))
members = st.one_of(records, pairs)
steps = st.lists(st.tuples(st.sampled_from(["add", "ask"]), members), max_size=60)


@given(steps)
def test_answers_as_a_set_would(script: list[tuple[str, object]]) -> None:
    acked, reference = Acknowledged(), set()
    for step, member in script:
        if step == "add":
            acked.add(member)
            reference.add(member)
        else:
            assert (member in acked) == (member in reference)
        assert bool(acked) == bool(reference)
    for _, member in script:
        assert (member in acked) == (member in reference)


def test_an_equal_record_is_a_member_and_a_pair_is_not_a_record() -> None:
    acked = Acknowledged()
    acked.add(PackedEntry(b"\x01entry"))
    acked.add(("ab" * 16, 2))
    assert PackedEntry(b"\x01entry") in acked  # another object, the same bytes
    assert PackedEntry(b"\x01entr") not in acked
    assert ("ab" * 16, 2) in acked and ("ab" * 16, 3) not in acked
    acked.clear()
    assert not acked and PackedEntry(b"\x01entry") not in acked
