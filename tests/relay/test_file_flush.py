"""The local-folder relay flushes at commit points, not per object
(``escale/relay/file.py``, doc/protocol.rst *Local folder: what reaches the disk*).

A plain put is not flushed; an exclusive put (a commit: placeholder, lease
generation, header) flushes it and every earlier write before it is linked into
place; ``close()`` flushes what is left. Counted with the relay's own
``flushes`` counter (each ``syncfs`` or ``fsync`` call), on a real folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from escale import flush
from escale.errors import RelayExists
from escale.relay.file import FileRelay


def test_one_flush_per_commit_and_one_at_close(tmp_path: Path) -> None:
    relay = FileRelay(str(tmp_path / "relay"))
    relay.open()
    relay.create_root()
    for i in range(50):
        relay.put_bytes(f"data/p{i:02d}", os.urandom(4096))  # a payload: not flushed
        relay.put_bytes(f"meta/m{i:02d}", b"placeholder", exclusive=True)  # a commit: one flush
    assert relay.flushes == 50
    for i in range(50):
        relay.put_bytes(f"acks/a{i:02d}", b"ack")  # acknowledgements: not flushed
    assert relay.flushes == 50
    relay.close()
    assert relay.flushes == 51  # what was left, in one flush
    reopened = FileRelay(str(tmp_path / "relay"))
    reopened.open()
    assert len(reopened.list("data")) == len(reopened.list("meta")) == len(reopened.list("acks")) == 50
    assert reopened.get_bytes("meta/m49") == b"placeholder"
    reopened.close()
    assert reopened.flushes == 0  # nothing written: nothing to flush


def test_a_commit_that_loses_the_race_leaves_no_temporary(tmp_path: Path) -> None:
    relay = FileRelay(str(tmp_path / "relay"))
    relay.open()
    relay.create_root()
    relay.put_bytes("meta/m", b"first", exclusive=True)
    with pytest.raises(RelayExists):
        relay.put_bytes("meta/m", b"second", exclusive=True)
    assert relay.get_bytes("meta/m") == b"first"
    assert relay.list_temporaries("meta") == []
    relay.close()


def test_a_group_of_commits_shares_one_flush(tmp_path: Path) -> None:
    relay = FileRelay(str(tmp_path / "relay"))
    relay.open()
    relay.create_root()
    relay.put_bytes("meta/taken", b"first", exclusive=True)
    before = relay.flushes
    for i in range(40):
        relay.put_bytes(f"data/p{i:02d}", os.urandom(4096))  # payloads: not flushed
    created = relay.put_commits([(f"meta/m{i:02d}", b"placeholder %d" % i) for i in range(40)]
                                + [("meta/taken", b"second")])
    assert created == [True] * 40 + [False]
    assert relay.flushes == before + 1  # the payloads and the 40 commits, in one flush
    assert relay.get_bytes("meta/m39") == b"placeholder 39"
    assert relay.get_bytes("meta/taken") == b"first"
    assert relay.list_temporaries("meta") == []
    relay.close()


def test_where_syncfs_serves_no_path_is_kept_per_write(tmp_path: Path) -> None:
    # a pass that writes an object per file (placeholder layout: an acknowledgement
    # per file received) would otherwise hold every path until the barrier
    relay = FileRelay(str(tmp_path / "relay"))
    relay.open()
    relay.create_root()
    for i in range(200):
        relay.put_bytes(f"acks/a{i:03d}", b"ack")
    relay.rename("acks/a000", "acks/moved", overwrite=False)
    assert not relay._unflushed  # only that something waits
    relay.close()
    assert relay.flushes == 1


def test_without_syncfs_each_file_and_folder_is_flushed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flush, "AVAILABLE", False)
    relay = FileRelay(str(tmp_path / "relay"))
    relay.open()
    relay.create_root()
    for i in range(5):
        relay.put_bytes(f"acks/a{i}", b"ack")
    relay.rename("acks/a0", "data/moved", overwrite=False)  # its new name and its new folder
    relay.close()
    # four files left in acks/, one in data/, and the two folders, one fsync each
    assert relay.flushes == 5 + 2
