"""Run a command without the privileges that bypass file permissions.

CI runs as root, and root reads a ``chmod 000`` file, lists a ``chmod 000``
folder and writes anywhere: tests about unreadable files would pass for the
wrong reason. Switching to an unprivileged uid is not possible here (the Python
that runs the tests lives under ``/root``, which is mode 0700), so the command
runs as root *without* ``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH`` and
``CAP_FOWNER`` (``setpriv`` from util-linux): the kernel then applies the file
mode bits to it exactly as to an ordinary user that owns the files.
"""

from __future__ import annotations

import os
import shutil
import subprocess

_DROPPED = "-dac_override,-dac_read_search,-fowner"


def setpriv() -> str:
    """The ``setpriv`` binary; raises RuntimeError when it is missing (a test
    that needs it must fail, never pass as root)."""
    found = shutil.which("setpriv")
    if found is None:
        raise RuntimeError("setpriv (util-linux) is needed to run escale without root's file privileges")
    return found


def unprivileged_command(argv: list[str]) -> list[str]:
    """``argv`` prefixed so that it runs without permission-bypassing
    capabilities (a no-op prefix is never returned: as a non-root user the
    command is returned unchanged, since it is unprivileged already)."""
    if os.geteuid() != 0:
        return list(argv)
    return [setpriv(), "--inh-caps=-all", f"--bounding-set={_DROPPED}", "--", *argv]


def permissions_apply() -> bool:
    """Whether a process started by :func:`unprivileged_command` is refused a
    ``chmod 000`` file (checked for real, once per call)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "probe")
        with open(probe, "w", encoding="ascii") as handle:
            handle.write("x")
        os.chmod(probe, 0)
        result = subprocess.run(unprivileged_command(["cat", probe]), capture_output=True, check=False)
        return result.returncode != 0
