"""Backup archives: a tar file of relay objects plus a manifest.

Layout of an archive (plain, gzip or bzip2 tar, chosen by the file name's
extension: ``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``/``.tbz2``)::

    relay/<relay name>        one regular member per relay object, sealed bytes as stored,
                              in the protocol's write order (payloads first, header last)
    escale-backup.json        the manifest, written LAST

The manifest (UTF-8 JSON)::

    {"format": 1, "type": "escale-backup", "created": "<UTC ISO 8601>",
     "section": "<config section>", "relay": "<relay description, no password>",
     "encryption": "<algorithm>" | null, "consistent": true | false,
     "lease_generation": <int>,
     "objects": [{"name": "<relay name>", "size": <bytes>, "sha256": "<hex>"}, ...]}

``consistent`` is false for a ``--fast`` backup (taken without the lease).
Because the manifest is last, a truncated archive has no manifest and is
refused. :func:`verify_archive` reads the whole archive before anything is
restored from it.

An archive is written under a temporary name in its own folder and renamed
into place when complete: a failed or interrupted backup never leaves a partial
archive under the final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Literal

from escale.errors import ArchiveError, EscaleError, UnsafeName, UsageError
from escale.ops.common import ObjectInfo, in_protocol_order
from escale.ops.copy import digest
from escale.relay.base import check_name

log = logging.getLogger(__name__)

MANIFEST = "escale-backup.json"
PREFIX = "relay/"
FORMAT = 1
_MAX_MANIFEST = 256 * 1024 * 1024

Compression = Literal["", "gz", "bz2"]
_EXTENSIONS: tuple[tuple[str, Compression], ...] = (
    (".tar.gz", "gz"), (".tgz", "gz"), (".tar.bz2", "bz2"), (".tbz2", "bz2"), (".tar", ""),
)

#: What reading an archive may raise besides our own errors (truncation, bad data).
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, ValueError, UnicodeDecodeError)


def compression_for(path: str) -> Compression:
    """The compression an archive name asks for; UsageError for any other name."""
    lower = path.lower()
    for suffix, kind in _EXTENSIONS:
        if lower.endswith(suffix):
            return kind
    raise UsageError(f"archive {path}: unknown extension (use .tar, .tar.gz, .tgz or .tar.bz2)")


@dataclass
class Manifest:
    """The manifest of one archive (see the module docstring)."""

    section: str
    relay: str
    encryption: str | None
    consistent: bool
    lease_generation: int = 0
    created: str = ""
    objects: list[ObjectInfo] = field(default_factory=list)

    def encode(self) -> bytes:
        doc = {
            "format": FORMAT, "type": "escale-backup", "created": self.created, "section": self.section,
            "relay": self.relay, "encryption": self.encryption, "consistent": self.consistent,
            "lease_generation": self.lease_generation,
            "objects": [{"name": o.name, "size": o.size, "sha256": o.sha256} for o in self.objects],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArchiveError(f"archive {where}: {MANIFEST} is not valid JSON") from exc
        if not isinstance(doc, dict) or doc.get("type") != "escale-backup":
            raise ArchiveError(f"archive {where}: {MANIFEST} is not an escale backup manifest")
        if doc.get("format") != FORMAT:
            raise ArchiveError(f"archive {where}: unsupported backup format {doc.get('format')!r}")
        try:
            objects = [ObjectInfo(_str(o["name"]), _int(o["size"]), _str(o["sha256"])) for o in doc["objects"]]
            return cls(
                section=_str(doc["section"]), relay=_str(doc["relay"]),
                encryption=None if doc.get("encryption") is None else _str(doc["encryption"]),
                consistent=bool(doc["consistent"]), lease_generation=_int(doc.get("lease_generation", 0)),
                created=_str(doc.get("created", "")), objects=objects,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"archive {where}: {MANIFEST} is malformed ({exc})") from exc


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError("expected a non-negative integer")
    return value


# --------------------------------------------------------------------------- writing


def _open_for_writing(handle: BinaryIO, compression: Compression) -> tarfile.TarFile:
    if compression == "gz":
        return tarfile.open(fileobj=handle, mode="w:gz", format=tarfile.PAX_FORMAT)
    if compression == "bz2":
        return tarfile.open(fileobj=handle, mode="w:bz2", format=tarfile.PAX_FORMAT)
    return tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT)


class ArchiveWriter:
    """Writes an archive under a temporary name; :meth:`commit` renames it into place.

    Use as a context manager: leaving the block without :meth:`commit` (an
    error) removes the temporary file, so nothing appears under ``path``.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.compression = compression_for(path)
        folder = os.path.dirname(self.path)
        try:
            fd, self.temp = tempfile.mkstemp(dir=folder, prefix=".escale-part-",
                                             suffix=f".{os.path.basename(self.path)}")
        except OSError as exc:
            raise ArchiveError(f"archive {path}: cannot create it in {folder}: {exc.strerror or exc}") from None
        self._handle = os.fdopen(fd, "wb")
        self._tar = _open_for_writing(self._handle, self.compression)
        self._done = False

    def add(self, name: str, size: int, source: BinaryIO) -> None:
        """Add relay object ``name`` (``size`` bytes read from ``source``)."""
        info = tarfile.TarInfo(PREFIX + name)
        info.size = size
        info.mtime = int(time.time())
        info.mode = 0o600
        self._tar.addfile(info, source)

    def commit(self, manifest: Manifest) -> None:
        """Add the manifest last, flush to disk, read the whole archive back
        (:func:`verify_archive`), and only then rename it into place.

        Raises ArchiveError when the archive read back does not match
        ``manifest``; nothing is renamed then.
        """
        data = manifest.encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o600
        self._tar.addfile(info, io.BytesIO(data))
        self._tar.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        back = verify_archive(self.temp)
        if back.objects != manifest.objects:
            raise ArchiveError(f"archive {self.path}: read back differs from what was written")
        os.replace(self.temp, self.path)
        self._done = True
        with contextlib.suppress(OSError):
            dir_fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def abort(self) -> None:
        if self._done:
            return
        with contextlib.suppress(Exception):
            self._tar.close()
        with contextlib.suppress(Exception):
            self._handle.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temp)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


# --------------------------------------------------------------------------- reading


def _open_for_reading(path: str) -> tarfile.TarFile:
    compression = compression_for(path)
    if not os.path.isfile(path):
        raise ArchiveError(f"archive {path}: no such file")
    try:
        if compression == "gz":
            return tarfile.open(path, mode="r:gz")
        if compression == "bz2":
            return tarfile.open(path, mode="r:bz2")
        return tarfile.open(path, mode="r:")
    except _READ_ERRORS as exc:
        raise ArchiveError(f"archive {path}: not a readable {compression or 'plain'} tar archive ({exc})") from None


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` cannot be part of a backup, or None."""
    if not member.isreg():
        kind = "link" if member.issym() or member.islnk() else "directory" if member.isdir() else "special file"
        return f"member {member.name!r} is a {kind}"
    if member.name == MANIFEST:
        return None
    if not member.name.startswith(PREFIX):
        return f"member {member.name!r} is not a relay object"
    try:
        check_name(member.name[len(PREFIX):])
    except UnsafeName:
        return f"member {member.name!r} has an unsafe name"
    return None


def _check_end(tar: tarfile.TarFile, path: str) -> None:
    """Require the end-of-archive marker (two zero blocks) after the last member,
    so that an archive cut anywhere, even after its last member, is refused."""
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    if fileobj.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
        raise ArchiveError(f"archive {path}: truncated (no end-of-archive marker)")


def verify_archive(path: str) -> Manifest:
    """Read the whole archive at ``path`` and check it against its manifest.

    Checks: the extension is known (UsageError otherwise), the file is a
    readable tar archive of that compression, every member is a regular file
    named ``escale-backup.json`` or ``relay/<safe relay name>`` (no absolute
    name, no ``..``, no link, no device), each appears once, the manifest is
    present and lists exactly the members, with their sizes and SHA-256.
    Raises ArchiveError (exit 65) on the first fault; reads only, writes nothing.
    """
    found: dict[str, ObjectInfo] = {}
    manifest: Manifest | None = None
    with contextlib.closing(_open_for_reading(path)) as tar:
        try:
            for member in tar:
                problem = _member_problem(member)
                if problem:
                    raise ArchiveError(f"archive {path}: {problem}; refused")
                handle = tar.extractfile(member)
                assert handle is not None
                if member.name == MANIFEST:
                    if manifest is not None:
                        raise ArchiveError(f"archive {path}: two manifests")
                    if member.size > _MAX_MANIFEST:
                        raise ArchiveError(f"archive {path}: manifest too large")
                    manifest = Manifest.decode(handle.read(), path)
                    continue
                name = member.name[len(PREFIX):]
                if name in found:
                    raise ArchiveError(f"archive {path}: relay object {name} appears twice")
                size, sha = digest(handle)  # type: ignore[arg-type]
                if size != member.size:
                    raise ArchiveError(f"archive {path}: member {member.name} is truncated")
                found[name] = ObjectInfo(name, size, sha)
            _check_end(tar, path)
        except EscaleError:
            raise
        except _READ_ERRORS as exc:
            raise ArchiveError(f"archive {path}: corrupt or truncated ({exc})") from None
    if manifest is None:
        raise ArchiveError(f"archive {path}: no {MANIFEST} (truncated, or not an escale backup)")
    listed = {o.name: o for o in manifest.objects}
    if len(listed) != len(manifest.objects):
        raise ArchiveError(f"archive {path}: the manifest lists an object twice")
    for name, info in listed.items():
        try:
            check_name(name)
        except UnsafeName:
            raise ArchiveError(f"archive {path}: the manifest lists an unsafe name {name!r}") from None
        got = found.get(name)
        if got is None:
            raise ArchiveError(f"archive {path}: relay object {name} is listed but missing")
        if got.size != info.size or got.sha256 != info.sha256:
            raise ArchiveError(f"archive {path}: relay object {name} does not match the manifest (altered)")
    extra = sorted(set(found) - set(listed))
    if extra:
        raise ArchiveError(f"archive {path}: relay object {extra[0]} is not listed in the manifest")
    return manifest


def read_object(path: str, name: str, limit: int = 1024 * 1024) -> bytes | None:
    """The content of small relay object ``name`` in the archive, or None when absent.

    Raises ArchiveError when the archive cannot be read or the object exceeds
    ``limit`` bytes.
    """
    with contextlib.closing(_open_for_reading(path)) as tar:
        try:
            member = tar.getmember(PREFIX + name)
        except KeyError:
            return None
        except _READ_ERRORS as exc:
            raise ArchiveError(f"archive {path}: corrupt or truncated ({exc})") from None
        if not member.isreg() or member.size > limit:
            raise ArchiveError(f"archive {path}: relay object {name} is not a small regular member")
        handle = tar.extractfile(member)
        assert handle is not None
        try:
            return handle.read()
        except _READ_ERRORS as exc:
            raise ArchiveError(f"archive {path}: corrupt or truncated ({exc})") from None


@contextlib.contextmanager
def read_objects(path: str, manifest: Manifest) -> Iterator[Iterator[tuple[ObjectInfo, BinaryIO]]]:
    """The objects of a verified archive in protocol order, as (info, reader).

    Each reader must be consumed before the next item is taken. Raises
    ArchiveError if the archive cannot be read (it changed since it was
    verified); callers check each object's digest again before using it.
    """
    tar = _open_for_reading(path)
    listed = {o.name: o for o in manifest.objects}

    def items() -> Iterator[tuple[ObjectInfo, BinaryIO]]:
        try:
            for name in in_protocol_order(list(listed)):
                handle = tar.extractfile(PREFIX + name)
                if handle is None:
                    raise ArchiveError(f"archive {path}: relay object {name} is not a regular member")
                yield listed[name], handle  # type: ignore[misc]
        except KeyError:
            raise ArchiveError(f"archive {path}: changed while being restored") from None
        except _READ_ERRORS as exc:
            raise ArchiveError(f"archive {path}: corrupt or truncated ({exc})") from None

    try:
        yield items()
    finally:
        tar.close()
