"""The local state database: one SQLite file per client.

Holds the client's identity, the last synced state of every path (the planner's
*base*), the checksum cache, the access modifiers, the highest relay version
seen per path key (so a relay serving an older history is noticed), decoded
placeholders (they are immutable) and lease observations.

Outside a batch, every write is its own transaction, committed before the
call returns: a crash loses at most the step in progress, which the next pass
redoes. WAL mode lets ``escalectl access`` write while the daemon runs.

**Batches.** Inside :meth:`StateDB.batch` writes are grouped: they are
committed together when the batch ends (whether it ends normally or by an
exception), and also every :data:`BATCH_WRITES` writes or
:data:`BATCH_SECONDS` seconds, so a batch never holds SQLite's write lock long
(``escalectl access`` waits at most that long). A crash therefore loses at most
the writes since the last of those commits, never a part of one write, and
always a *suffix* of the pass's writes (SQLite's transactions are atomic and
ordered). That is still safe because a pass only batches writes that the next
pass redoes from what it finds, and whose loss never makes escale believe
something that is not so:

* the checksum cache: a lost entry only means that the file is hashed again;
  pruning it is redone by the next pass's prune;
* decoded placeholders, registrations and the change-marker snapshot
  (``relay_meta``): lost entries are fetched and decoded again (a lost
  snapshot means a full read of the relay);
* the highest version seen per path key: a lost record is the version read
  during that very pass; the next pass reads the relay again and records what
  it shows (it only ever raises a version), so the loss can only hide a
  rollback that happened within the crashed pass itself.

Writes that record an action's outcome (a downloaded file's base, a
commit's) are made outside any batch unless their loss is equally harmless
(a file received whose base is lost is found identical to the relay's
version at the next pass and recorded then).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Container, Generator, Iterable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

from escale.derived import DerivedDict
from escale.errors import LocalError
from escale.protocol.layout import META, new_client_id
from escale.protocol.lease import Observation
from escale.sync import records
from escale.sync.planner import Access, BaseEntry

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
#: A batch (:meth:`StateDB.batch`) commits at least every this many writes...
BATCH_WRITES = 5000
#: ... and at least every this many seconds.
BATCH_SECONDS = 1.0
#: Path keys per look-up of :meth:`StateDB.seen_of_keys` (below SQLite's
#: oldest limit on a statement's parameters, 999).
SEEN_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, checksum TEXT,
    version INTEGER NOT NULL, origin TEXT NOT NULL, modified_here INTEGER NOT NULL,
    local_deleted INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS checksums (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, checksum TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS access (path TEXT PRIMARY KEY, read INTEGER, write INTEGER);
CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS relay_meta (name TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS lease_seen (
    generation INTEGER PRIMARY KEY, token TEXT NOT NULL, beat INTEGER NOT NULL,
    first_seen REAL NOT NULL, boot TEXT NOT NULL);
"""


class StateDB:
    """The state database at ``path`` (created with its folder, mode 0700)."""

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise LocalError(f"cannot open state database {path}: {exc}", path=path) from exc
        self._lock = threading.RLock()
        #: open batches (nested batches share the outermost one's transaction)
        self._depth = 0
        self._pending = 0
        self._since = 0.0
        #: the cache of relay objects (meta_cache), made on first use
        self._meta_cache: _TableMap | None = None
        #: whether the deliveries table is known to exist on this connection
        self._has_deliveries = False
        version = self.get_setting("schema")
        if version is None:
            self.set_setting("schema", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise LocalError(f"state database {path} has unknown schema {version}", path=path)

    def close(self) -> None:
        """Write the cache writes held back (best effort: it is a cache), then close."""
        if self._meta_cache is not None:
            try:
                self._meta_cache.flush()
            except LocalError as exc:
                log.warning("state database %s: cached relay objects not written: %s", self.path, exc)
        self._conn.close()

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                rows = self._conn.execute(sql, args).fetchall()
                if self._depth and not sql.startswith("SELECT"):
                    self._pending += 1
                    if self._pending >= BATCH_WRITES or time.monotonic() - self._since >= BATCH_SECONDS:
                        self._conn.execute("COMMIT")
                        self._begin()
                return rows
            except sqlite3.Error as exc:
                raise LocalError(f"state database {self.path}: {exc}", path=self.path) from exc

    def _exec_many(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        """One write statement for each of ``rows``, prepared once
        (``executemany``): as many writes as rows, each complete on its own;
        outside a batch they form one transaction, inside one they count
        towards its :data:`BATCH_WRITES`."""
        if not rows:
            return
        with self._lock:
            try:
                if self._depth:
                    self._conn.executemany(sql, rows)
                    self._pending += len(rows)
                    if self._pending >= BATCH_WRITES or time.monotonic() - self._since >= BATCH_SECONDS:
                        self._conn.execute("COMMIT")
                        self._begin()
                else:
                    self._conn.execute("BEGIN")
                    try:
                        self._conn.executemany(sql, rows)
                    except BaseException:
                        self._conn.execute("ROLLBACK")
                        raise
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise LocalError(f"state database {self.path}: {exc}", path=self.path) from exc

    def _put_blob(self, table: str, key_col: str, value_col: str, key: str, length: int,
                  pieces: Iterable[bytes]) -> None:
        """``INSERT OR REPLACE`` of ``key`` with the concatenation of
        ``pieces`` as its value, ``length`` bytes in all, written piece by
        piece (incremental blob I/O): neither the whole value nor SQLite's
        copies of it are held in memory. One write, complete on its own (its
        own transaction, or the batch's). Pieces that do not add up to
        ``length`` raise ValueError, and nothing is written (the previous
        value stays); so does an exception raised while the pieces are made."""
        with self._lock:
            try:
                own = not self._depth
                if own:
                    self._conn.execute("BEGIN")
                else:
                    self._conn.execute("SAVEPOINT put_blob")
                try:
                    cursor = self._conn.execute(
                        f"INSERT OR REPLACE INTO {table} ({key_col}, {value_col}) VALUES (?, zeroblob(?))",
                        (key, length))
                    rowid = cursor.lastrowid
                    assert rowid is not None
                    written = 0
                    with self._conn.blobopen(table, value_col, rowid) as blob:
                        for piece in pieces:
                            written += len(piece)
                            if written > length:
                                break
                            blob.write(piece)
                    if written != length:
                        raise ValueError(f"state database {self.path}: {key}: the pieces given hold "
                                         f"{'more than' if written > length else written} bytes, not {length}")
                except BaseException:
                    self._conn.execute("ROLLBACK" if own else "ROLLBACK TO put_blob")
                    if not own:
                        self._conn.execute("RELEASE put_blob")
                    raise
                if own:
                    self._conn.execute("COMMIT")
                else:
                    self._conn.execute("RELEASE put_blob")
                    self._pending += 1
                    if self._pending >= BATCH_WRITES or time.monotonic() - self._since >= BATCH_SECONDS:
                        self._conn.execute("COMMIT")
                        self._begin()
            except sqlite3.Error as exc:
                raise LocalError(f"state database {self.path}: {exc}", path=self.path) from exc

    def _begin(self) -> None:
        self._conn.execute("BEGIN")
        self._pending = 0
        self._since = time.monotonic()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the writes made inside (by any thread) into few transactions.

        They are committed when the outermost batch ends, normally or by an
        exception (each write was complete on its own: nothing is rolled
        back), and every :data:`BATCH_WRITES` writes or :data:`BATCH_SECONDS`
        seconds meanwhile. Only for writes whose loss in a crash the next pass
        repairs (see the module's docstring). Raises LocalError when the
        final commit fails.
        """
        with self._lock:
            if self._depth == 0:
                try:
                    self._begin()
                except sqlite3.Error as exc:
                    raise LocalError(f"state database {self.path}: {exc}", path=self.path) from exc
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    try:
                        self._conn.execute("COMMIT")
                    except sqlite3.Error as exc:
                        raise LocalError(f"state database {self.path}: {exc}", path=self.path) from exc

    def _stream(self, sql: str) -> Generator[tuple[object, ...], None, None]:
        """The rows of a query, fetched in chunks (no list of every row).

        The lock is held while the caller consumes them: consume at once."""
        return self._stream_args(sql, ())

    def _stream_args(self, sql: str, args: tuple[object, ...]) -> Generator[tuple[object, ...], None, None]:
        with self._lock:
            try:
                cursor = self._conn.execute(sql, args)
                while chunk := cursor.fetchmany(1024):
                    yield from chunk
            except sqlite3.Error as exc:
                raise LocalError(f"state database {self.path}: {exc}", path=self.path) from exc

    # ----------------------------------------------------------- settings

    def get_setting(self, key: str) -> str | None:
        rows = self._exec("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_setting(self, key: str, value: str) -> None:
        self._exec("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))

    def client_id(self) -> str:
        """This client's unique identity, generated on first use."""
        current = self.get_setting("client_id")
        if current is None:
            current = new_client_id()
            self.set_setting("client_id", current)
        return current

    def new_identity(self) -> str:
        """Give this state a fresh client id (a copied state folder must not
        act as the client it was copied from); returns it."""
        fresh = new_client_id()
        self.set_setting("client_id", fresh)
        return fresh

    # ----------------------------------------------------------- what this client knows of its relay

    def repository_identity(self) -> str | None:
        """The identity of the repository this client is bound to, if recorded."""
        return self.get_setting("repository")

    def bind_repository(self, identity: str) -> None:
        self.set_setting("repository", identity)

    def has_history(self) -> bool:
        """Whether this client ever synced: it tracks a path or knows a version."""
        return bool(self._exec("SELECT 1 FROM files LIMIT 1") or self._exec("SELECT 1 FROM seen LIMIT 1"))

    # ----------------------------------------------------------- base

    def base(self) -> BaseMap:
        """Every tracked path's base entry, as a :class:`BaseMap` (one packed
        record per path; paths interned: the scan's and the relay state's
        equal strings are then the same objects)."""
        rows = self._stream("SELECT path, size, mtime_ns, checksum, version, origin, modified_here, "
                            "local_deleted FROM files")
        out = BaseMap()
        store, pack = out.store, records.pack_base
        for r in rows:
            size, mtime_ns, version = int(r[1]), int(r[2]), int(r[4])  # type: ignore[call-overload]
            checksum = None if r[3] is None else str(r[3])
            origin: Literal["local", "remote"] = "remote" if r[5] == "remote" else "local"
            modified_here, local_deleted = bool(r[6]), bool(r[7])
            record = pack(size, mtime_ns, checksum, version, origin, modified_here, local_deleted)
            store(sys.intern(str(r[0])), record if record is not None else BaseEntry(
                size, mtime_ns, checksum, version, origin, modified_here, local_deleted))
        return out

    def base_entry(self, path: str) -> BaseEntry | None:
        """``path``'s base entry, if tracked (one query)."""
        rows = self._exec("SELECT size, mtime_ns, checksum, version, origin, modified_here, local_deleted FROM files "
                          "WHERE path = ?", (path,))
        if not rows:
            return None
        r = rows[0]
        return BaseEntry(int(r[0]), int(r[1]), None if r[2] is None else str(r[2]), int(r[3]),  # type: ignore[call-overload]
                         "remote" if r[4] == "remote" else "local", bool(r[5]), bool(r[6]))

    def set_base(self, path: str, entry: BaseEntry) -> None:
        self._exec(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (path, entry.size, entry.mtime_ns, entry.checksum, entry.version, entry.origin,
             int(entry.modified_here), int(entry.local_deleted)),
        )

    def set_bases(self, entries: Sequence[tuple[str, BaseEntry]]) -> None:
        """:meth:`set_base` for each (path, entry), in one prepared statement."""
        self._exec_many("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [(path, e.size, e.mtime_ns, e.checksum, e.version, e.origin, int(e.modified_here),
                          int(e.local_deleted)) for path, e in entries])

    def forget(self, path: str) -> None:
        self._exec("DELETE FROM files WHERE path = ?", (path,))

    # ----------------------------------------------------------- checksum cache

    def cached_checksum(self, path: str, st: os.stat_result) -> str | None:
        rows = self._exec(
            "SELECT checksum FROM checksums WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ? "
            "AND ctime_ns = ?", (path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        return str(rows[0][0]) if rows else None

    def cached_checksums(self, folder: str) -> dict[str, tuple[int, int, int, int, str]]:
        """The cache entries of the files directly in ``folder`` (relative,
        ``""`` for the root), by file name: (size, mtime_ns, inode, ctime_ns,
        checksum). One query per folder, so a scan never holds the whole
        cache."""
        if folder:
            prefix = folder + "/"
            rows = self._stream_args(
                "SELECT path, size, mtime_ns, inode, ctime_ns, checksum FROM checksums "
                "WHERE path >= ? AND path < ? AND instr(substr(path, ?), '/') = 0",
                (prefix, folder + "0", len(prefix) + 1))
        else:
            rows = self._stream_args("SELECT path, size, mtime_ns, inode, ctime_ns, checksum FROM checksums "
                                     "WHERE instr(path, '/') = 0", ())
        cut = len(folder) + 1 if folder else 0
        return {str(r[0])[cut:]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]), str(r[5]))  # type: ignore[call-overload]
                for r in rows}

    def cache_checksum(self, path: str, st: os.stat_result, checksum: str) -> None:
        self._exec("INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?, ?, ?)",
                   (path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, checksum))

    def cache_checksums(self, entries: Sequence[tuple[str, os.stat_result, str]]) -> None:
        """:meth:`cache_checksum` for each (path, stat, checksum), in one prepared statement."""
        self._exec_many("INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?, ?, ?)",
                        [(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, checksum)
                         for path, st, checksum in entries])

    def prune_checksums(self, keep: Container[str], *, also_keep: Callable[[str], bool] | None = None) -> int:
        """Drop the cached checksums of paths not in ``keep`` (and for which
        ``also_keep`` is not true); return how many. One streamed read of the
        cache and one statement per dropped entry (in the current batch, if
        any)."""
        gone = [path for (path,) in self._stream("SELECT path FROM checksums")
                if path not in keep and not (also_keep is not None and also_keep(str(path)))]
        for path in gone:
            self._exec("DELETE FROM checksums WHERE path = ?", (path,))
        return len(gone)

    def checksum_count(self) -> int:
        """How many checksums the cache holds."""
        count = self._exec("SELECT count(*) FROM checksums")[0][0]
        return count if isinstance(count, int) else 0

    # ----------------------------------------------------------- access modifiers

    def access(self) -> dict[str, Access]:
        rows = self._stream("SELECT path, read, write FROM access")
        return {str(r[0]): Access(None if r[1] is None else bool(r[1]), None if r[2] is None else bool(r[2]))
                for r in rows}

    def set_access(self, path: str, access: Access) -> None:
        if access.read is None and access.write is None:
            self._exec("DELETE FROM access WHERE path = ?", (path,))
        else:
            self._exec("INSERT OR REPLACE INTO access VALUES (?, ?, ?)",
                       (path, None if access.read is None else int(access.read),
                        None if access.write is None else int(access.write)))

    # ----------------------------------------------------------- relay history

    def seen_versions(self) -> dict[str, int]:
        """Every path key seen, with its highest version seen (a dict of the
        whole table: for whole-repository operations, not a pass)."""
        return {sys.intern(str(k)): int(v) for k, v in self._stream("SELECT key, version FROM seen")}  # type: ignore[call-overload]

    def seen_of_keys(self, keys: Sequence[str]) -> dict[str, int]:
        """The highest version seen of each of ``keys`` that has one (a key
        never seen is absent), read with one query per :data:`SEEN_CHUNK`
        keys: a pass asks for its relay versions a chunk at a time, without
        a list of every key."""
        return {str(key): int(version)  # type: ignore[call-overload]
                for key, version in self._rows_where_in("SELECT key, version FROM seen", "key", keys)}

    def _rows_where_in(self, select: str, column: str, values: Sequence[str]) -> Iterator[tuple[object, ...]]:
        """The rows of ``select`` whose ``column`` is one of ``values``, read
        with one query per :data:`SEEN_CHUNK` values (SQLite bounds the
        parameters of one statement)."""
        for start in range(0, len(values), SEEN_CHUNK):
            chunk = tuple(values[start:start + SEEN_CHUNK])
            yield from self._exec(f"{select} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk)

    def seen_version(self, key: str) -> int:
        """The highest version seen of path key ``key`` (0: none)."""
        rows = self._exec("SELECT version FROM seen WHERE key = ?", (key,))
        return int(rows[0][0]) if rows else 0  # type: ignore[call-overload]

    def set_seen(self, key: str, version: int) -> None:
        """Record that ``version`` of path key ``key`` was seen on, or written to,
        the relay. Knowledge only moves forward: a lower version is ignored."""
        self._exec("INSERT INTO seen VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET version = "
                   "MAX(version, excluded.version)", (key, version))

    def set_seen_many(self, seen: Sequence[tuple[str, int]]) -> None:
        """:meth:`set_seen` for each (key, version), in one prepared statement."""
        self._exec_many("INSERT INTO seen VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET version = "
                        "MAX(version, excluded.version)", seen)

    def meta_cache(self) -> MutableMapping[str, bytes]:
        """The cache of relay objects read (opened placeholders, snapshots),
        and the repository's own records (markers and generations seen,
        objects being uploaded): one mapping per database. Writes of opened
        placeholders (a cache) are held back and written in groups (see
        :class:`_TableMap`), every other write at once; :meth:`close`
        writes what is held."""
        if self._meta_cache is None:
            self._meta_cache = _TableMap(self, "relay_meta", "name", "data", hold=_is_placeholder_name)
        return self._meta_cache

    def lease_observations(self) -> MutableMapping[int, Observation]:
        return _LeaseMap(self)

    # ----------------------------------------------------------- other clients (escale.sync.receivers)

    def _receivers_schema(self) -> None:
        # created on first use (additive: older databases gain the tables)
        self._exec("CREATE TABLE IF NOT EXISTS receiver_seen (client TEXT PRIMARY KEY, stamp TEXT NOT NULL, "
                   "first_seen REAL NOT NULL, warned REAL)")
        self._exec("CREATE TABLE IF NOT EXISTS missed_seen (key TEXT NOT NULL, version INTEGER NOT NULL, "
                   "PRIMARY KEY (key, version))")

    def receiver_observations(self) -> dict[str, tuple[str, float, float | None]]:
        """Per other client id: (its registration's ``seen`` stamp as text, when
        this client first saw that stamp, when it last warned that the client
        is stale), times on this machine's clock."""
        self._receivers_schema()
        rows = self._exec("SELECT client, stamp, first_seen, warned FROM receiver_seen")
        return {str(r[0]): (str(r[1]), float(r[2]), None if r[3] is None else float(r[3]))  # type: ignore[arg-type]
                for r in rows}

    def set_receiver_observation(self, client: str, stamp: str, first_seen: float, warned: float | None) -> None:
        self._receivers_schema()
        self._exec("INSERT OR REPLACE INTO receiver_seen VALUES (?, ?, ?, ?)", (client, stamp, first_seen, warned))

    def drop_receiver_observation(self, client: str) -> None:
        self._receivers_schema()
        self._exec("DELETE FROM receiver_seen WHERE client = ?", (client,))

    def missed_reported(self) -> set[tuple[str, int]]:
        """Versions (key, version) this client already logged as missed."""
        self._receivers_schema()
        return {(str(k), int(v)) for k, v in self._exec("SELECT key, version FROM missed_seen")}  # type: ignore[call-overload]

    def set_missed_reported(self, key: str, version: int) -> None:
        self._receivers_schema()
        self._exec("INSERT OR IGNORE INTO missed_seen VALUES (?, ?)", (key, version))

    # ----------------------------------------------------------- per-file delivery (escale.sync.delivery)

    def _deliveries_schema(self) -> None:
        # created on first use (additive: older databases gain the table); once per connection
        if self._has_deliveries:
            return
        self._has_deliveries = True
        self._exec("CREATE TABLE IF NOT EXISTS deliveries (path TEXT PRIMARY KEY, version INTEGER NOT NULL, "
                   "size INTEGER NOT NULL, state TEXT NOT NULL, changed_at REAL NOT NULL, sent_at REAL, "
                   "delivered_at REAL, receivers TEXT NOT NULL, handoff TEXT NOT NULL)")

    def deliveries(self) -> list[Delivery]:
        """Every path's last delivery record (see :class:`Delivery`), by path."""
        self._deliveries_schema()
        return [_delivery(r) for r in self._exec(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries ORDER BY path")]

    def delivery(self, path: str) -> Delivery | None:
        """``path``'s delivery record, if any."""
        self._deliveries_schema()
        rows = self._exec(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE path = ?", (path,))
        return _delivery(rows[0]) if rows else None

    def delivery_states(self, paths: Sequence[str]) -> dict[str, tuple[str, int, int]]:
        """The ``(state, size, version)`` of the delivery record of each of
        ``paths`` that has one (a path without one is absent), read with one
        query per :data:`SEEN_CHUNK` paths and no record built."""
        self._deliveries_schema()
        return {str(path): (str(state), int(size), int(version))  # type: ignore[call-overload]
                for path, state, size, version in self._rows_where_in(
                    "SELECT path, state, size, version FROM deliveries", "path", paths)}

    def deliveries_in(self, states: tuple[str, ...], *, chunk: int = 1000) -> Iterator[Delivery]:
        """The delivery records in one of ``states``, by path, read
        ``chunk`` at a time (never all at once). No statement stays open
        between chunks: the caller may write records meanwhile (a record it
        changes is not read again)."""
        self._deliveries_schema()
        marks = ", ".join("?" * len(states))
        after = ""
        while True:
            rows = self._exec(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE state IN ({marks}) AND path > ? "
                              "ORDER BY path LIMIT ?", (*states, after, chunk))
            for row in rows:
                yield _delivery(row)
            if len(rows) < chunk:
                return
            after = str(rows[-1][0])

    def set_delivery(self, record: Delivery) -> None:
        self._deliveries_schema()
        self._exec("INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (record.path, record.version, record.size, record.state, record.changed_at, record.sent_at,
                    record.delivered_at, "\n".join(record.receivers), record.handoff))

    def set_deliveries(self, records: Sequence[Delivery]) -> None:
        """:meth:`set_delivery` for each record, in one prepared statement."""
        self._deliveries_schema()
        self._exec_many("INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(r.path, r.version, r.size, r.state, r.changed_at, r.sent_at, r.delivered_at,
                          "\n".join(r.receivers), r.handoff) for r in records])

    def drop_delivery(self, path: str) -> None:
        self._deliveries_schema()
        self._exec("DELETE FROM deliveries WHERE path = ?", (path,))


_DELIVERY_COLUMNS = "path, version, size, state, changed_at, sent_at, delivered_at, receivers, handoff"


def _delivery(r: tuple[object, ...]) -> Delivery:
    return Delivery(str(r[0]), int(r[1]), int(r[2]), str(r[3]), float(r[4]),  # type: ignore[call-overload, arg-type]
                    None if r[5] is None else float(r[5]),  # type: ignore[arg-type]
                    None if r[6] is None else float(r[6]),  # type: ignore[arg-type]
                    tuple(x for x in str(r[7]).split("\n") if x), str(r[8]))


@dataclass(frozen=True)
class Delivery:
    """What became of a path's latest version on its way out (or in).

    ``state``: ``pending`` (to be sent), ``sent`` (committed to the relay),
    ``delivered`` (see ``delivered when``) or ``received`` (from another
    client). ``receivers``: labels of the clients that acknowledged it so far
    (for ``received``: the sender). ``handoff``: what ``after delivery`` did
    with the local file (``""``, ``moving``, ``moved``, ``deleted``). Times are
    seconds since the epoch on this machine's clock.
    """

    path: str
    version: int
    size: int
    state: str
    changed_at: float
    sent_at: float | None = None
    delivered_at: float | None = None
    receivers: tuple[str, ...] = ()
    handoff: str = ""


#: Writes a cache table (:meth:`StateDB.meta_cache`) holds back, to write them
#: in one transaction (a write in a transaction of its own costs about ten
#: times more; a cache entry lost in a crash is only read again).
CACHE_WRITES = 256


def _is_placeholder_name(key: str) -> bool:
    """Whether a ``meta_cache`` key is an opened placeholder's relay name (a
    cache entry: the relay holds the object)."""
    return key.startswith(_META_PREFIX)


_META_PREFIX = META + "/"


def _as_bytes(value: object) -> bytes:
    """A value read from a key/value table as bytes (SQLite gives a blob as bytes, text as str)."""
    return bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else str(value).encode()


class _TableMap(MutableMapping[str, bytes]):
    """A key/value table as a mapping, read and written through.

    Nothing is held in memory: each lookup is one query by primary key, so a
    pass over a large repository does not keep every cached placeholder in
    memory. Iteration lists the keys (a list of the keys at that moment, so
    entries may be deleted meanwhile). Writes of the keys ``hold`` accepts
    (entries that are only a cache, whose loss in a crash costs a read
    again) are held back, up to :data:`CACHE_WRITES`, and written together,
    in one transaction (:meth:`flush`: when that many wait, before any other
    write, before anything lists or removes keys, and when the database
    closes): every read sees them meanwhile, and a write of another key is
    never on disk before a held write made ahead of it."""

    def __init__(self, db: StateDB, table: str, key: str, value: str, *,
                 hold: Callable[[str], bool] | None = None) -> None:
        self._db, self._table, self._key, self._value = db, table, key, value
        self._hold = hold
        #: writes not yet in the table
        self._held: dict[str, bytes] = {}

    def flush(self) -> None:
        """Write the writes held back, in one transaction (or the caller's batch)."""
        with self._db._lock:
            if not self._held:
                return
            rows = list(self._held.items())
            self._held.clear()
            self._db._exec_many(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", rows)

    def __getitem__(self, k: str) -> bytes:
        if self._held and (held := self._held.get(k)) is not None:
            return held
        rows = self._db._exec(f"SELECT {self._value} FROM {self._table} WHERE {self._key} = ?", (k,))
        if not rows:
            raise KeyError(k)
        return _as_bytes(rows[0][0])

    def __contains__(self, k: object) -> bool:
        if self._held and k in self._held:
            return True
        return bool(self._db._exec(f"SELECT 1 FROM {self._table} WHERE {self._key} = ?", (k,)))

    def __setitem__(self, k: str, v: bytes) -> None:
        """Write ``k``. A key ``hold`` accepts is held back without reading
        what it replaces (rewriting an equal cache entry costs a row of a
        batch; a lookup first would cost a query per write); any other key is
        written at once, unless the table already holds that very value."""
        if self._hold is None or not self._hold(k):
            if self.get(k) == v:
                return
            self.flush()  # what was written before it first
            self._db._exec(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", (k, v))
            return
        with self._db._lock:
            self._held[k] = v
            full = len(self._held) >= CACHE_WRITES
        if full:
            self.flush()

    def put_pieces(self, k: str, length: int, pieces: Iterable[bytes]) -> None:
        """``self[k] = b"".join(pieces)`` (``length`` bytes in all), without
        ever holding that value whole (nor reading the one it replaces): for
        large values such as the index layout's local copy of its index,
        whose pieces may be read from a file as they are written. Never held
        back. Raises ValueError, and writes nothing, when the pieces do not
        add up to ``length``."""
        with self._db._lock:
            self._held.pop(k, None)
            self.flush()  # what was written before it first
            self._db._put_blob(self._table, self._key, self._value, k, length, pieces)

    def __delitem__(self, k: str) -> None:
        self.flush()
        if k not in self:
            raise KeyError(k)
        self._db._exec(f"DELETE FROM {self._table} WHERE {self._key} = ?", (k,))

    def __iter__(self) -> Iterator[str]:
        self.flush()
        return iter([str(r[0]) for r in self._db._stream(f"SELECT {self._key} FROM {self._table}")])

    def values_of(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The value of each of ``keys`` the table holds (a key it does not
        hold is absent), read with one query per :data:`SEEN_CHUNK` keys:
        the same values as one lookup per key, writes held back included."""
        found: dict[str, bytes] = {}
        wanted = []
        for k in keys:
            if self._held and (held := self._held.get(k)) is not None:
                found[k] = held
            else:
                wanted.append(k)
        for row_key, value in self._db._rows_where_in(f"SELECT {self._key}, {self._value} FROM {self._table}",
                                                      self._key, wanted):
            found[str(row_key)] = _as_bytes(value)
        return found

    def keys_with_prefix(self, prefix: str) -> Iterator[str]:
        """The keys that start with ``prefix`` (not empty), streamed in key
        order by one query (no list of every key); consume at once (the
        database is locked meanwhile)."""
        self.flush()
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        for (k,) in self._db._stream_args(
                f"SELECT {self._key} FROM {self._table} WHERE {self._key} >= ? AND {self._key} < ?", (prefix, end)):
            yield str(k)

    def items_with_prefix(self, prefix: str) -> Iterator[tuple[str, bytes]]:
        """The entries whose key starts with ``prefix`` (not empty), streamed in
        key order by one query; consume at once (the database is locked meanwhile)."""
        self.flush()
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        for k, v in self._db._stream_args(
                f"SELECT {self._key}, {self._value} FROM {self._table} WHERE {self._key} >= ? AND {self._key} < ?",
                (prefix, end)):
            yield str(k), _as_bytes(v)

    def __len__(self) -> int:
        self.flush()
        count = self._db._exec(f"SELECT count(*) FROM {self._table}")[0][0]
        return count if isinstance(count, int) else 0


class _LeaseMap(MutableMapping[int, Observation]):
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def __getitem__(self, generation: int) -> Observation:
        rows = self._db._exec("SELECT token, beat, first_seen, boot FROM lease_seen WHERE generation = ?",
                              (generation,))
        if not rows:
            raise KeyError(generation)
        token, beat, first_seen, boot = rows[0]
        return Observation(str(token), int(beat), float(first_seen), str(boot))  # type: ignore[call-overload, arg-type]

    def __setitem__(self, generation: int, obs: Observation) -> None:
        self._db._exec("INSERT OR REPLACE INTO lease_seen VALUES (?, ?, ?, ?, ?)",
                       (generation, obs.token, obs.beat, obs.first_seen, obs.boot))

    def __delitem__(self, generation: int) -> None:
        self._db._exec("DELETE FROM lease_seen WHERE generation = ?", (generation,))

    def __iter__(self) -> Iterator[int]:
        return iter([int(r[0]) for r in self._db._exec("SELECT generation FROM lease_seen")])  # type: ignore[call-overload]

    def __len__(self) -> int:
        return len(list(iter(self)))


class BaseMap(DerivedDict[BaseEntry]):
    """The base as the planner reads it: a dict of path to :class:`BaseEntry`
    that holds, per path, one packed record (:func:`escale.sync.records.pack_base`;
    about 90 bytes where the objects cost about 300) and builds the entry
    each time it is read (a :class:`~escale.derived.DerivedDict`). An entry
    without an exact record is held as the object itself. Setting a path
    packs the entry; removing paths works as on a dict. :meth:`record` gives
    the scan the stored record, so that an unchanged file's scan record is
    the base's own object."""

    def derive(self, source: Any) -> BaseEntry:
        if type(source) is bytes:
            return _base_of(source)
        return source  # type: ignore[no-any-return]

    def get(self, key: str, default: Any = None) -> Any:
        # the planner's one read per path: the same as DerivedDict.get, in fewer calls
        source: object = dict.get(self, key)  # type: ignore[arg-type]  # the stored record, not a value
        if source is None:
            return default
        return _base_of(source) if isinstance(source, bytes) else source

    def __setitem__(self, path: str, entry: BaseEntry) -> None:
        record = records.pack_base(entry.size, entry.mtime_ns, entry.checksum, entry.version, entry.origin,
                                   entry.modified_here, entry.local_deleted)
        self.store(path, entry if record is None else record)

    def record(self, path: str) -> bytes | None:
        """``path``'s packed record (None: not tracked, or held as an object)."""
        source: object = self.source(path) if path in self else None
        return source if isinstance(source, bytes) else None

    def version_of(self, path: str) -> int:
        """``path``'s base version, 0 when it is not tracked (no entry built)."""
        source: object = dict.get(self, path)  # type: ignore[arg-type]  # the stored record, not a value
        if source is None:
            return 0
        return records.base_version(source) if isinstance(source, bytes) else cast(BaseEntry, source).version

    def tracked(self) -> int:
        """How many entries are not ``local_deleted`` (no entry built)."""
        count = 0
        for source in cast("Iterable[object]", dict.values(self)):
            if isinstance(source, bytes):
                count += not records.base_local_deleted(source)
            else:
                count += not cast(BaseEntry, source).local_deleted
        return count


_new = object.__new__
# BaseEntry's slot setters: a frozen dataclass's __init__ sets each field through
# object.__setattr__, which ends in these; called directly, an entry is built in
# about half the time (it is built on every read of a BaseMap)
_set_size, _set_mtime, _set_checksum, _set_version, _set_origin, _set_modified, _set_deleted = (
    BaseEntry.__dict__[name].__set__ for name in (
        "size", "mtime_ns", "checksum", "version", "origin", "modified_here", "local_deleted"))


def _base_of(record: bytes) -> BaseEntry:
    """The entry a base record packs (the same as ``BaseEntry(*records.unpack_base(record))``)."""
    size, mtime_ns, checksum, version, origin, modified_here, local_deleted = records.unpack_base(record)
    entry = _new(BaseEntry)
    _set_size(entry, size)
    _set_mtime(entry, mtime_ns)
    _set_checksum(entry, checksum)
    _set_version(entry, version)
    _set_origin(entry, origin)
    _set_modified(entry, modified_here)
    _set_deleted(entry, local_deleted)
    return entry
