"""A command's report on stdout, and how the command ends when stdout cannot take it (a full disk, a reader gone,
stdout closed): one line and exit 1, or quietly as SIGPIPE ends a filter; never a traceback. ``classify`` and
``check-config`` report through it."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable


def report(write: Callable[[], None]) -> int:
    """0 when ``write`` (which prints to stdout) and the flush after it went through, else the exit code of
    :func:`_stdout_lost`."""
    try:
        if sys.stdout is None:  # started with it closed: print() would write nowhere, and exit 0 say it had
            raise OSError(errno.EBADF, "stdout is closed")
        write()
        sys.stdout.flush()
    except OSError as exc:
        return _stdout_lost(exc)
    return 0


def _stdout_lost(exc: OSError) -> int:
    """The exit code when stdout cannot take the report: a reader gone (``| head``) has what it wanted, and the
    command ends as SIGPIPE ends a filter, without a word; anything else (a full disk) is one line and 1. What is
    left in stdout's buffer goes to /dev/null, or Python's flush at exit said it again ("Exception ignored")."""
    with contextlib.suppress(OSError, ValueError, AttributeError):  # AttributeError: no stdout at all
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if isinstance(exc, BrokenPipeError):
        return 128 + signal.SIGPIPE
    print(f"noisewatch: cannot write the report to stdout ({exc.strerror or exc})", file=sys.stderr)
    return 1
