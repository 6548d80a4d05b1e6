"""The ``hook``: a program run after each delivered or received file.

It is run as ``[hook, STATUS, PATH]`` (``STATUS`` is ``received`` or
``delivered``; ``PATH`` the file's absolute path in the local folder), without
a shell, with standard input closed, in the local folder, with
``ESCALE_CLIENT`` (the section) and ``ESCALE_PATH`` (the path relative to the
local folder) in its environment. It runs after the state of the file is
recorded, so its outcome never changes what was synced: a hook that cannot
start, fails, or outlives ``hook timeout`` (it is then killed with its whole
process group) is logged at WARNING and the pass goes on. Its output (standard
output and error together) is logged at INFO, at most :data:`OUTPUT_LIMIT`
bytes of it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
from typing import Literal

from escale.config.settings import ClientSettings

log = logging.getLogger(__name__)

#: Bytes of a hook's output copied to the log.
OUTPUT_LIMIT = 4096

HookStatus = Literal["received", "delivered"]


def run_hook(settings: ClientSettings, status: HookStatus, rel: str) -> bool:
    """Run ``settings.hook`` for local path ``rel``; return whether it ran and
    exited with 0 (True also when no hook is set). Never raises."""
    if not settings.hook:
        return True
    name = settings.name
    full = os.path.join(settings.local_path, *rel.split("/"))
    argv = [settings.hook, status, full]
    env = dict(os.environ, ESCALE_CLIENT=name, ESCALE_PATH=rel)
    with tempfile.TemporaryFile() as output:
        try:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                     cwd=settings.local_path, env=env, start_new_session=True)
        except OSError as exc:
            log.warning("[%s] hook %s could not start for %s: %s", name, settings.hook, rel, exc.strerror or exc)
            return False
        timed_out = False
        try:
            code = child.wait(timeout=settings.hook_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = child.wait()
        output.seek(0)
        text = output.read(OUTPUT_LIMIT + 1)
    shown = text[:OUTPUT_LIMIT].decode("utf-8", "replace").rstrip()
    if len(text) > OUTPUT_LIMIT:
        shown += " [...]"
    if shown:
        log.info("[%s] hook output for %s %s: %s", name, status, rel, shown)
    if timed_out:
        log.warning("[%s] hook %s for %s %s killed after %g s (hook timeout)", name, settings.hook, status, rel,
                    settings.hook_timeout)
        return False
    if code != 0:
        log.warning("[%s] hook %s for %s %s failed with exit status %d", name, settings.hook, status, rel, code)
        return False
    return True
