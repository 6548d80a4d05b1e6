"""The relay phase of a pass: everything that needs the repository's lease.

It takes the lease (waiting for a busy one as long as the client allows),
renews it from a second connection, checks that the repository's layout is
still the one the pass attached to, re-reads the relay, commits the plan's
pushes and tombstones (each re-checked against the version it was planned on,
see :meth:`Executor.push`), reclaims payloads every receiver has taken,
removes leftovers, marks the relay's change marker clean again (see
:mod:`escale.protocol.marker`), and releases the lease whatever happened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from escale.config.settings import ClientSettings
from escale.errors import LeaseBusy, ProtocolError
from escale.protocol.header import recorded_layout
from escale.protocol.lease import Lease, LeaseManager
from escale.protocol.lease_wait import acquire_with_wait
from escale.protocol.repository import RelayState, Repository
from escale.relay import Relay
from escale.sync import faults
from escale.sync.executor import Executor
from escale.sync.planner import Plan
from escale.sync.state import StateDB

log = logging.getLogger(__name__)


def take_lease(
    settings: ClientSettings,
    db: StateDB,
    repo: Repository,
    open_relay: Callable[[], Relay],
    *,
    wait: float,
    stop: threading.Event,
    then: Callable[[], None] = lambda: None,
) -> tuple[Lease, Relay]:
    """Take the sync lease of ``repo`` and start its heartbeat.

    The heartbeat's connection comes from ``open_relay``; it opens on a
    thread of its own while the lease is taken on the repository's connection
    (through ``ssh`` a connection takes a tenth of a second or more), and the
    heartbeat starts only once both are done. A busy lease is tried again for
    ``wait`` seconds, or until ``stop`` is set, then LeaseBusy is raised.
    ``then`` runs on the opening thread once the heartbeat's connection is
    open (the caller opens its other connections there: after the
    heartbeat's, so that a server limiting connections per client gives the
    heartbeat one first).
    When the heartbeat's connection cannot be opened, the lease just taken is
    released and that error is raised. Whatever it raises, the heartbeat
    connection is closed. Returns the lease and the
    heartbeat connection: the caller releases one and closes the other.
    """
    heartbeat = open_relay()
    opening = _Opening(heartbeat, then)
    try:
        manager = LeaseManager(repo.relay, repo.sealer, client_id=repo.client_id, label=settings.label,
                               timeout=settings.lock_timeout, observations=db.lease_observations())
        lease = acquire_with_wait(manager, "sync", wait=wait, stop=stop)
    except BaseException:
        opening.wait(raise_error=False)
        heartbeat.close()
        raise
    try:
        opening.wait()
    except BaseException:
        heartbeat.close()
        lease.release(None)
        raise
    lease.start_heartbeat(heartbeat)
    return lease, heartbeat


class _Opening:
    """``relay.open()``, then ``then()``, running on a thread of its own."""

    def __init__(self, relay: Relay, then: Callable[[], None]) -> None:
        self._relay = relay
        self._then = then
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="escale-heartbeat-open", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._relay.open()
            self._then()
        except BaseException as exc:  # noqa: BLE001 - raised by wait(), on the pass's thread
            self._error = exc

    def wait(self, *, raise_error: bool = True) -> None:
        """Wait for the open to end; raise what it raised (if ``raise_error``)."""
        self._thread.join()
        if raise_error and self._error is not None:
            raise self._error


def _confirm_layout(settings: ClientSettings, repo: Repository) -> None:
    """Under the lease: the repository still has the layout this pass
    attached to. ``escalectl migrate --layout`` converts a repository under
    the lease; a pass that attached before the conversion and took the lease
    after it would otherwise write into the old layout's folders. Raises
    ProtocolError (nothing written) when the layout changed."""
    found = recorded_layout(repo.relay)
    if found != repo.layout_name:
        raise ProtocolError(
            f"[{settings.name}] the repository on relay {repo.relay.describe()} was converted to the {found} "
            f"layout during this pass; nothing was sent (set index = {'yes' if found == 'index' else 'no'} "
            f"in [{settings.name}])", name="escale.repo")


def run_relay_phase(
    executor: Executor,
    the_plan: Plan,
    open_relay: Callable[[], Relay],
    *,
    wait: float,
    state: RelayState | None = None,
) -> None:
    """Push, reclaim and clean up under the lease, for the pass ``executor`` runs.

    ``state``: the relay state the pass read before the lease, which the
    relay phase then uses (and updates) instead of reading it again when the
    layout can prove it current (:meth:`Repository.state_under_lease`), and
    otherwise reads again in place (:meth:`Repository.read_state_again`):
    either way, the caller's ``state`` is the relay phase's afterwards.
    The lease is released with the repository's stamp when the phase ran to
    its end, without one otherwise. A lease still busy after ``wait`` seconds
    marks the report ``busy`` (the pass retries later); LeaseLost and errors
    of the relay as a whole are raised.
    """
    settings, repo, report, stop = executor.settings, executor.repo, executor.report, executor.stop
    try:
        # the upload connections open while the lease is taken, once the heartbeat's is open
        lease, heartbeat = take_lease(settings, executor.db, repo, open_relay, wait=wait, stop=stop,
                                      then=lambda: executor.connect_uploads(the_plan))
    except LeaseBusy as exc:
        executor.close_uploads()
        report.busy = True
        log.info("[%s] %s; will retry", settings.name, exc)
        return
    except BaseException:
        executor.close_uploads()
        raise
    stamp: str | None = None
    try:
        faults.step("lease taken")
        current = repo.state_under_lease(lease, state) if state is not None else None
        if current is None:
            _confirm_layout(settings, repo)
            # the pass's earlier reading is replaced, not kept beside the new one
            current = repo.read_state() if state is None else repo.read_state_again(state)
        state = current
        executor.run_pushes(lease, state, the_plan)
        if not stop.is_set():
            for path in repo.reclaim(lease, state):
                report.reclaimed.append(path)
                faults.step(f"reclaimed {path}")
            repo.collect_garbage(lease, state)
        # the change marker: clean again, with a new counter (an error above
        # leaves it marked as changing: readers then read in full, which is safe)
        repo.finish_changes(lease)
        stamp = repo.lease_stamp()
    finally:
        executor.close_uploads()
        lease.release(stamp)
        heartbeat.close()
