"""Archive pages and big objects of the index layout: writing and reading.

A page's plaintext is its members' stored forms one after the other, then
the page index (canonical JSON, :func:`~escale.protocol.index.objects.encode_page_index`),
then the page index's length as 8 bytes big-endian. The whole plaintext is
sealed as one envelope stream under the page's relay name. A member is
compressed with zlib only when that makes it smaller ("compress only where it
pays"); otherwise it is stored as is. A member over 512 bytes is first judged
on samples, cheapest first: when its first 256 bytes hold more than 136
distinct byte values (random, encrypted or already compressed data: text
holds fewer than 70) or its first 512 bytes do not deflate to 90 % or less,
it is stored as is without trying the rest.
A member is deflated through a window just large enough for it: the stored
bytes are as small as with the full 32 KiB window, at about half the cost for
a file of a few KiB (setting up the window dominates); any zlib inflater
reads them.

A big object's plaintext is the file's content, deflated as one zlib stream
when a sample of its first MiB shrinks by a tenth or more (and its first 64 KiB
by 3 % or more), else as is; it is sealed as one envelope stream. Writing
and reading it take constant memory.

Pages are spooled in temporary files of the client's spool folder (big
objects stream without one where they can: see
:class:`~escale.protocol.index.repository.IndexRepository`): memory stays
bounded by the small-file threshold, whatever the page size.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import zlib
from array import array
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO, Literal, Protocol, cast

from escale.errors import IntegrityError, ProtocolError
from escale.protocol.index.objects import (
    MAX_PAGE_INDEX_BYTES,
    PageIndexReader,
    PageMember,
    is_page_name,
    page_index_frame,
    page_member_text,
)
from escale.protocol.sealer import Sealer

_TRAILER = struct.Struct(">Q")
CHUNK = 1 << 20
#: a big file is deflated when its first MiB deflates to at most this share
BIG_COMPRESS_RATIO = 0.9


class Writable(Protocol):
    def write(self, data: bytes) -> object: ...


#: a small file longer than this is first probed on a sample of this size ...
MEMBER_PROBE = 512
#: ... and deflated only when the sample shrinks to at most this share of it
MEMBER_PROBE_RATIO = 0.9
#: before that probe, the first bytes of such a file (a sample of this size) ...
MEMBER_GLANCE = 256
#: ... holding more distinct byte values than this mean "stored as is": 256
#: random bytes hold about 162 (147 at the lowest in thousands of draws),
#: text fewer than 70; of tens of thousands of 4 KiB blocks of libraries and
#: images, the few above it that would still deflate gain a few hundred bytes
MEMBER_GLANCE_DISTINCT = 136


#: deflate's smallest window (``wbits``)
_MIN_WBITS = 9
#: bytes of a deflate window that matches cannot reach (zlib's MIN_LOOKAHEAD)
_WINDOW_SLACK = 262


def _window_bits(length: int) -> int:
    """The smallest deflate window (``wbits``, 9 to 15) through which every
    byte of ``length`` bytes of input can refer back to any earlier one, so
    that the output is as small as with the default 32 KiB window."""
    bits = _MIN_WBITS
    while bits < zlib.MAX_WBITS and (1 << bits) - _WINDOW_SLACK < length:
        bits += 1
    return bits


def _deflate(data: bytes, level: int) -> bytes:
    """``data`` as one zlib stream, through a window fitted to it.

    zlib's set-up for its default 32 KiB window costs more than deflating a
    few KiB; a window just large enough gives the same matches for less."""
    deflater = zlib.compressobj(level, zlib.DEFLATED, _window_bits(len(data)))
    return deflater.compress(data) + deflater.flush()


def _probe(sample: bytes) -> bytes:
    """``sample`` deflated quickly: level 1, a window of 512 bytes (the
    sample's size) and the smallest hash table; setting up zlib's default
    32 KiB window costs several times more than deflating 512 bytes."""
    deflater = zlib.compressobj(1, zlib.DEFLATED, 9, 1)
    return deflater.compress(sample) + deflater.flush()


def compress_member(data: bytes) -> tuple[bytes, Literal["none", "zlib"]]:
    """The stored form of a small file's content: deflated when smaller.

    Content longer than :data:`MEMBER_PROBE` whose first bytes do not deflate
    well (already compressed or encrypted data) is stored as is without
    deflating the rest: trying costs about as much as sealing it. Such data
    is mostly recognised before any deflating, by counting the distinct byte
    values of its first :data:`MEMBER_GLANCE` bytes (several times cheaper
    than the smallest deflate)."""
    if not data:
        return data, "none"
    if len(data) > MEMBER_PROBE and (
            len(set(data[:MEMBER_GLANCE])) > MEMBER_GLANCE_DISTINCT
            or len(_probe(data[:MEMBER_PROBE])) > MEMBER_PROBE * MEMBER_PROBE_RATIO):
        return data, "none"
    packed = _deflate(data, 6)
    if len(packed) < len(data):
        return packed, "zlib"
    return data, "none"


class PageWriter:
    """Collects members into a plaintext spool; :meth:`seal` writes the page.

    The page index is written as the members come, to a second spool: no
    object per member is held (a push of many small files would otherwise
    keep one per file until its page is sealed)."""

    def __init__(self, spool_dir: str | None) -> None:
        # members are a few KiB each: a large buffer turns them into few writes
        self.spool = tempfile.TemporaryFile(dir=spool_dir, buffering=CHUNK)  # noqa: SIM115 (closed by close())
        #: the members' page index text (page_member_text), comma-separated
        self._index = tempfile.TemporaryFile(dir=spool_dir, buffering=CHUNK)  # noqa: SIM115 (closed by close())
        self._count = 0

    @property
    def members(self) -> int:
        """How many members were added (0, false, while the page is empty)."""
        return self._count

    @property
    def size(self) -> int:
        """Plaintext bytes so far (without the page index)."""
        return self.spool.tell()

    def add(self, key: str, version: int, content: bytes) -> PageMember:
        stored, compression = compress_member(content)
        return self.add_stored(key, version, stored, len(content), compression)

    def add_stored(self, key: str, version: int, stored: bytes, size: int,
                   compression: Literal["none", "zlib"]) -> PageMember:
        """Append a member; returns it (the writer keeps only its index text)."""
        member = PageMember(key, version, self.spool.tell(), len(stored), size, compression)
        self.spool.write(stored)
        if self._count:
            self._index.write(b",")
        self._index.write(page_member_text(member))
        self._count += 1
        return member

    def seal(self, sealer: Sealer, name: str, generation: int, sink: BinaryIO) -> int:
        """Append the page index and seal the page named ``name`` into ``sink``."""
        # copied from its spool in pieces: the page index of many members is never held whole
        head, tail = page_index_frame(generation)
        length = len(head) + self._index.tell() + len(tail)
        self.spool.write(head)
        self._index.seek(0)
        while piece := self._index.read(CHUNK):
            self.spool.write(piece)
        self.spool.write(tail)
        self.spool.write(_TRAILER.pack(length))
        self.spool.seek(0)
        return sealer.seal_stream(name, cast(BinaryIO, self.spool), sink)

    def close(self) -> None:
        self.spool.close()
        self._index.close()


#: a member's identity in :class:`PageMembers`: its key's 16 bytes, then
#: its version (so that bytes order is (key, version) order)
_ID = struct.Struct(">16sQ")
#: at most 2**this buckets in a PageMembers' table of where identities start
_MAX_BUCKET_BITS = 24
#: a member's key: 32 lowercase hex digits
_HEX_KEY = re.compile("[0-9a-f]{32}")
#: an identity followed by the member's number in the page (sorted together)
_RECORD = struct.Struct(">16sQI")


class PageMembers(Mapping[tuple[str, int], PageMember]):
    """The members of an opened page, by ``(key, version)``, in a compact form.

    No object per member is kept: their identities are one sorted bytes
    array (24 bytes each), with the member's number in the page beside it;
    offsets (the members are consecutive, so lengths follow), sizes and
    compressions are arrays by member number. A table of where the
    identities starting with each value of their first bits begin (at most
    4 bytes per member) narrows a look-up to a few identities, which it
    bisects. About 50 bytes per member in all, where a dict of
    :class:`PageMember` took several hundred. A :class:`PageMember` is made
    when one is looked up. Iteration is in ``(key, version)`` order (keys
    as bytes).
    """

    def __init__(self, ids: bytearray, numbers: array[int], ends: array[int],
                 sizes: array[int], deflated: bytearray) -> None:
        self._ids = ids
        self._numbers = numbers
        self._ends = ends
        self._sizes = sizes
        self._deflated = deflated
        # where the identities starting with each value of their first
        # ``_bits`` bits begin (keys are hashes: about one member a bucket),
        # so that a look-up bisects a few identities, not all of them
        count = len(numbers)
        self._bits = min(max(count.bit_length() - 1, 0), _MAX_BUCKET_BITS)
        self._starts = array("I", bytes(4 * ((1 << self._bits) + 1)))
        bucket = 0
        for position in range(count):
            here = self._bucket(ids, _ID.size * position)
            while bucket < here:
                bucket += 1
                self._starts[bucket] = position
        for rest in range(bucket + 1, len(self._starts)):
            self._starts[rest] = count

    def _bucket(self, data: bytes | bytearray, at: int) -> int:
        return int.from_bytes(data[at:at + 4], "big") >> (32 - self._bits)

    @classmethod
    def read(cls, reader: PageIndexReader) -> PageMembers:
        """The members that ``reader`` yields (all its checks made), or
        ProtocolError, also when a ``(key, version)`` is listed twice."""
        records: list[bytes] = []
        ends = array("Q", [0])
        sizes = array("Q")
        deflated = bytearray()
        for key, version, _offset, length, size, compression in reader.members():
            records.append(_RECORD.pack(bytes.fromhex(key), version, len(sizes)))
            ends.append(ends[-1] + length)
            sizes.append(size)
            deflated.append(compression == "zlib")
        records.sort()
        ids = bytearray(_ID.size * len(records))
        numbers = array("I", bytes(4 * len(records)))
        previous = b""
        for position, record in enumerate(records):
            identity, number = record[:_ID.size], int.from_bytes(record[_ID.size:], "big")
            if identity == previous:
                raise ProtocolError(f"relay object {reader.name}: a page member is listed twice",
                                    name=reader.name)
            ids[_ID.size * position:_ID.size * (position + 1)] = identity
            numbers[position] = number
            records[position] = b""  # each record goes once copied
            previous = identity
        return cls(ids, numbers, ends, sizes, deflated)

    @property
    def end(self) -> int:
        """Where the last member ends (0 without members): the page index's offset."""
        return self._ends[-1]

    def _find(self, wanted: object) -> int | None:
        """The position of ``wanted``, a ``(key, version)``; None when no
        member has it (or it is no key and version at all)."""
        if type(wanted) is not tuple or len(wanted) != 2:
            return None
        key, version = wanted
        if type(key) is not str or type(version) is not int or not 0 <= version < 2**64 \
                or _HEX_KEY.fullmatch(key) is None:
            return None
        identity = _ID.pack(bytes.fromhex(key), version)
        bucket = self._bucket(identity, 0)
        low, high = self._starts[bucket], self._starts[bucket + 1]
        width, ids = _ID.size, self._ids
        while low < high:
            middle = (low + high) // 2
            if ids[width * middle:width * (middle + 1)] < identity:
                low = middle + 1
            else:
                high = middle
        if low < self._starts[bucket + 1] and ids[width * low:width * (low + 1)] == identity:
            return low
        return None

    def _member(self, position: int) -> PageMember:
        key, version = _ID.unpack_from(self._ids, _ID.size * position)
        number = self._numbers[position]
        offset = self._ends[number]
        return PageMember(key.hex(), version, offset, self._ends[number + 1] - offset, self._sizes[number],
                          "zlib" if self._deflated[number] else "none")

    def get(self, wanted: tuple[str, int], default: Any = None) -> Any:  # one search, not two
        position = self._find(wanted)
        return default if position is None else self._member(position)

    def __getitem__(self, wanted: tuple[str, int]) -> PageMember:
        position = self._find(wanted)
        if position is None:
            raise KeyError(wanted)
        return self._member(position)

    def __contains__(self, wanted: object) -> bool:
        return self._find(wanted) is not None

    def __len__(self) -> int:
        return len(self._numbers)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for position in range(len(self._numbers)):
            key, version = _ID.unpack_from(self._ids, _ID.size * position)
            yield key.hex(), version


class OpenedPage:
    """A page fetched, authenticated and decrypted into a spool file."""

    def __init__(self, name: str, plain: BinaryIO, members: PageMembers) -> None:
        self.name = name
        self.plain = plain
        plain.flush()
        self._fd = plain.fileno()
        self.members = members

    def stored(self, member: PageMember) -> bytes:
        """The stored bytes of ``member`` (bounded by the small-file threshold).

        One positioned read of the spool file (``plain`` is flushed when the
        page is opened and never written again), not a seek and a buffered
        read."""
        data = os.pread(self._fd, member.length, member.offset) if member.length else b""
        if len(data) != member.length:
            raise IntegrityError(f"relay object {self.name}: page cut inside a member")
        return data

    def close(self) -> None:
        self.plain.close()


def open_page(relay_get: _Getter, sealer: Sealer, name: str, spool_dir: str | None) -> OpenedPage:
    """Fetch page ``name``, open its envelope and read its page index.

    The page index is read from the spool in pieces
    (:class:`~escale.protocol.index.objects.PageIndexReader`) into a
    :class:`PageMembers`: never held whole, as text or as an object per
    member. Raises IntegrityError when the envelope does not open (tampered,
    cut, swapped), ProtocolError when the page index is malformed or not
    canonical, lists a member twice, names another generation than the page
    name, or its members do not fill the page up to it.
    """
    if not is_page_name(name):
        raise ProtocolError(f"relay object {name}: not a page name", name=name)
    plain = tempfile.TemporaryFile(dir=spool_dir)  # noqa: SIM115 (owned by the OpenedPage returned)
    try:
        with tempfile.TemporaryFile(dir=spool_dir) as raw:
            relay_get(name, cast(BinaryIO, raw))
            raw.seek(0)
            sealer.open_stream(name, cast(BinaryIO, raw), cast(BinaryIO, plain))
        total = plain.tell()
        if total < _TRAILER.size:
            raise ProtocolError(f"relay object {name}: too short for a page", name=name)
        plain.seek(total - _TRAILER.size)
        (length,) = _TRAILER.unpack(plain.read(_TRAILER.size))
        if length > MAX_PAGE_INDEX_BYTES or length > total - _TRAILER.size:
            raise ProtocolError(f"relay object {name}: bad page index length", name=name)
        start = total - _TRAILER.size - length
        plain.seek(start)
        reader = PageIndexReader(plain.read, length, name)
        if name.rpartition("/")[2].partition(".")[0] != f"{reader.generation:012d}":
            raise ProtocolError(f"relay object {name}: page index names generation {reader.generation}",
                                name=name)
        members = PageMembers.read(reader)
        if members.end != start:
            raise ProtocolError(f"relay object {name}: page members do not fill the page", name=name)
        return OpenedPage(name, cast(BinaryIO, plain), members)
    except BaseException:
        plain.close()
        raise


class _Getter(Protocol):
    def __call__(self, name: str, sink: BinaryIO) -> None: ...


def inflate_to(stored: bytes, compression: str, out: Writable, name: str) -> None:
    """Write the content of a member's stored form into ``out``."""
    if compression == "none":
        out.write(stored)
        return
    inflater = zlib.decompressobj()
    data = stored
    try:
        while data:
            piece = inflater.decompress(data, CHUNK)
            out.write(piece)
            data = inflater.unconsumed_tail
        out.write(inflater.flush())
    except zlib.error as exc:
        raise IntegrityError(f"relay object {name}: member does not inflate") from exc
    if not inflater.eof or inflater.unused_data:
        raise IntegrityError(f"relay object {name}: member cut or followed by foreign bytes")


#: the first bytes of a big file tried alone before its whole first MiB ...
BIG_PROBE = 64 * 1024
#: ... which is deflated only if they shrink to at most this share
BIG_PROBE_RATIO = 0.97


def _deflates(first: bytes) -> bool:
    """Whether a big file whose first MiB is ``first`` is worth deflating."""
    if len(first) > BIG_PROBE and len(zlib.compress(first[:BIG_PROBE], 1)) > BIG_PROBE_RATIO * BIG_PROBE:
        return False
    return len(zlib.compress(first, 1)) <= BIG_COMPRESS_RATIO * len(first)


class DeflatingReader:
    """Reads ``source`` as a zlib stream (or as is), counting what it produces.

    The decision is taken on the first MiB: deflated when that sample shrinks
    to at most :data:`BIG_COMPRESS_RATIO` of its size. Its first
    :data:`BIG_PROBE` bytes are tried alone first: when they do not shrink to
    :data:`BIG_PROBE_RATIO` (already compressed or encrypted data), the file
    is stored as is without deflating the rest of the sample (which costs
    about as much as sealing 20 MiB).
    """

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        first = source.read(CHUNK)
        self.compression: Literal["none", "zlib"] = "zlib" if first and _deflates(first) else "none"
        self._deflater = zlib.compressobj(6) if self.compression == "zlib" else None
        self._buffer = bytearray()
        self._pending = first
        self._done = False
        self.produced = 0

    def _fill(self, want: int) -> None:
        while len(self._buffer) < want and not self._done:
            data = self._pending if self._pending else self.source.read(CHUNK)
            self._pending = b""
            if self._deflater is None:
                if data:
                    self._buffer += data
                else:
                    self._done = True
                continue
            if data:
                self._buffer += self._deflater.compress(data)
            else:
                self._buffer += self._deflater.flush()
                self._done = True

    def read(self, size: int = -1) -> bytes:
        want = size if size is not None and size >= 0 else CHUNK
        if self._deflater is None and not self._buffer:
            # stored as is: the sample first, then the source's reads as they
            # come (no buffer: a big file is not copied on its way through)
            if self._pending:
                out, self._pending = self._pending[:want], self._pending[want:]
            else:
                out = self.source.read(want) if want else b""
            self.produced += len(out)
            return out
        self._fill(want)
        out = bytes(self._buffer[:want])
        del self._buffer[:want]
        self.produced += len(out)
        return out

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class InflatingWriter:
    """A sink that inflates what it receives (or passes it through) into ``out``."""

    def __init__(self, out: Writable, compression: str, name: str) -> None:
        self.out = out
        self.name = name
        self._inflater = zlib.decompressobj() if compression == "zlib" else None
        self.received = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.received += len(data)
        if self._inflater is None:
            self.out.write(bytes(data))
            return len(data)
        try:
            chunk = bytes(data)
            while chunk:
                self.out.write(self._inflater.decompress(chunk, CHUNK))
                chunk = self._inflater.unconsumed_tail
        except zlib.error as exc:
            raise IntegrityError(f"relay object {self.name}: content does not inflate") from exc
        return len(data)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self._inflater is not None:
            try:
                self.out.write(self._inflater.flush())
            except zlib.error as exc:
                raise IntegrityError(f"relay object {self.name}: content does not inflate") from exc
            if not self._inflater.eof or self._inflater.unused_data:
                raise IntegrityError(f"relay object {self.name}: content cut or followed by foreign bytes")
