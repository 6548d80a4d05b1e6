"""Archive pages of the index layout: the stored form of members, and a page's
round trip through a real relay folder.

Members are deflated through a window fitted to their size; these tests pin
what that must not change: a member is as small as with zlib's default
window, any zlib inflater reads it, and data that does not deflate is stored
as is.
"""

from __future__ import annotations

import io
import os
import random
import zlib
from pathlib import Path

import pytest

from escale.protocol.index import objects as io_names
from escale.protocol.index.pages import PageWriter, compress_member, inflate_to, open_page
from escale.protocol.sealer import Sealer
from escale.relay.file import FileRelay

ROOT = Path(__file__).resolve().parents[2]


def _text(size: int) -> bytes:
    """Real text (escale's own sources), repeated up to ``size`` bytes."""
    source = b"".join(p.read_bytes() for p in sorted((ROOT / "escale" / "protocol").glob("*.py")))
    return (source * (size // len(source) + 1))[:size]


@pytest.mark.parametrize("size", [300, 600, 4096, 7000, 40_000, 300_000])
def test_a_member_deflates_as_small_as_with_the_default_window(size: int) -> None:
    data = _text(size)
    stored, compression = compress_member(data)
    assert compression == "zlib"
    assert len(stored) == len(zlib.compress(data, 6))
    assert zlib.decompress(stored) == data  # a plain zlib inflater reads it


@pytest.mark.parametrize("size", [1, 300, 512, 513, 4096, 100_000])
def test_what_does_not_deflate_is_stored_as_is(size: int) -> None:
    noise = random.Random(size).randbytes(size)
    assert compress_member(noise) == (noise, "none")
    assert compress_member(b"") == (b"", "none")


def test_noise_after_a_compressible_start_is_still_tried() -> None:
    """The probe looks at the first 512 bytes only: a member that starts
    compressible is deflated when the whole of it shrinks."""
    data = _text(2000) + random.Random(2).randbytes(1000)
    stored, compression = compress_member(data)
    assert compression == "zlib" and zlib.decompress(stored) == data


def test_a_page_of_many_members_round_trips(tmp_path: Path, sealer: Sealer) -> None:
    relay = FileRelay(str(tmp_path / "relay"))
    relay.open()
    relay.create_root()
    spool = str(tmp_path / "spool")
    os.makedirs(spool)
    rng = random.Random(3)
    contents = {f"{i:032x}": (_text(rng.randrange(0, 9000)) if i % 2 else rng.randbytes(rng.randrange(0, 9000)))
                for i in range(300)}
    writer = PageWriter(spool)
    try:
        members = {key: writer.add(key, 1, data) for key, data in contents.items()}
        name = io_names.page_name(7)
        sink = io.BytesIO()
        writer.seal(sealer, name, 7, sink)
    finally:
        writer.close()
    relay.put(name, io.BytesIO(sink.getvalue()))
    page = open_page(relay.get, sealer, name, spool)
    try:
        assert set(page.members) == {(key, 1) for key in contents}
        for key in reversed(list(contents)):  # any order
            out = io.BytesIO()
            inflate_to(page.stored(members[key]), members[key].compression, out, name)
            assert out.getvalue() == contents[key]
    finally:
        page.close()
    assert os.listdir(spool) == []
