"""Per-connection limits that need a clock: the first frame, and each frame once begun.

A connection must complete its first frame within `handshake_timeout_seconds`, and a
frame whose first byte has arrived must end within `frame_timeout_seconds` (a client
that sends one byte a second never holds a connection and its buffers for long). One
sweep on the loop checks the connections that are in either state; it runs only while
there are such connections, so an idle server still sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from .connection import Connection


class LimitLog:
    """One log line per limit per second at most, with a count of those left out: a flood
    of refused connections must not become a flood of log lines."""

    def __init__(self, log: Callable[[str], None], every: float = 1.0) -> None:
        self._log = log
        self._every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self.hits: dict[str, int] = {}  # every time a limit closed a connection (stats)

    def __call__(self, limit: str, text: str) -> None:
        self.hits[limit] = self.hits.get(limit, 0) + 1
        now = time.monotonic()
        if now - self._last.get(limit, -1e9) < self._every:
            self._held[limit] = self._held.get(limit, 0) + 1
            return
        self._last[limit] = now
        held = self._held.pop(limit, 0)
        more = f" ({held} more like it since the last line)" if held else ""
        self._log(f"limit server.{limit}: {text}{more}")


class Watchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.handshake = 0.0
        self.frame = 0.0
        self._watched: set[Connection] = set()
        self._timer: asyncio.TimerHandle | None = None

    def configure(self, handshake: float, frame: float) -> None:
        self.handshake, self.frame = handshake, frame

    def watch(self, conn: Connection) -> None:
        self._watched.add(conn)
        if self._timer is None:
            self._timer = self.loop.call_later(self._tick(), self._sweep)

    def _tick(self) -> float:
        # A quarter of the shortest limit: a connection is closed within 1.25 x its limit.
        limits = [t for t in (self.handshake, self.frame) if t > 0]
        return min(1.0, *(t / 4 for t in limits)) if limits else 1.0

    def _sweep(self) -> None:
        self._timer = None
        now = time.monotonic()
        for conn in list(self._watched):
            if conn.closed:
                self._watched.discard(conn)
            elif not conn.handshaken:
                if self.handshake and now - conn.opened > self.handshake:
                    conn.limit_close(
                        "handshake_timeout_seconds",
                        f"no complete frame within {self.handshake:g} s of connecting",
                    )
                    self._watched.discard(conn)
            elif conn.frame_since is not None:
                if conn.reading_paused:
                    conn.frame_since = now  # our pause, not the client's dribble
                elif self.frame and now - conn.frame_since > self.frame:
                    conn.limit_close(
                        "frame_timeout_seconds",
                        f"a frame begun {now - conn.frame_since:.1f} s ago is still "
                        f"incomplete (limit {self.frame:g} s)",
                    )
                    self._watched.discard(conn)
            else:
                self._watched.discard(conn)
        if self._watched:
            self._timer = self.loop.call_later(self._tick(), self._sweep)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watched.clear()
