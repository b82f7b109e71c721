"""frontend/finetimer.py: the frontend's microsecond timer (a timerfd the loop watches),
on the real event loop: it fires once, never early, a re-arm replaces the time, and a
disarmed timer stays silent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import uvloop

from ringserve.frontend.finetimer import FineTimer


class Fired:
    """A FineTimer on a fresh loop, and when it called back."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.at: list[float] = []
        self.event = asyncio.Event()
        self.timer = FineTimer(loop, self.callback)

    def callback(self) -> None:
        self.at.append(time.perf_counter())
        self.event.set()

    async def wait(self) -> None:
        await asyncio.wait_for(self.event.wait(), 5)
        self.event.clear()


def run(body: Callable[[Fired], Awaitable[None]]) -> None:
    loop = uvloop.new_event_loop()

    async def main() -> None:
        f = Fired(loop)
        try:
            await body(f)
        finally:
            f.timer.close()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_it_fires_once_and_never_before_its_time() -> None:
    async def body(f: Fired) -> None:
        start = time.perf_counter()
        f.timer.arm(0.0025)
        assert f.timer.armed
        await f.wait()
        assert f.at[0] - start >= 0.0025
        assert not f.timer.armed
        # A one-shot: nothing more comes in a window many times its delay (a check
        # that something does not happen needs a window; nothing waits on it).
        await asyncio.sleep(0.02)
        assert len(f.at) == 1

    run(body)


def test_a_rearm_replaces_the_time_and_a_disarm_silences_it() -> None:
    async def body(f: Fired) -> None:
        start = time.perf_counter()
        f.timer.arm(0.001)
        f.timer.arm(0.03)  # later: the first time is gone
        await f.wait()
        assert len(f.at) == 1 and f.at[0] - start >= 0.03
        f.timer.arm(0.001)
        f.timer.disarm()
        assert not f.timer.armed
        await asyncio.sleep(0.05)  # well past the disarmed time
        assert len(f.at) == 1

    run(body)
