"""The local state database: one SQLite file per client.

Holds the client's identity, the last synced state of every path (the planner's
*base*), the checksum cache, the access modifiers, the highest relay version
seen per path key (so a relay serving an older history is noticed), decoded
placeholders (they are immutable) and lease observations.

Every write is its own transaction, committed before the call returns: a crash
loses at most the step in progress, which the next pass redoes. WAL mode lets
``escalectl access`` write while the daemon runs.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

from escale.errors import LocalError
from escale.protocol.layout import new_client_id
from escale.protocol.lease import Observation
from escale.sync.planner import Access, BaseEntry

SCHEMA_VERSION = 1

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
        version = self.get_setting("schema")
        if version is None:
            self.set_setting("schema", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise LocalError(f"state database {path} has unknown schema {version}", path=path)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run several writes atomically."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, args).fetchall()
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

    # ----------------------------------------------------------- base

    def base(self) -> dict[str, BaseEntry]:
        rows = self._exec("SELECT path, size, mtime_ns, checksum, version, origin, modified_here, "
                          "local_deleted FROM files")
        return {
            str(r[0]): BaseEntry(int(r[1]), int(r[2]), r[3] if r[3] is None else str(r[3]),  # type: ignore[call-overload]
                                 int(r[4]), "remote" if r[5] == "remote" else "local",  # type: ignore[call-overload]
                                 bool(r[6]), bool(r[7]))
            for r in rows
        }

    def set_base(self, path: str, entry: BaseEntry) -> None:
        self._exec(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (path, entry.size, entry.mtime_ns, entry.checksum, entry.version, entry.origin,
             int(entry.modified_here), int(entry.local_deleted)),
        )

    def forget(self, path: str) -> None:
        self._exec("DELETE FROM files WHERE path = ?", (path,))

    # ----------------------------------------------------------- checksum cache

    def cached_checksum(self, path: str, st: os.stat_result) -> str | None:
        rows = self._exec(
            "SELECT checksum FROM checksums WHERE path = ? AND size = ? AND mtime_ns = ? AND inode = ? "
            "AND ctime_ns = ?", (path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns))
        return str(rows[0][0]) if rows else None

    def cache_checksum(self, path: str, st: os.stat_result, checksum: str) -> None:
        self._exec("INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?, ?, ?)",
                   (path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, checksum))

    def prune_checksums(self, keep: set[str]) -> None:
        for (path,) in self._exec("SELECT path FROM checksums"):
            if path not in keep:
                self._exec("DELETE FROM checksums WHERE path = ?", (path,))

    # ----------------------------------------------------------- access modifiers

    def access(self) -> dict[str, Access]:
        rows = self._exec("SELECT path, read, write FROM access")
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
        return {str(k): int(v) for k, v in self._exec("SELECT key, version FROM seen")}  # type: ignore[call-overload]

    def set_seen(self, key: str, version: int) -> None:
        self._exec("INSERT OR REPLACE INTO seen VALUES (?, ?)", (key, version))

    def meta_cache(self) -> MutableMapping[str, bytes]:
        return _TableMap(self, "relay_meta", "name", "data")

    def lease_observations(self) -> MutableMapping[int, Observation]:
        return _LeaseMap(self)


class _TableMap(MutableMapping[str, bytes]):
    """A key/value table as a mapping (loaded once, written through)."""

    def __init__(self, db: StateDB, table: str, key: str, value: str) -> None:
        self._db, self._table, self._key, self._value = db, table, key, value
        self._data = {str(k): bytes(v) for k, v in db._exec(f"SELECT {key}, {value} FROM {table}")}  # type: ignore[call-overload]

    def __getitem__(self, k: str) -> bytes:
        value: bytes = self._data[k]
        return value

    def __setitem__(self, k: str, v: bytes) -> None:
        if self._data.get(k) != v:
            self._db._exec(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?)", (k, v))
            self._data[k] = v

    def __delitem__(self, k: str) -> None:
        del self._data[k]
        self._db._exec(f"DELETE FROM {self._table} WHERE {self._key} = ?", (k,))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data))

    def __len__(self) -> int:
        return len(self._data)


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
