"""The versions a receiving client acknowledged in a pass, not yet written.

A pull of N files acknowledges N versions before :meth:`IndexRepository.flush_acks`
walks the index once and asks, per entry, whether it was acknowledged. A set
of N members costs 50 to 100 bytes per file (its table is kept at most
about half full and grows fourfold); this keeps the index's own records in
a list (one reference each) and answers by binary search once the list is
sorted, which it is at the first question after an addition.
"""

from __future__ import annotations

import bisect

from escale.protocol.index.objects import PackedEntry


class Acknowledged:
    """A set of acknowledged versions, each given as the index's stored
    entry (a :class:`PackedEntry` record, or an entry object where the index
    keeps one) or as a ``(key, version)`` pair.

    Membership is by equality, as in a set: a record is a member when an
    equal record (same bytes: the same entry, field for field) was added.
    Records go into a list sorted on demand; entry objects and pairs, which
    are rare (an entry that does not pack, a version the index no longer
    names), go into a set. Adding after a question is allowed (the list is
    sorted again at the next question)."""

    __slots__ = ("_others", "_records", "_sorted")

    def __init__(self) -> None:
        self._records: list[bytes] = []
        self._sorted = True
        self._others: set[object] = set()

    def add(self, member: object) -> None:
        """Add ``member`` (a stored entry or a ``(key, version)`` pair)."""
        if isinstance(member, PackedEntry):
            self._records.append(member)
            self._sorted = False
        else:
            self._others.add(member)

    def __contains__(self, member: object) -> bool:
        if isinstance(member, PackedEntry):
            records = self._records
            if not self._sorted:
                records.sort()
                self._sorted = True
            at = bisect.bisect_left(records, member)
            return at < len(records) and records[at] == member
        return member in self._others

    def __bool__(self) -> bool:
        return bool(self._records) or bool(self._others)

    def __len__(self) -> int:
        """How many additions were kept (a record added twice counts twice)."""
        return len(self._records) + len(self._others)

    def clear(self) -> None:
        """Forget every member."""
        self._records = []
        self._sorted = True
        self._others.clear()
