"""Failover for the SDK: several addresses, and a bounded retry of a request that
could not have been served (docs/protocol.md, "SDK: several addresses and retries").

A request is retried, on a fresh connection to the next address, when it was
answered `UNAVAILABLE` (a server stopping, a model with no live worker) or when its
connection closed or broke before its reply came. Inference is idempotent, so this
is safe even when the server had computed the request before the connection broke.
Nothing else is retried: an error that names the request (`INVALID_ARGUMENT`,
`NOT_FOUND`, ...) would fail again, and a client-side timeout may mean a long call.

The budget is a number of retries and a time: whichever runs out first ends the
retrying and the last error is raised. Between attempts the client backs off,
exponentially with full jitter (as AWS's architecture blog recommends), so many
clients that lose the same server do not all come back in step. The first retry
after a server said it is stopping goes at once, to another address.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ConnectionClosed, RingserveError, Unavailable


def addresses_of(address: str | Sequence[str]) -> list[str]:
    """One address, a comma-separated string of them, or a list."""
    if isinstance(address, str):
        out = [a.strip() for a in address.split(",") if a.strip()]
    else:
        out = [str(a).strip() for a in address]
    if not out:
        raise ValueError(f"address: expected at least one address, received {address!r}")
    return out


def retryable(exc: BaseException) -> bool:
    """Errors after which the same request may go to another connection."""
    if isinstance(exc, (Unavailable, ConnectionClosed)):
        return True
    if isinstance(exc, RingserveError):
        return False
    # The connection broke or could not be made; a timeout may be a long inference.
    return isinstance(exc, (ConnectionError, EOFError)) or (
        isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
    )


def stopping(exc: BaseException) -> bool:
    return isinstance(exc, Unavailable) and "stopping" in exc.message


@dataclass
class RetryPolicy:
    """`retries`: extra attempts per request (0 turns retrying off); `retry_timeout`:
    seconds from the first attempt after which no new attempt starts; backoff doubles
    from `backoff` up to `max_backoff`, each wait drawn uniformly below it (jitter)."""

    retries: int = 3
    retry_timeout: float = 30.0
    backoff: float = 0.05
    max_backoff: float = 1.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries: expected an integer >= 0, received {self.retries!r}")

    def delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if attempt == 1 and stopping(exc):
            return 0.0  # that server said so: another one is likely fine right now
        cap = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return random.uniform(0.0, cap)

    def allows(self, attempt: int, started: float) -> bool:
        return attempt <= self.retries and time.monotonic() - started < self.retry_timeout


class Addresses:
    """The addresses in the order given, moving to the next one after a failure and
    round to the first again (like gRPC's pick_first). To spread many clients over
    several hosts without a load balancer, give each its list in a random order."""

    def __init__(self, address: str | Sequence[str]) -> None:
        self.all = addresses_of(address)
        self._i = 0

    @property
    def current(self) -> str:
        return self.all[self._i]

    def advance(self) -> str:
        self._i = (self._i + 1) % len(self.all)
        return self.current
