"""A byte range of a file another process owns, copied with pread/pwrite, never mapped.

A client's shared-memory region can be truncated by its owner at any moment. Through
a mapping, touching a page past the new end is SIGBUS, which kills the process that
touches it. Through `preadv`/`pwritev` on a held fd the same truncate is a short
count, which the caller turns into an error for that one request. On this machine
preadv costs about 1.6x a memcpy (1 MiB: ~100 us against ~60 us), far below what the
same bytes cost through a socket (perf/RESULTS.md, "client regions").
"""

from __future__ import annotations

import os
from typing import Any


class FdSlice:
    """`nbytes` bytes at `offset` of `file` (a FileIO kept alive by this reference, so
    the fd cannot be closed and reused while a queued request still names it)."""

    __slots__ = ("file", "label", "nbytes", "offset", "short")

    def __init__(self, file: Any, offset: int, nbytes: int, label: str) -> None:
        self.file = file
        self.offset = offset
        self.nbytes = nbytes
        self.label = label
        self.short: int | None = None  # bytes actually read by the last read_into, if short

    def read_into(self, dest: memoryview) -> bool:
        """Copy the range into `dest` (exactly `nbytes` long). On a short read (the
        owner shrank the file) the rest is zeroed, `short` says how much was read, and
        False is returned; the caller must fail the request, never use the bytes."""
        self.short = None
        got = 0
        fd = self.file.fileno()
        try:
            while got < self.nbytes:
                n = os.preadv(fd, [dest[got:]], self.offset + got)
                if n <= 0:
                    break
                got += n
        except OSError:
            pass
        if got == self.nbytes:
            return True
        dest[got:] = bytes(self.nbytes - got)
        self.short = got
        return False

    def current_size(self) -> int:
        try:
            return os.fstat(self.file.fileno()).st_size
        except OSError:
            return -1

    def describe_short(self) -> str:
        return (
            f"{self.label}: region shrank under the request: expected {self.nbytes} bytes "
            f"at offset {self.offset}, read {self.short}; the region now holds "
            f"{self.current_size()} bytes"
        )
