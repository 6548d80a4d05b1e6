"""escale.backoff.Backoff: the one schedule of every retry loop."""

from __future__ import annotations

from escale.backoff import Backoff


def test_doubles_up_to_the_cap_and_starts_again_on_reset() -> None:
    waits = Backoff(0.2, 1.0)
    assert [waits.next() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    waits.reset()
    assert waits.current == 0.2 and waits.next() == 0.2


def test_the_first_wait_is_not_capped_and_the_floor_lifts_the_following() -> None:
    # the daemon: a failed pass is retried after 'refresh', then doubling from at least 1 s
    waits = Backoff(3600.0, 600.0, floor=1.0)
    assert [waits.next() for _ in range(3)] == [3600.0, 600.0, 600.0]
    waits = Backoff(0.0, 600.0, floor=1.0)
    assert [waits.next() for _ in range(4)] == [0.0, 1.0, 2.0, 4.0]


def test_jitter_stays_within_its_factors() -> None:
    waits = Backoff(0.02, 0.5, jitter=(0.5, 1.5))
    for _ in range(50):
        base = waits.current
        wait = waits.next()
        assert 0.5 * base <= wait <= 1.5 * base
    assert waits.current == 0.5
