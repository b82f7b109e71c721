"""Stopping without dropping a request: refuse new work, answer what was accepted,
close each connection once it is idle, so its client reconnects elsewhere.

The supervisor decides when (SIGTERM after `drain_delay_seconds`, SIGINT at once);
this module is what the frontend does from then on (docs/protocol.md, "Stopping").

Closing a connection races with a client that sends on it at that moment, as for
any keep-alive protocol (HTTP/1.1 has the same race). The close is made rare and
harmless: a connection is closed only when no request of it is outstanding and it
has been quiet (no frame received, no reply due) for a moment: `TOLD_QUIET_S` once
it has been told the server is stopping (a well-behaved client sends nothing more,
but a pipelining one may have sent a request before it read that reply), else
`IDLE_CLOSE_S` (long enough for a client in a closed loop to send its next request
and be told). A client that keeps sending after being told is closed at its first
idle moment past `TOLD_MAX_S`. The close is a half-close (FIN after the replies
already written), so nothing written is lost; a request that crosses it is never
read and never computed, and the SDK retries it like any request without a reply.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Frontend

STOPPING_MESSAGE = "server is stopping: retry on another server"
# Ops still answered while draining: they report the state, they start no work.
ANSWERED_WHILE_DRAINING = frozenset({"health", "stats"})
IDLE_CLOSE_S = 0.2
TOLD_QUIET_S = 0.05
TOLD_MAX_S = 1.0
# After the half-close, how long the peer has to close its side before we do.
LINGER_S = 2.0
TICK_S = 0.01


class Drain:
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self.started_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        fe = self.frontend
        if fe.draining:
            return
        fe.draining = True
        fe.accepting = False
        self.started_at = time.monotonic()
        fe.close_listeners()
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        for c in list(self.frontend.connections):
            if c.closed:
                continue
            if c.half_closed_at:
                if now - c.half_closed_at >= LINGER_S:
                    c.close()
                continue
            if c.inflight:
                continue
            quiet = now - max(self.started_at, c.last_active)
            told = c.told_stopping
            if (
                quiet >= IDLE_CLOSE_S
                or (told and quiet >= TOLD_QUIET_S)
                or (told and now - told >= TOLD_MAX_S)
            ):
                c.close_idle()
        self._timer = self.frontend.loop.call_later(TICK_S, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
