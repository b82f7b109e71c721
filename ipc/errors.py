"""Protocol error codes (gRPC names, protocol.md) and the exception that carries one."""

from __future__ import annotations

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
