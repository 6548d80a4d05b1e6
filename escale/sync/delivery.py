"""Per-file delivery: what became of each file sent, and the handoff after delivery.

The pass keeps one record per path in the state database
(:class:`escale.sync.state.Delivery`, read by ``escalectl status --files``):

* ``pending``: planned to be sent, not sent yet (:func:`record_pending`);
* ``sent``: committed to the relay (:func:`record_sent`, by the executor);
* ``delivered``: with ``delivered when = acknowledged`` (the default), every
  receiver that must have the version acknowledged it, or ``puller count`` of
  them did (:meth:`Repository.reclaimable`, the rule by which its payload may
  leave the relay), acknowledgements checked to be authentic; with ``delivered
  when = sent``, as soon as it is sent. Found by :func:`after_pass` in the relay
  state the pass read, so an acknowledgement is seen by the pass after it was
  written;
* ``received``: a version of another client written here (:func:`record_received`).

**Handoff** (``after delivery``, ``upload`` mode only, see
:mod:`escale.config.client`): a delivered file that is still exactly the one
sent is moved into ``holding folder`` (same relative path) or deleted. The move
never loses the file: it is first linked (or copied and checked) into the
holding folder, and only then removed from the local folder, and only if it did
not change since it was sent. Killed at any point, the next pass finishes the
step (the record says ``moving``). A name already taken in the holding folder
by an earlier handoff gets ``~1``, ``~2``... appended. The path's base entry is
then marked deleted here on purpose (``local_deleted``): an ``upload`` client
never turns that into a tombstone, and a new file of the same name later is a
new local file, sent as the path's next version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from itertools import islice

from escale.config.settings import ClientSettings
from escale.errors import EscaleError, LocalError
from escale.protocol.objects import Placeholder
from escale.protocol.repository import RelayState, Repository
from escale.sync import faults, localfs
from escale.sync.hook import run_hook
from escale.sync.planner import BaseEntry, LocalFile, Plan
from escale.sync.report import PassReport
from escale.sync.state import SEEN_CHUNK, Delivery, StateDB

log = logging.getLogger(__name__)


def record_sent(db: StateDB, path: str, version: int, size: int, now: float | None = None) -> None:
    """``path``'s ``version`` (``size`` bytes) was committed to the relay."""
    db.set_delivery(sent_record(path, version, size, time.time() if now is None else now))


def sent_record(path: str, version: int, size: int, now: float) -> Delivery:
    """The record :func:`record_sent` writes."""
    return Delivery(path, version, size, "sent", now, sent_at=now)


def received_record(ph: Placeholder, size: int, now: float) -> Delivery:
    """The record :func:`record_received` writes."""
    return Delivery(ph.path, ph.version, size, "received", now, receivers=(ph.pusher_label,))


def record_received(db: StateDB, ph: Placeholder, size: int, now: float | None = None) -> None:
    """Version ``ph`` of another client was written into the local folder."""
    db.set_delivery(received_record(ph, size, time.time() if now is None else now))


def record_pending(db: StateDB, pending: Iterable[tuple[str, int]], now: float | None = None) -> None:
    """These (path, size) wait to be sent; records already saying so are kept."""
    now = time.time() if now is None else now
    waiting = iter(pending)
    with db.batch():  # a lost record is written again by the next pass
        # a chunk at a time: one look-up per chunk, not one per file, nor every record at once
        while chunk := list(islice(waiting, SEEN_CHUNK)):
            known = db.delivery_states([path for path, _ in chunk])
            fresh = []
            for path, size in chunk:
                old = known.get(path)  # (state, size, version)
                if old is None or old[0] != "pending" or old[1] != size:
                    fresh.append(Delivery(path, old[2] if old else 0, size, "pending", now))
            db.set_deliveries(fresh)


def after_pass(settings: ClientSettings, db: StateDB, repo: Repository, state: RelayState, the_plan: Plan,
               report: PassReport) -> None:
    """What :class:`~escale.sync.client.SyncClient` runs at the end of a pass
    (``the_plan`` and its ``report``): record the files still waiting to be
    sent, mark delivered what the relay ``state`` (read by this pass) shows as
    delivered, run the hook for each, then carry out ``after delivery`` on the
    delivered files not handed off yet. Per-file problems are logged."""
    sent = set(report.pushed)
    waiting = [(a.copy_path or a.path, a.expect_local.size) for a in the_plan.of_kind("push", "push_copy")
               if a.expect_local is not None and (a.copy_path or a.path) not in sent]
    del sent  # (a slot per file sent: not held through the deliveries below)
    if waiting:
        record_pending(db, waiting)
    me = repo.client_id
    labels = {c: r.label for c, r in state.clients.items()}
    handoff = settings.after_delivery != "leave"
    # read a chunk at a time: a client that sent many files has a record for each; the
    # changes are written a chunk at a time too (one transaction each), and a file's
    # delivery is announced (log line, hook) only once its record says so
    changed: list[Delivery] = []
    for record in db.deliveries_in(("sent",)):
        if settings.delivered_when == "sent":
            delivered = True
            receivers = record.receivers
        else:
            ph = state.latest.get(record.path)
            if ph is None or ph.version != record.version or ph.pusher != me or ph.deleted:
                continue
            acked = state.acks_of(ph) - {me}
            receivers = tuple(sorted(labels.get(c, c[:12]) for c in acked))
            try:
                delivered = repo.delivered(ph, state)
            except EscaleError as exc:  # an acknowledgement that cannot be read now: next pass
                log.warning("[%s] %s: delivery not checked: %s", settings.name, record.path, exc)
                continue
            if not delivered:
                if receivers != record.receivers:
                    changed.append(replace(record, receivers=receivers))
                continue
        now = time.time()
        changed.append(replace(record, state="delivered", delivered_at=now, changed_at=now, receivers=receivers))
        if len(changed) >= _DELIVERIES_WRITTEN_TOGETHER:
            _record_deliveries(settings, db, changed)
    _record_deliveries(settings, db, changed)
    if not handoff:
        return
    for record in db.deliveries_in(("delivered",)):
        if record.handoff in ("", "moving"):
            synced = db.base_entry(record.path)
            try:
                hand_off(settings, db, record, synced)
            except LocalError as exc:
                log.warning("[%s] %s not handed off: %s", settings.name, record.path, exc)


#: how many changed delivery records :func:`after_pass` writes in one transaction
_DELIVERIES_WRITTEN_TOGETHER = 1000


def _record_deliveries(settings: ClientSettings, db: StateDB, changed: list[Delivery]) -> None:
    """Write ``changed`` (one transaction), then announce each record that
    is now delivered (a log line and the ``delivered`` hook), in order; empties
    ``changed``. A crash before the write loses the chunk's changes, which the
    next pass makes again; a hook never runs for a delivery not yet recorded."""
    db.set_deliveries(changed)
    for record in changed:
        if record.state == "delivered":
            log.info("[%s] %s delivered%s", settings.name, record.path,
                     f" to {', '.join(record.receivers)}" if record.receivers else "")
            run_hook(settings, "delivered", record.path)
    changed.clear()


def _holding_name(settings: ClientSettings, record: Delivery, expect: LocalFile) -> str:
    """Where ``record.path`` goes in the holding folder: its own relative path,
    or with ``~N`` appended when an earlier handoff holds that name."""
    assert settings.holding_dir is not None
    for n in range(1000):
        name = record.path if n == 0 else f"{record.path}~{n}"
        try:
            there = localfs.current(settings.holding_dir, name)
        except LocalError:
            continue
        if there is None:
            return name
        if record.handoff == "moving" and there == expect:
            return name  # copied by an interrupted attempt
    raise LocalError(f"no free name for {record.path} in {settings.holding_dir}", path=record.path)


def hand_off(settings: ClientSettings, db: StateDB, record: Delivery, synced: BaseEntry | None) -> None:
    """Move (or delete) the delivered local file of ``record`` as ``after
    delivery`` says, if it is still the version sent (``synced``, its base
    entry). Raises LocalError (nothing lost: the file stays, or is in both
    places)."""
    root, path, name = settings.local_path, record.path, settings.name
    if synced is None or synced.version != record.version:
        db.set_delivery(replace(record, handoff="skipped"))
        return
    expect = LocalFile(synced.size, synced.mtime_ns)
    now = localfs.current(root, path)
    if now is None:
        # gone: removed by an interrupted handoff (``moving``), or by the user
        db.set_base(path, replace(synced, local_deleted=True))
        done = "moved" if settings.after_delivery == "move" else "deleted"
        db.set_delivery(replace(record, handoff=done if record.handoff == "moving" else "gone"))
        return
    if synced.local_deleted or now != expect:
        log.info("[%s] %s changed since it was sent; it is sent again before it is handed off", name, path)
        return
    if settings.after_delivery == "move":
        assert settings.holding_dir is not None
        db.set_delivery(replace(record, handoff="moving"))
        target = _holding_name(settings, record, expect)
        faults.step(f"handoff copy {path}")
        localfs.keep_copy(root, path, expect, settings.holding_dir, target)
        faults.step(f"handoff copied {path}")
    else:
        db.set_delivery(replace(record, handoff="moving"))
    if not localfs.delete_if_unchanged(root, path, expect):
        return  # changed meanwhile: kept (with a copy in the holding folder)
    faults.step(f"handoff removed {path}")
    db.set_base(path, replace(synced, local_deleted=True))
    done = "moved" if settings.after_delivery == "move" else "deleted"
    db.set_delivery(replace(record, handoff=done, changed_at=time.time()))
    faults.step(f"handoff recorded {path}")
    if done == "moved":
        log.info("[%s] %s moved to the holding folder %s", name, path, settings.holding_dir)
    else:
        log.info("[%s] %s deleted after delivery", name, path)
