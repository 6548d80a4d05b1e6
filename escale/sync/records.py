"""Packed records: a local file's or a base entry's fields in one ``bytes``.

A pass holds, for every tracked path, its base entry (the state database's
``files`` table) and what the scan found. As objects, each costs a dataclass,
an ``int`` object per large number and a checksum string of about 120 bytes;
packed, both fit in one ``bytes`` object of about 90 bytes, and an unchanged
file's scan record *is* its base record (the same object). Only a memory
matter: readers get :class:`~escale.sync.planner.LocalFile` and
:class:`~escale.sync.planner.BaseEntry` values, equal to those packed.

Layout (little-endian):

* the *content* part, common to both: ``size`` and ``mtime_ns`` (signed 64
  bits each), then one byte saying how the checksum is held: 0 none; 1 to
  :data:`_TEXT` - 1 an algorithm of :data:`ALGORITHMS` (its index + 1),
  followed by one byte of digest length and the raw digest; :data:`_TEXT` the
  checksum's UTF-8 text, after two bytes of length;
* then a *tail*: nothing, or 16 bytes (``inode``, ``ctime_ns``) for a local
  file that carries its identity; 9 bytes (``version``, then flags: origin
  ``remote`` 1, ``modified_here`` 2, ``local_deleted`` 4) for a base entry.
  The two tails differ in length, so a base record read as a local file is
  that file without identity.

A value that would not come back exactly (a number outside 64 bits, a field
of an unexpected type, a checksum whose text cannot be UTF-8) has no record:
the packing functions return None and the caller keeps the object itself.
The format lives in memory only; it is never written anywhere.
"""

from __future__ import annotations

import struct

#: Checksum algorithms whose ``name:hex`` form is held as a raw digest (any
#: other checksum is held as text). Fixed order: a record's code is the index + 1.
ALGORITHMS = ("sha256", "sha1", "sha512", "md5", "sha224", "sha384", "blake2b", "blake2s",
              "sha3_224", "sha3_256", "sha3_384", "sha3_512")
_CODES = {name: code for code, name in enumerate(ALGORITHMS, 1)}
_TEXT = 255

_HEAD = struct.Struct("<qqB")
_HEAD_SIZE = _HEAD.size  # 17
_TEXT_LEN = struct.Struct("<H")
_IDENTITY = struct.Struct("<qq")
_BASE_TAIL = struct.Struct("<qB")
#: the tail lengths that tell a local file's identity from a base entry
IDENTITY_TAIL = _IDENTITY.size  # 16
BASE_TAIL = _BASE_TAIL.size  # 9

_MIN, _MAX = -(1 << 63), (1 << 63) - 1
_REMOTE, _MODIFIED, _DELETED = 1, 2, 4


def _fits(value: object) -> bool:
    return type(value) is int and _MIN <= value <= _MAX


def pack_content(size: object, mtime_ns: object, checksum: object) -> bytes | None:
    """The content part of a record, or None when a field would not come back exactly."""
    if not (_fits(size) and _fits(mtime_ns)):
        return None
    if checksum is None:
        return _HEAD.pack(size, mtime_ns, 0)
    if type(checksum) is not str:
        return None
    name, sep, digits = checksum.partition(":")
    code = _CODES.get(name) if sep else None
    if code is not None and len(digits) <= 510 and not len(digits) % 2:
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            raw = None
        if raw is not None and raw.hex() == digits:  # lower case, no blanks: exactly this text back
            return _HEAD.pack(size, mtime_ns, code) + bytes((len(raw),)) + raw
    try:
        text = checksum.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no exact UTF-8 form
        return None
    if len(text) > 0xFFFF:
        return None
    return _HEAD.pack(size, mtime_ns, _TEXT) + _TEXT_LEN.pack(len(text)) + text


def pack_local(size: object, mtime_ns: object, checksum: object, inode: object, ctime_ns: object) -> bytes | None:
    """A local file's record (see the module), or None."""
    content = pack_content(size, mtime_ns, checksum)
    if content is None:
        return None
    if inode == 0 and ctime_ns == 0 and type(inode) is int and type(ctime_ns) is int:
        return content
    if not (_fits(inode) and _fits(ctime_ns)):
        return None
    return content + _IDENTITY.pack(inode, ctime_ns)


def pack_base(size: object, mtime_ns: object, checksum: object, version: object, origin: object,
              modified_here: object, local_deleted: object) -> bytes | None:
    """A base entry's record (see the module), or None."""
    if not _fits(version) or origin not in ("local", "remote") or type(origin) is not str:
        return None
    if type(modified_here) is not bool or type(local_deleted) is not bool:
        return None
    content = pack_content(size, mtime_ns, checksum)
    if content is None:
        return None
    flags = (_REMOTE if origin == "remote" else 0) | (_MODIFIED if modified_here else 0) | (
        _DELETED if local_deleted else 0)
    return content + _BASE_TAIL.pack(version, flags)


def content_end(record: bytes) -> int:
    """Where the content part of ``record`` ends (its tail starts)."""
    code = record[16]
    if code == 0:
        return _HEAD_SIZE
    if code == _TEXT:
        length: int = _TEXT_LEN.unpack_from(record, _HEAD_SIZE)[0]
        return _HEAD_SIZE + 2 + length
    return _HEAD_SIZE + 1 + record[_HEAD_SIZE]


def size_mtime(record: bytes) -> tuple[int, int]:
    """``(size, mtime_ns)`` of a record."""
    size, mtime_ns, _ = _HEAD.unpack_from(record)
    return size, mtime_ns


def checksum_of(record: bytes) -> str | None:
    """The checksum of a record, as the text it was packed from."""
    code = record[16]
    if code == 0:
        return None
    if code == _TEXT:
        end = _HEAD_SIZE + 2 + _TEXT_LEN.unpack_from(record, _HEAD_SIZE)[0]
        return record[_HEAD_SIZE + 2:end].decode("utf-8")
    end = _HEAD_SIZE + 1 + record[_HEAD_SIZE]
    return f"{ALGORITHMS[code - 1]}:{record[_HEAD_SIZE + 1:end].hex()}"


def identity_of(record: bytes) -> tuple[int, int]:
    """``(inode, ctime_ns)`` of a local file's record (zeros when it carries
    none, and for a base record)."""
    end = content_end(record)
    if len(record) - end == IDENTITY_TAIL:
        inode, ctime_ns = _IDENTITY.unpack_from(record, end)
        return inode, ctime_ns
    return 0, 0


def unpack_local(record: bytes) -> tuple[int, int, str | None, int, int]:
    """A local file's fields from its record (or a base record: no identity)."""
    size, mtime_ns = size_mtime(record)
    inode, ctime_ns = identity_of(record)
    return size, mtime_ns, checksum_of(record), inode, ctime_ns


def unpack_base(record: bytes) -> tuple[int, int, str | None, int, str, bool, bool]:
    """A base entry's fields (``BaseEntry``'s order) from its record."""
    size, mtime_ns, code = _HEAD.unpack_from(record)
    tail = len(record) - BASE_TAIL
    version, flags = _BASE_TAIL.unpack_from(record, tail)
    if code == 0:
        checksum = None
    elif code == _TEXT:
        checksum = record[_HEAD_SIZE + 2:tail].decode("utf-8")
    else:
        checksum = f"{ALGORITHMS[code - 1]}:{record[_HEAD_SIZE + 1:tail].hex()}"
    return (size, mtime_ns, checksum, version, "remote" if flags & _REMOTE else "local",
            bool(flags & _MODIFIED), bool(flags & _DELETED))


def base_version(record: bytes) -> int:
    """A base record's ``version``."""
    version: int = _BASE_TAIL.unpack_from(record, len(record) - BASE_TAIL)[0]
    return version


def base_local_deleted(record: bytes) -> bool:
    """A base record's ``local_deleted``."""
    return bool(record[-1] & _DELETED)


def is_base_of(base: object, content: bytes) -> bool:
    """Whether ``base`` is a base record whose content part is ``content``
    (then it also reads back as the local file ``content`` describes)."""
    return type(base) is bytes and len(base) == len(content) + BASE_TAIL and base.startswith(content)
