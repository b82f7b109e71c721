"""One exception class per protocol error code, all under RingserveError."""

from __future__ import annotations

from ringserve.ipc import errors as E


class RingserveError(Exception):
    code = "UNKNOWN"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(RingserveError):
    code = E.INVALID_ARGUMENT


class NotFound(RingserveError):
    code = E.NOT_FOUND


class FailedPrecondition(RingserveError):
    code = E.FAILED_PRECONDITION


class ResourceExhausted(RingserveError):
    code = E.RESOURCE_EXHAUSTED


class DeadlineExceeded(RingserveError):
    code = E.DEADLINE_EXCEEDED


class Unavailable(RingserveError):
    code = E.UNAVAILABLE


class Unauthenticated(RingserveError):
    code = E.UNAUTHENTICATED


class Cancelled(RingserveError):
    code = E.CANCELLED


class Internal(RingserveError):
    code = E.INTERNAL


class ConnectionClosed(Unavailable):
    """The server closed the connection (or it broke) before a reply came."""


BY_CODE: dict[str, type[RingserveError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        FailedPrecondition,
        ResourceExhausted,
        DeadlineExceeded,
        Unavailable,
        Unauthenticated,
        Cancelled,
        Internal,
    )
}


def from_reply(error: dict[str, object]) -> RingserveError:
    code = str(error.get("code", "INTERNAL"))
    message = str(error.get("message", ""))
    return BY_CODE.get(code, RingserveError)(f"{code}: {message}", code)
