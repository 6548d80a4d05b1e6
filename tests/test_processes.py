"""escale.processes.pid_alive: live processes are alive; exited ones, zombies included, are not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from escale.processes import pid_alive


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        return handle.read().rpartition(")")[2].split()[0]


def test_this_process_and_a_running_child_are_alive() -> None:
    assert pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert pid_alive(child.pid)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="zombies are told apart through /proc")
def test_a_zombie_child_is_dead_and_so_is_a_reaped_one() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # not reaped: it stays a zombie until waited for; wait for the kernel to say so
    # (os.waitid with WNOWAIT observes the exit without reaping it)
    info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert info is not None and info.si_pid == child.pid
    try:
        assert _state(child.pid) == "Z"
        os.kill(child.pid, 0)  # the pid still exists: only its state says it has exited
        assert not pid_alive(child.pid)
    finally:
        child.wait()
    assert not pid_alive(child.pid)


def test_no_single_process_behind_pids_up_to_zero() -> None:
    assert not pid_alive(0)
    assert not pid_alive(-1)


def test_init_is_alive_even_where_it_cannot_be_signalled() -> None:
    # pid 1 (init) runs; an unprivileged user cannot signal it (PermissionError)
    assert pid_alive(1)
