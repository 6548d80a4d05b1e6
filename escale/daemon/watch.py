"""Watch mode: the daemon learns of local changes as they happen (Linux inotify).

A :class:`FolderWatch` watches every folder of one client's local folder and
tells the client's thread when a pass is due because something changed there.
It never decides *what* changed: the pass that follows scans the whole folder
as usual, so a missed or misread event costs at most a delay, never a wrong
sync. The periodic pass every ``refresh`` seconds stays the safety net (and is
what polls the relay).

Rules:

* **Debounce.** A pass is due once the folder has been quiet (no relevant event
  anywhere) for ``watch delay`` seconds after the last event, so that a file
  still being written, or a batch of files being copied, is not sent half-done.
  A periodic pass that comes due while changes have not settled waits for
  them too (at most ``SETTLE_LIMIT`` seconds more, see
  :mod:`escale.daemon.runner`), so that a folder that never stays quiet that
  long is still synced by the periodic pass. (The scanner also refuses a file
  that changes while it is read.)
* **escale's own files do not count.** No watch is placed in escale's folder
  ``.escale``, nor below a ``state directory`` that lies in the local folder;
  events on the daemon's log file (when it lies there), on names starting with
  ``.escale-``, and the rename that lands one of escale's own downloads over
  an existing file (``.escale-part-…`` renamed to its final name) are
  dropped: a received new version does not start a pass in turn. A received
  *new* file is linked into place (a nameless ``O_TMPFILE`` file, which the
  kernel reports as ``#<inode>``, or a ``.escale-part-…`` file linked to its
  final name): that link looks like any other new file and does start one
  more pass, which finds nothing to do (as a received deletion or a folder
  escale makes may). Files the client's filters leave out do not count
  either, and a folder excluded by ``exclude directories`` is not watched.
* **Limits.** inotify needs one watch per folder. When the kernel refuses one
  (``ENOSPC``: ``/proc/sys/fs/inotify/max_user_watches`` reached; ``EMFILE``:
  ``max_user_instances``), the watch logs one WARNING saying so and how to
  raise the limit, releases what it holds, and the client falls back to
  periodic passes only, for the rest of the process. A lost-events notice from
  the kernel (queue overflow) just makes a pass due and re-reads the tree.

The library is ``asyncinotify`` (used synchronously, with ``poll``): it is
typed, raises ``OSError`` with the kernel's errno for every refused watch, so a
watch limit is always seen, and it leaves the choice of folders to us (no watch
in ``.escale``). ``watchdog`` was set aside: its inotify backend silently skips
a sub-folder it cannot watch, limit included, and watches everything.

One :class:`FolderWatch` is used by one thread only (the client's), which reads
the kernel's queue while it waits between passes; events that arrive during a
pass wait in the kernel's queue and are read after it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from escale.config.settings import ClientSettings
from escale.sync.localfs import PART_PREFIX, STATE_FOLDER, TEMP_PREFIX

if TYPE_CHECKING:
    from asyncinotify import Event, Inotify, Watch

log = logging.getLogger(__name__)

#: Where the per-user limit on watches is read, and set.
MAX_WATCHES_FILE = "/proc/sys/fs/inotify/max_user_watches"
MAX_INSTANCES_FILE = "/proc/sys/fs/inotify/max_user_instances"
#: The same limit as set for the current user namespace (Linux 5.11 and later).
USER_NS_WATCHES_FILE = "/proc/sys/user/max_inotify_watches"
#: The longest sleep of :meth:`FolderWatch.wait` before it looks at its stop event again.
STOP_CHECK = 0.5
#: Changed paths remembered between two passes at most (for the log; more only count).
MAX_CHANGED = 100
#: Cookies of escale's own renames remembered at most (a rename's two halves come together).
_MAX_COOKIES = 1024
#: Folders that could not be watched remembered at most (to watch them once readable).
_MAX_REFUSED = 1024


class WatchUnavailable(Exception):
    """Watching cannot go on; the message is the WARNING line the user sees."""


def _read_limit(path: str) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return "unknown"


def limit_message(name: str, root: str, exc: OSError) -> str:
    """The one WARNING line for a refused inotify watch or instance (``exc``)."""
    if exc.errno == errno.EMFILE:
        return (f"[{name}] cannot watch {root}: too many inotify instances for this user "
                f"({MAX_INSTANCES_FILE} = {_read_limit(MAX_INSTANCES_FILE)}); local changes are found by the "
                f"periodic pass only (every 'refresh' seconds). To raise the limit: "
                f"sysctl fs.inotify.max_user_instances=1024 (keep it in /etc/sysctl.d/)")
    limit = _read_limit(MAX_WATCHES_FILE)
    here = _read_limit(USER_NS_WATCHES_FILE)
    if here not in ("unknown", limit):  # a container's user namespace may allow fewer
        limit += f"; in this user namespace {USER_NS_WATCHES_FILE} = {here}"
    return (f"[{name}] cannot watch {root}: it has more folders than inotify allows "
            f"({MAX_WATCHES_FILE} = {limit}; one watch per folder); local changes are "
            f"found by the periodic pass only (every 'refresh' seconds). To raise the limit: "
            f"sysctl fs.inotify.max_user_watches=1048576 (keep it in /etc/sysctl.d/)")


def _inside(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` (``/``-separated) when inside it, else None."""
    try:
        rel = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    except ValueError:
        return None
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return None
    return rel.replace(os.sep, "/")


class FolderWatch:
    """Watches one local folder and says when a pass is due.

    ``root``: the local folder. ``delay``: the quiet time after the last event
    before a pass is due. ``accepts_file``/``accepts_dir``: the client's filters
    (a relative, ``/``-separated path; an event on a path they refuse does not
    count; an excluded folder is not watched). ``ignored``: absolute paths in the
    local folder that are escale's (state folder, log file): no watch below
    them, no event on them counts.
    """

    def __init__(
        self,
        name: str,
        root: str,
        *,
        delay: float,
        accepts_file: Callable[[str], bool] | None = None,
        accepts_dir: Callable[[str], bool] | None = None,
        ignored: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.root = root
        self.delay = delay
        self._accepts_file = accepts_file or (lambda _rel: True)
        self._accepts_dir = accepts_dir or (lambda _rel: True)
        self._ignored = tuple(rel for rel in (_inside(p, root) for p in ignored) if rel)
        self._inotify: Inotify | None = None
        #: watch descriptor -> (watch, folder relative to root; "" for root)
        self._folders: dict[int, tuple[Watch, str]] = {}
        self._own_moves: set[int] = set()
        #: folders (relative) the kernel refused to watch (no permission...): tried again when their mode changes
        self._refused: set[str] = set()
        self._last_rel = ""
        self._real_root = root
        #: monotonic time of the last relevant event not yet followed by a pass
        self._last_event: float | None = None
        #: True once watching was given up for good (limit, no inotify)
        self.given_up = False
        #: kernel events read so far
        self.events = 0
        #: relative paths of the relevant events since the last pass (at most MAX_CHANGED)
        self.changed: set[str] = set()

    # ------------------------------------------------------------ state

    @property
    def active(self) -> bool:
        """Whether the folder is being watched now."""
        return self._inotify is not None

    @property
    def watched_folders(self) -> int:
        return len(self._folders)

    def start(self) -> bool:
        """Watch the folder (again); True when it is watched.

        Idempotent. False when the local folder does not exist yet (try again
        later) or when watching was given up (see :attr:`given_up`; the WARNING
        was logged then). Never raises.
        """
        if self.given_up:
            return False
        if self._inotify is not None:
            return True
        if not os.path.isdir(self.root):
            return False
        try:
            self._open()
        except WatchUnavailable as exc:
            self._give_up(str(exc))
            return False
        except OSError as exc:  # not seen: the errors of a watch are WatchUnavailable
            self._give_up(f"[{self.name}] cannot watch {self.root} ({exc}); local changes are found by the "
                          f"periodic pass only (every 'refresh' seconds)")
            return False
        log.debug("[%s] watching %s (%d folders)", self.name, self.root, len(self._folders))
        return True

    def close(self) -> None:
        """Stop watching and release the kernel's watches (idempotent)."""
        inotify, self._inotify = self._inotify, None
        self._folders.clear()
        self._own_moves.clear()
        self._refused.clear()
        if inotify is not None:
            inotify.close()

    def _give_up(self, message: str) -> None:
        self.close()
        self.given_up = True
        log.warning("%s", message)

    def _open(self) -> None:
        try:
            from asyncinotify import InitFlags, Inotify
        except (ImportError, OSError) as exc:  # not Linux, or no inotify in the C library
            raise WatchUnavailable(
                f"[{self.name}] cannot watch {self.root} (inotify unavailable: {exc}); local changes are found by "
                f"the periodic pass only (every 'refresh' seconds)") from None
        try:
            inotify = Inotify(InitFlags.CLOEXEC | InitFlags.NONBLOCK, cache_size=256, sync_timeout=0)
        except OSError as exc:
            raise WatchUnavailable(limit_message(self.name, self.root, exc)) from None
        self._inotify = inotify
        self._real_root = os.path.realpath(self.root)
        try:
            self._watch_tree("")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ watches

    def _skipped_dir(self, rel: str) -> bool:
        """Whether folder ``rel`` (``""`` is the root) is left unwatched."""
        if not rel:
            return False
        base = rel.rpartition("/")[2]
        if base == STATE_FOLDER or base.startswith(TEMP_PREFIX):
            return True
        if any(rel == p or rel.startswith(p + "/") for p in self._ignored):
            return True
        return not self._accepts_dir(rel)

    def _watch_tree(self, top: str) -> None:
        """Watch folder ``top`` (relative) and every folder below it that is not
        skipped. Folders that vanish or cannot be read are left out (the
        scanner reports them; one that cannot be read is watched once its mode
        changes); a watch refused for a limit raises WatchUnavailable."""
        from asyncinotify import Mask

        mask = (Mask.CREATE | Mask.MODIFY | Mask.CLOSE_WRITE | Mask.ATTRIB | Mask.DELETE | Mask.MOVED_FROM
                | Mask.MOVED_TO | Mask.DELETE_SELF | Mask.MOVE_SELF | Mask.ONLYDIR | Mask.DONT_FOLLOW
                | Mask.EXCL_UNLINK)
        assert self._inotify is not None
        stack = [top]
        while stack:
            rel = stack.pop()
            if self._skipped_dir(rel):
                continue
            # the local folder itself may be a link to the real one (as the scanner allows); nothing below it
            path = os.path.join(self._real_root, rel) if rel else self._real_root
            try:
                watch = self._inotify.add_watch(path, mask)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EMFILE):
                    raise WatchUnavailable(limit_message(self.name, self.root, exc)) from None
                if not rel:
                    raise WatchUnavailable(
                        f"[{self.name}] cannot watch {self.root} ({os.strerror(exc.errno or 0)}); local changes "
                        f"are found by the periodic pass only (every 'refresh' seconds)") from None
                if len(self._refused) < _MAX_REFUSED:
                    self._refused.add(rel)
                continue  # gone, not a folder (any more), unreadable: the scanner sees it
            self._refused.discard(rel)
            self._folders[watch.wd] = (watch, rel)
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(f"{rel}/{entry.name}" if rel else entry.name)
                        except OSError:
                            continue
            except OSError:
                continue

    def _unwatch_below(self, rel: str) -> None:
        """Forget the watches of folder ``rel`` and below (it moved away)."""
        assert self._inotify is not None
        for wd, (watch, folder) in list(self._folders.items()):
            if folder == rel or folder.startswith(rel + "/"):
                del self._folders[wd]
                try:
                    self._inotify.rm_watch(watch)
                except OSError:
                    pass

    # ------------------------------------------------------------ events

    def _relevant(self, event: Event) -> bool:
        """Take in one kernel event; True when it makes a pass due."""
        from asyncinotify import Mask

        mask = event.mask
        self._last_rel = ""
        if Mask.Q_OVERFLOW in mask:
            log.info("[%s] the kernel dropped file events (queue overflow); re-reading the folder tree", self.name)
            self.close()
            self.start()
            return True
        watch = event.watch
        known = self._folders.get(watch.wd) if watch is not None else None
        if known is None:
            return False
        folder = known[1]
        if Mask.IGNORED in mask:
            self._folders.pop(known[0].wd, None)
            if not folder:  # the local folder itself is gone: watch it again once a pass made it anew
                self.close()
                return True
            return False
        if event.name is None:  # about the watched folder itself: its parent reports it, but for the root
            if folder or not (Mask.DELETE_SELF in mask or Mask.MOVE_SELF in mask):
                return False
            if Mask.MOVE_SELF in mask:  # the watches follow it away: watch the local folder again once made anew
                self.close()
            return True
        name = os.fsdecode(event.name)
        rel = f"{folder}/{name}" if folder else name
        self._last_rel = rel
        is_dir = Mask.ISDIR in mask
        if name == STATE_FOLDER or name.startswith(TEMP_PREFIX):
            if Mask.MOVED_FROM in mask and name.startswith(PART_PREFIX):
                if len(self._own_moves) >= _MAX_COOKIES:
                    self._own_moves.clear()
                self._own_moves.add(event.cookie)
            return False
        if Mask.MOVED_TO in mask and event.cookie in self._own_moves:
            self._own_moves.discard(event.cookie)
            return False  # one of escale's own downloads landing
        if any(rel == p or rel.startswith(p + "/") for p in self._ignored):
            return False
        if is_dir:
            if Mask.ATTRIB in mask:
                if rel not in self._refused:
                    return False  # a folder's own metadata is not synced
                self._refused.discard(rel)  # its mode changed: it may be readable now
                self._watch_tree(rel)
            if Mask.MOVED_FROM in mask:
                self._unwatch_below(rel)
            elif Mask.CREATE in mask or Mask.MOVED_TO in mask:
                self._watch_tree(rel)
            return not self._skipped_dir(rel)
        return bool(self._accepts_file(rel))

    def _drain(self) -> None:
        """Read every queued event; note the time when one is relevant."""
        while self._inotify is not None:
            event = self._inotify.sync_get()
            if event is None:
                return
            self.events += 1
            try:
                relevant = self._relevant(event)
            except WatchUnavailable as exc:
                self._give_up(str(exc))
                self._last_event = time.monotonic()
                return
            if relevant:
                self._last_event = time.monotonic()
                if len(self.changed) < MAX_CHANGED:
                    self.changed.add(self._last_rel)

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """Wait up to ``timeout`` seconds, or until ``stop`` is set; True when a
        pass is due because of local changes (the folder has been quiet for
        ``delay`` seconds since the last one), False on time-out or stop.

        Without an active watch this is ``stop.wait`` in slices. Checks
        ``stop`` at least every :data:`STOP_CHECK` seconds.
        """
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            now = time.monotonic()
            if self._last_event is not None and now - self._last_event >= self.delay:
                self._last_event = None
                return True
            if now >= deadline:
                return False
            wake = min(deadline - now, STOP_CHECK)
            if self._last_event is not None:
                wake = min(wake, self._last_event + self.delay - now)
            inotify = self._inotify
            if inotify is None:
                stop.wait(max(wake, 0.0))
                continue
            poller = select.poll()  # not select(): it refuses descriptors from 1024 on
            poller.register(inotify.fd, select.POLLIN)
            try:
                readable = poller.poll(math.ceil(max(wake, 0.0) * 1000))
            except InterruptedError:
                continue
            if readable:
                self._drain()
        return False

    def changes_pending(self) -> bool:
        """Whether local changes were noted (read from the kernel's queue
        first) that no pass has covered yet, settled or not."""
        if self._inotify is not None:
            self._drain()
        return self._last_event is not None

    def pass_started(self) -> None:
        """A pass starts now: changes noted so far are covered by its scan."""
        if self._inotify is not None:
            self._drain()
        self._last_event = None
        self.changed.clear()


def watch_for(settings: ClientSettings, state_dir: str, *, log_file: str | None = None) -> FolderWatch:
    """The watch of one client's local folder, as its settings say (filters,
    ``watch delay``), leaving out its state folder and the daemon's log file."""
    exclude_dirs = settings.filters.exclude_dirs

    def accepts_dir(rel: str) -> bool:
        # only exclusions prune: an included folder may lie below a folder that is not
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return not any(p.fullmatch(prefix) for p in exclude_dirs for prefix in prefixes)

    ignored = (state_dir,) if log_file is None else (state_dir, log_file)
    return FolderWatch(settings.name, settings.local_path, delay=settings.watch_delay,
                       accepts_file=settings.filters.accepts_file, accepts_dir=accepts_dir, ignored=ignored)
