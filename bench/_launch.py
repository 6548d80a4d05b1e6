"""Run one command and record its wall time and peak memory (stdlib only).

Usage: ``python -S _launch.py RESULT.json COMMAND ARG...``. This small
interpreter forks, the child execs COMMAND, and the parent waits for it with
``wait4``: RESULT.json gets ``seconds`` (wall clock from fork to exit),
``maxrss_kib`` (the peak resident memory of COMMAND and of any children it
waited for) and ``exit_code``. It is launched with ``-S`` and imports nothing
heavy, so that the few MiB it holds when it forks (which Linux counts in the
child's ``ru_maxrss``) stay below any real command's peak. COMMAND inherits
this process's environment, standard input and output.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    result_path, command = argv[0], argv[1:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(result_path, "w") as handle:
        json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss, "exit_code": code}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
