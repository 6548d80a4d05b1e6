"""The end of a pass records many deliveries a chunk at a time, and announces
a file's delivery (log line, hook) only once its record says so."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from escale.config.settings import ClientSettings
from escale.errors import LocalError
from escale.protocol.repository import RelayState
from escale.relay import RelaySpec
from escale.sync import delivery
from escale.sync.planner import Plan
from escale.sync.report import PassReport
from escale.sync.state import SEEN_CHUNK, Delivery, StateDB

CHUNK = delivery._DELIVERIES_WRITTEN_TOGETHER


def _sent(db: StateDB, count: int) -> list[str]:
    paths = [f"d/{i:05d}" for i in range(count)]
    db.set_deliveries([Delivery(p, 1, 10, "sent", 1.0, sent_at=1.0) for p in paths])
    return paths


def _run(tmp_path: os.PathLike[str], db: StateDB) -> None:
    base = str(tmp_path)
    settings = ClientSettings(name="up", local_path=os.path.join(base, "local"), delivered_when="sent",
                              relay=RelaySpec(protocol="file", directory=os.path.join(base, "relay")))
    repo: Any = SimpleNamespace(client_id="me")
    delivery.after_pass(settings, db, repo, RelayState(), Plan(), PassReport(client="up"))


def test_every_delivery_recorded_before_its_hook(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    db = StateDB(os.path.join(str(tmp_path), "state.db"))
    try:
        paths = _sent(db, 2 * CHUNK + 7)
        announced: list[str] = []

        def hook(settings: ClientSettings, status: str, path: str) -> None:
            record = db.delivery(path)
            assert status == "delivered" and record is not None and record.state == "delivered"
            announced.append(path)

        writes: list[int] = []
        write = db.set_deliveries

        def counted(records: list[Delivery]) -> None:
            writes.append(len(records))
            write(records)

        monkeypatch.setattr(delivery, "run_hook", hook)
        monkeypatch.setattr(db, "set_deliveries", counted)
        _run(tmp_path, db)
        assert announced == paths
        assert writes == [CHUNK, CHUNK, 7]
        assert [d.path for d in db.deliveries_in(("delivered",))] == paths
        assert not list(db.deliveries_in(("sent",)))
    finally:
        db.close()


def test_a_chunk_not_recorded_is_not_announced(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The state database fails on the second chunk: the first stays recorded
    and announced, the rest is neither (the next pass delivers it)."""
    db = StateDB(os.path.join(str(tmp_path), "state.db"))
    try:
        paths = _sent(db, CHUNK + 5)
        announced: list[str] = []
        monkeypatch.setattr(delivery, "run_hook", lambda settings, status, path: announced.append(path))
        write = db.set_deliveries
        calls = iter((write,))

        def failing(records: list[Delivery]) -> None:
            next(calls, lambda _: (_ for _ in ()).throw(LocalError("disk full")))(records)

        monkeypatch.setattr(db, "set_deliveries", failing)
        with pytest.raises(LocalError):
            _run(tmp_path, db)
        assert announced == paths[:CHUNK]
        assert [d.path for d in db.deliveries_in(("sent",))] == paths[CHUNK:]
        monkeypatch.setattr(db, "set_deliveries", write)
        _run(tmp_path, db)
        assert announced == paths
    finally:
        db.close()


def test_files_waiting_recorded_a_chunk_at_a_time(tmp_path: os.PathLike[str]) -> None:
    """Files waiting to be sent (beyond ``disk quota``): a record already
    saying so is kept as it is; any other record of the path is replaced by
    one that says so, keeping its version; across more than one chunk."""
    db = StateDB(os.path.join(str(tmp_path), "state.db"))
    try:
        count = 2 * SEEN_CHUNK + 11
        paths = [f"w/{i:05d}" for i in range(count)]
        db.set_deliveries([Delivery(p, 3, 10, "pending", 1.0) for p in paths[0::4]]  # as waiting now
                          + [Delivery(p, 4, 99, "pending", 1.0) for p in paths[1::4]]  # another size
                          + [Delivery(p, 5, 10, "sent", 1.0, sent_at=1.0) for p in paths[2::4]])  # sent before
        delivery.record_pending(db, [(p, 10) for p in paths], now=2.0)
        records = {d.path: d for d in db.deliveries_in(("pending", "sent", "delivered"))}
        assert len(records) == count
        for i, path in enumerate(paths):
            expected = {0: Delivery(path, 3, 10, "pending", 1.0), 1: Delivery(path, 4, 10, "pending", 2.0),
                        2: Delivery(path, 5, 10, "pending", 2.0), 3: Delivery(path, 0, 10, "pending", 2.0)}[i % 4]
            assert records[path] == expected
        assert db.delivery_states([paths[0], "nothing"]) == {paths[0]: ("pending", 10, 3)}
    finally:
        db.close()
