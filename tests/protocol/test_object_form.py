"""The strict JSON form of relay metadata objects: a key given twice is refused.

Decoding no longer asks the JSON parser to watch for repeated keys: the
canonical-form check refuses them (the parsed document keeps one of the two,
so it never encodes back to the bytes read). These tests pin that down, at
the top level and inside a value, for every kind of object.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from escale.errors import ProtocolError
from escale.protocol.objects import Ack, ClientRecord, LeaseRecord, Placeholder

KEY = "0123456789abcdef0123456789abcdef"
OBJECTS: list[Any] = [
    Placeholder(path="a/b.txt", key=KEY, version=1, generation=1, kind="file", pusher="a" * 32,
                pusher_label="a@host", size=3, mtime_ns=1, checksum="sha256:" + "0" * 64,
                payload=f"data/{KEY}.0000000001.00000000000000aa", receivers=("b" * 32,)),
    Ack("b" * 32, KEY, 1),
    ClientRecord("b" * 32, "b", True, "both", seen=5),
    LeaseRecord(1, "a" * 32, "a", "host", 1, "push", "t", 1),
]


def _pairs(data: bytes) -> list[str]:
    """The ``"key":value`` members of a canonical document, in order, each as encoded."""
    doc = json.loads(data)
    return [json.dumps(k) + ":" + json.dumps(v, separators=(",", ":"), ensure_ascii=False) for k, v in doc.items()]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: type(o).__name__)
@given(data=st.data())
def test_a_key_given_twice_is_refused(obj: Any, data: st.DataObject) -> None:
    encoded = obj.encode()
    assert type(obj).decode(encoded, "x") == obj
    members = _pairs(encoded)
    index = data.draw(st.integers(0, len(members) - 1))
    where = data.draw(st.integers(0, len(members)))
    doubled = [*members[:where], members[index], *members[where:]]
    forged = ("{" + ",".join(doubled) + "}").encode("utf-8")
    with pytest.raises(ProtocolError):
        type(obj).decode(forged, "x")


def test_a_key_given_twice_inside_a_value_is_refused() -> None:
    encoded = OBJECTS[0].encode()
    forged = encoded.replace(b'"receivers":[', b'"receivers":[{"a":1,"a":1},', 1)
    with pytest.raises(ProtocolError):
        Placeholder.decode(forged, "x")
