"""A pass with nothing to do, recognised before any per-file work.

A daemon passes every ``refresh`` seconds, cron runs ``escale --once``, and
most of those passes find nothing to do. Planning that answer costs
O(files): the scan builds an object per file, the relay's view is decoded and
compared path by path. This module lets such a pass stop early when its inputs
are *exactly* those of an earlier pass that planned nothing.

The record (the state database's ``relay_meta`` table, key
:data:`SNAPSHOT_KEY`) is written at the end of a full pass that did and left
nothing: no action planned (no transfer, no acknowledgement, no deletion, no
conflict), none held, no path frozen or refused, no warning, no error, no
clean-up due on the relay, and no handoff configured (``after delivery``:
a handoff that failed is retried by the next full pass). Files sent and not
yet acknowledged do not prevent it: an acknowledgement changes ``clients/``
(index layout) or ``acks/`` while their payloads wait in ``data/``
(placeholder layout), and so the probe. It holds what that pass saw *before* it scanned and read:

* the relay's *probe*: the layout's own summary of the listings a reader
  makes (:meth:`Repository.quiet_probe`; the index layout lists ``clients/``
  and ``index/`` and summarises every name, size and time; the placeholder
  layout reads its change marker, which every change under the lease moves,
  and summarises ``clients/`` and the payloads and acknowledgements, or on
  a local-folder relay the times of their folders; a layout that has no
  probe at that moment never takes this path);
* the local tree's digest (:func:`tree_digest`): every name below the local
  folder with its type, permissions, size, modification and change times
  (ns) and inode, in a fixed order;
* a digest of the client's settings and access modifiers;
* when it was written.

A later pass computes the probe and the digest first. When both equal the
record's, the settings are the same, no ``allow-deletions`` file waits, and
the record is younger than :func:`max_age`, the planner would be given the
same inputs as the pass that planned nothing, so it would plan nothing
again: the pass stops there. Anything else (a different probe or digest, a
folder that cannot be listed, an old record) means a full pass, which
removes the record first and writes a new one only if it is quiet itself.

Why the digest is taken *before* the scan: a file changed while a full pass
runs may be scanned in its new state or not; the record then holds the older
digest, so the next pass differs and runs in full. A record never covers a
state that no full pass planned on.

The age bound keeps the periodic duties of full passes running (a client's
``seen`` stamp, the stale-receiver and missed-version checks): at most an
hour, and at most half the interval at which the ``seen`` stamp is refreshed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat as stat_module
import time
from dataclasses import dataclass

from escale.config.settings import ClientSettings, FileFilter
from escale.protocol.repository import Repository
from escale.sync.localfs import STATE_FOLDER, TEMP_PREFIX
from escale.sync.receivers import refresh_every
from escale.sync.state import StateDB

log = logging.getLogger(__name__)

#: The record's key in the state database's ``relay_meta`` table.
SNAPSHOT_KEY = "quiet@snapshot"
#: A record older than this (seconds) is not trusted: the pass runs in full.
MAX_AGE = 3600.0


def max_age(settings: ClientSettings) -> float:
    """How long a quiet record stands: :data:`MAX_AGE`, or half the refresh
    interval of the ``seen`` stamp when that is shorter."""
    return min(MAX_AGE, refresh_every(settings.stale_receiver) / 2)


def tree_digest(root: str, filters: FileFilter) -> str | None:
    """A digest of everything below ``root`` the scanner looks at: for each
    entry (folders accepted by ``filters`` are entered, links are not
    followed, escale's own ``.escale`` folder and ``.escale-`` names are left
    out), its relative path, mode, size, modification and change times (ns)
    and inode, folders in sorted order. None when ``root`` or a folder below
    it cannot be listed, or an entry cannot be stat'ed (the caller then runs a
    full pass, which reports it)."""
    digest = hashlib.sha256()
    pending = [""]
    try:
        while pending:
            rel = pending.pop()
            path = os.path.join(root, rel) if rel else root
            with os.scandir(path) as listing:
                entries = sorted(listing, key=lambda e: e.name)
            lines = []
            for entry in entries:
                name = entry.name
                if name == STATE_FOLDER or name.startswith(TEMP_PREFIX):
                    continue
                st = entry.stat(follow_symlinks=False)
                child = f"{rel}/{name}" if rel else name
                lines.append(f"{child}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0"
                             f"{st.st_ino}\n")
                if stat_module.S_ISDIR(st.st_mode) and filters.accepts_dir(child):
                    pending.append(child)
            digest.update("".join(lines).encode("utf-8", "surrogateescape"))
    except OSError as exc:
        log.debug("no quiet pass: %s", exc)
        return None
    return digest.hexdigest()


def settings_digest(settings: ClientSettings, access: object) -> str:
    """A digest of what the planner takes from the configuration and the
    access modifiers (secrets are not part of the settings' text form; the
    filters' patterns are added whole: a pattern's text form is cut short)."""
    f = settings.filters
    patterns = [(p.pattern, p.flags) for p in (*f.include, *f.exclude, *f.include_dirs, *f.exclude_dirs)]
    text = repr((settings, patterns, access))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def forget_quiet(db: StateDB) -> None:
    """Drop the quiet record of the client whose state is ``db``: its next
    pass runs in full. For operations that change the client's state
    outside a pass (``escalectl fix``)."""
    db.meta_cache().pop(SNAPSHOT_KEY, None)


@dataclass
class QuietCheck:
    """The inputs of one pass, taken before it scans (see the module)."""

    probe: str | None
    tree: str | None
    config: str
    relay_bytes: int = 0

    @classmethod
    def begin(cls, settings: ClientSettings, repo: Repository, access: object,
              record: bytes | None) -> tuple[QuietCheck, bool]:
        """Take this pass's inputs; return them and whether they are those of
        the quiet ``record`` (bytes as :meth:`encode` wrote them, or None)."""
        probe = repo.quiet_probe()
        if probe is None:  # a layout without a probe never takes the quiet path
            return cls(None, None, ""), False
        check = cls(probe, tree_digest(settings.local_path, settings.filters), settings_digest(settings, access))
        if record is None or check.tree is None:
            return check, False
        try:
            saved = json.loads(record)
            same = (saved["probe"], saved["tree"], saved["config"]) == (probe, check.tree, check.config)
            fresh = 0 <= time.time() - float(saved["at"]) < max_age(settings)
            check.relay_bytes = int(saved.get("relay_bytes", 0))
        except (ValueError, KeyError, TypeError):
            return check, False
        return check, same and fresh

    def encode(self, relay_bytes: int) -> bytes | None:
        """The record of a quiet pass with these inputs; None when they cannot
        make one (no probe, or no digest of the tree)."""
        if self.probe is None or self.tree is None:
            return None
        return json.dumps({"at": time.time(), "config": self.config, "probe": self.probe,
                           "relay_bytes": relay_bytes, "tree": self.tree}, sort_keys=True).encode("ascii")


def was_quiet(*, planned: int, held: int, frozen: int, warnings: int, errors: int, busy: bool,
              relay_due: bool, stopped: bool) -> bool:
    """Whether a full pass did and left nothing (the conditions of the
    module's docstring): nothing planned, held, frozen, warned about or
    failed, the lease never needed nor busy, and the pass not stopped early."""
    return not (planned or held or frozen or warnings or errors or busy or relay_due or stopped)
