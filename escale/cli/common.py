"""What both commands share: error reporting and exit codes.

Only the command-line layer prints. An :class:`EscaleError` ends a command with
one line on standard error (``escale: <message>``) and its documented exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from escale.errors import EX_SOFTWARE, EscaleError


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run ``body``; turn escale errors into one line and their exit code."""
    try:
        return body()
    except EscaleError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EX_SOFTWARE
