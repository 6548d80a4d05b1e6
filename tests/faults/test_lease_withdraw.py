"""A contender whose put failed withdraws only once settled.

On a server without atomic create, a put of lease record ``g+1`` may land and
still fail (its answer lost: a timeout on a busy host). The contender then
withdraws: it reads the record and, if it holds its token, rewrites it as
released. Reading, then rewriting, is not atomic. A competitor that checked
before our write may overwrite it up to a settle later (rule 2 of
:mod:`escale.protocol.lease`), read it back as its own and hold the lease; a
withdrawal that read our token before that write and rewrites after it marks
the competitor's live lease released, and the next client takes the
generation above while the competitor still holds its own.

Here the competitor's write lands within the settle after our failed put, as
the settle argument allows: while we wait the settle, or, if we do not wait,
right before our withdrawal's rewrite. The record must stay the competitor's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import BinaryIO

import pytest

from escale.crypto import plain_envelope
from escale.errors import RelayConnectionError, RelayExists
from escale.protocol import layout
from escale.protocol.lease import Lease, LeaseManager, write_released
from escale.protocol.objects import LeaseRecord
from escale.relay.base import Entry
from escale.relay.memory import MemoryRelay, MemoryStore

pytestmark = pytest.mark.timeout(60)


class Weak(MemoryRelay):
    """A memory relay whose exclusive create is a check, then an overwrite.

    ``fail_after_put``: the next exclusive put lands, then raises a transient
    error (its answer lost). ``before_put``: called once before the next
    plain put (a withdrawal's rewrite). ``hide_lease``: a lease name left out of
    the next listing (the listing was made before that record landed)."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.capabilities = replace(self.capabilities, exclusive_create=False)
        self.fail_after_put = False
        self.skip_check = False
        self.before_put: Callable[[], None] | None = None
        self.hide_lease: str | None = None

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        if not exclusive and self.before_put is not None:
            hook, self.before_put = self.before_put, None
            hook()
        if exclusive and not self.skip_check and self.exists(name):
            raise RelayExists(f"relay object exists: {name}", name=name)
        super()._put(name, source, False)
        if exclusive and self.fail_after_put:
            self.fail_after_put = False
            raise RelayConnectionError(f"putting {name}: no answer (injected, after the write landed)")

    def _list(self, folder: str) -> list[Entry]:
        entries = super()._list(folder)
        hidden, self.hide_lease = self.hide_lease, None
        return [e for e in entries if e.name != hidden]


def test_a_failed_put_withdraws_after_the_settle_and_keeps_a_competitors_lease() -> None:
    store = MemoryStore()
    setup = MemoryRelay(store)
    setup.open()
    setup.mkdir(layout.LEASES)
    envelope = plain_envelope()
    first = LeaseRecord(generation=1, holder="e" * 32, label="earlier", host="elsewhere", pid=1,
                        operation="sync", token="0" * 32, beat=0)
    write_released(setup, envelope, first)

    ours_relay, theirs_relay = Weak(store), Weak(store)
    ours_relay.open()
    theirs_relay.open()
    theirs_relay.skip_check = True  # it checked before our record landed
    held: list[Lease] = []

    def competitor_claims() -> None:
        """The competitor, whose check came before our write, lands its
        record over ours, reads it back as its own and holds the lease."""
        if held:
            return
        theirs_relay.hide_lease = layout.lease_name(2)  # it listed before our write too
        theirs = LeaseManager(theirs_relay, envelope, client_id="b" * 32, label="theirs", timeout=60,
                              settle=0.5, sleep=lambda _: None)
        held.append(theirs.acquire("race"))

    ours_relay.fail_after_put = True
    ours_relay.before_put = competitor_claims  # the latest its write can land, without our settle
    ours = LeaseManager(ours_relay, envelope, client_id="a" * 32, label="ours", timeout=60, settle=0.5,
                        sleep=lambda _: competitor_claims())  # within our settle, as rule 2 allows
    with pytest.raises(RelayConnectionError):
        ours.acquire("race")
    assert held and held[0].generation == 2, "the competitor did not take generation 2"
    observer = LeaseManager(setup, envelope, client_id="f" * 32, label="observer", timeout=60)
    record = observer.read(setup, 2)
    assert record is not None and record.token == held[0].record.token, "the competitor's record was replaced"
    assert not record.released, "our withdrawal marked the competitor's live lease released"
