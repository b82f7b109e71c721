"""Protocol error codes (gRPC names, protocol.md) and the exception that carries one."""

from __future__ import annotations

import reprlib
from typing import Any

INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
UNAVAILABLE = "UNAVAILABLE"
UNAUTHENTICATED = "UNAUTHENTICATED"
CANCELLED = "CANCELLED"
INTERNAL = "INTERNAL"

CODES = (
    INVALID_ARGUMENT,
    NOT_FOUND,
    FAILED_PRECONDITION,
    RESOURCE_EXHAUSTED,
    DEADLINE_EXCEEDED,
    UNAVAILABLE,
    UNAUTHENTICATED,
    CANCELLED,
    INTERNAL,
)


class ProtocolError(Exception):
    """A request that must be answered with an error reply of `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---- values a client sent, quoted in a message -------------------------------------------
# A message names the value received, but a client chooses its size: a 4 MiB model name,
# a list of 150,000 dimensions, an integer of 10,000 digits (Python refuses to format
# those at all). Every client value that goes into a message goes through `clip`.
CLIP_CHARS = 200


class _Repr(reprlib.Repr):
    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxlist = self.maxtuple = self.maxset = self.maxdict = 8
        self.maxstring = self.maxother = CLIP_CHARS
        self.maxlong = 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() of a huge int is slow, past 4300 digits an error
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _Repr()


def clip(value: Any, limit: int = CLIP_CHARS) -> str:
    """repr() of a client value, cut to about `limit` characters: "'abc...'... (N bytes)".

    Strings and bytes say how long they were; containers show their first items."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        size = len(value.encode("utf-8", "surrogatepass"))
        return f"{value[:limit]!r}... ({size} bytes)"
    if isinstance(value, (bytes, bytearray, memoryview)):
        n = value.nbytes if isinstance(value, memoryview) else len(value)
        if n <= limit:
            return repr(bytes(value))
        return f"{bytes(value[:limit])!r}... ({n} bytes)"
    text = _REPR.repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    if isinstance(value, (list, tuple, dict)) and len(value) > _REPR.maxlist:
        text += f" ({len(value)} items)"
    return text
