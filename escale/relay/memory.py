"""The ``memory`` backend: a relay held in a process's memory.

For tests and the planner's property tests. All operations are atomic under one
lock; several :class:`MemoryRelay` objects opened on the same :class:`MemoryStore`
see the same objects, like clients of one server. Folders exist implicitly as
prefixes, plus explicitly created empty ones.
"""

from __future__ import annotations

import io
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import BinaryIO

from escale.errors import RelayExists, RelayNotFound
from escale.relay.base import Capabilities, Entry, Relay, Usage, check_size, parent_of
from escale.relay.spec import RelaySpec


@dataclass
class MemoryStore:
    """The shared server side: objects and explicitly created folders."""

    objects: dict[str, tuple[bytes, float]] = field(default_factory=dict)
    folders: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    total: int | None = None

    def _has_folder(self, name: str) -> bool:
        if name == "" or name in self.folders:
            return True
        prefix = name + "/"
        return any(key.startswith(prefix) for key in self.objects)


class MemoryRelay(Relay):
    """A relay over a :class:`MemoryStore` (a fresh one when none is given)."""

    scheme = "memory"

    def __init__(self, store: MemoryStore | None = None) -> None:
        super().__init__()
        self.store = store if store is not None else MemoryStore()
        self.capabilities = Capabilities(
            atomic_put=True,
            exclusive_create=True,
            rename_overwrite=True,
            rename_exclusive=True,
            mtime_precision=0.001,
            usage=self.store.total is not None,
        )

    def _connect(self) -> None:
        pass

    def _disconnect(self) -> None:
        pass

    def _add_parents(self, name: str) -> None:
        parent = parent_of(name)
        while parent:
            self.store.folders.add(parent)
            parent = parent_of(parent)

    def _list(self, folder: str) -> list[Entry]:
        with self.store.lock:
            if not self.store._has_folder(folder):
                raise RelayNotFound(f"no such relay folder: {folder}", name=folder)
            prefix = folder + "/" if folder else ""
            children: dict[str, Entry] = {}
            for key, (data, mtime) in self.store.objects.items():
                if key.startswith(prefix):
                    rest = key[len(prefix):]
                    head, sep, _ = rest.partition("/")
                    child = prefix + head
                    if sep:
                        children.setdefault(child, Entry(child, 0, None, True))
                    else:
                        children[child] = Entry(child, len(data), mtime)
            for sub in self.store.folders:
                if sub.startswith(prefix) and "/" not in sub[len(prefix):]:
                    children.setdefault(sub, Entry(sub, 0, None, True))
            return list(children.values())

    def _stat(self, name: str) -> Entry:
        with self.store.lock:
            if name in self.store.objects:
                data, mtime = self.store.objects[name]
                return Entry(name, len(data), mtime)
            if self.store._has_folder(name):
                return Entry(name, 0, None, True)
        raise RelayNotFound(f"no such relay object: {name}", name=name)

    def _get(self, name: str, sink: BinaryIO) -> None:
        with self.store.lock:
            if name not in self.store.objects:
                raise RelayNotFound(f"no such relay object: {name}", name=name)
            data = self.store.objects[name][0]
        check_size(sink, len(data))
        sink.write(data)

    def _put(self, name: str, source: BinaryIO, exclusive: bool) -> None:
        buffer = io.BytesIO()
        shutil.copyfileobj(source, buffer)
        data = buffer.getvalue()
        with self.store.lock:
            if exclusive and (name in self.store.objects or name in self.store.folders):
                raise RelayExists(f"relay object exists: {name}", name=name)
            self.store.objects[name] = (data, time.time())
            self._add_parents(name)

    def _delete(self, name: str) -> None:
        with self.store.lock:
            if name not in self.store.objects:
                raise RelayNotFound(f"no such relay object: {name}", name=name)
            del self.store.objects[name]

    def _rename(self, source: str, target: str, overwrite: bool) -> None:
        with self.store.lock:
            if source not in self.store.objects:
                raise RelayNotFound(f"no such relay object: {source}", name=source)
            if not overwrite and target in self.store.objects:
                raise RelayExists(f"relay object exists: {target}", name=target)
            self.store.objects[target] = self.store.objects.pop(source)
            self._add_parents(target)

    def _mkdir(self, name: str) -> None:
        with self.store.lock:
            self.store.folders.add(name)
            self._add_parents(name)

    def _rmdir(self, name: str) -> None:
        with self.store.lock:
            if not self.store._has_folder(name):
                raise RelayNotFound(f"no such relay folder: {name}", name=name)
            self.store.folders.discard(name)

    def _usage(self) -> Usage | None:
        if self.store.total is None:
            return None
        with self.store.lock:
            used = sum(len(data) for data, _ in self.store.objects.values())
        return Usage(used=used, total=self.store.total)


_NAMED_STORES: dict[str, MemoryStore] = {}


def from_spec(spec: RelaySpec) -> MemoryRelay:
    """A memory relay; specs with the same directory share one store (per process)."""
    store = _NAMED_STORES.setdefault(spec.directory, MemoryStore())
    return MemoryRelay(store)
