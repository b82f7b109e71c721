"""The worker's lines on stderr, written so that they never raise.

A worker shares the server's stderr. When its reader is gone (the journal restarted,
a pipe closed: EPIPE) a write raises, and a worker reporting a failed load or a
corrupt ring would die of the BrokenPipeError instead: the supervisor would see a crash
(exit 1) and not the failure the worker was about to report. So a line that cannot be
written is dropped, as the supervisor's own log does (runtime/slots.py).
"""

from __future__ import annotations

import sys
import traceback


def say(line: str) -> None:
    try:
        sys.stderr.write(line if line.endswith("\n") else line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # ValueError: stderr closed in this process
        pass


def say_exception() -> None:
    """The exception being handled, with its traceback."""
    say(traceback.format_exc())


def flush() -> None:
    """What is buffered, before an exit that skips the interpreter's own teardown."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
