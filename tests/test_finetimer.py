"""frontend/finetimer.py: the frontend's microsecond timer (a timerfd the loop watches),
on the real event loop: it fires once, never early, a re-arm replaces the time, and a
disarmed timer stays silent."""

from __future__ import annotations

import asyncio
import time

import uvloop

from ringserve.frontend.finetimer import FineTimer


def run(coro_fn: object) -> None:
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(coro_fn(loop))  # type: ignore[operator]
    finally:
        loop.close()


def test_it_fires_once_and_never_before_its_time() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        fired: list[float] = []
        done = asyncio.Event()

        def cb() -> None:
            fired.append(time.perf_counter())
            done.set()

        t = FineTimer(loop, cb)
        try:
            start = time.perf_counter()
            t.arm(0.0025)
            assert t.armed
            await asyncio.wait_for(done.wait(), 5)
            assert fired[0] - start >= 0.0025
            assert not t.armed
            await asyncio.sleep(0.02)  # a one-shot: nothing more comes
            assert len(fired) == 1
        finally:
            t.close()

    run(body)


def test_a_rearm_replaces_the_time_and_a_disarm_silences_it() -> None:
    async def body(loop: asyncio.AbstractEventLoop) -> None:
        fired: list[float] = []
        done = asyncio.Event()

        def cb() -> None:
            fired.append(time.perf_counter())
            done.set()

        t = FineTimer(loop, cb)
        try:
            start = time.perf_counter()
            t.arm(0.001)
            t.arm(0.03)  # later: the first time is gone
            await asyncio.wait_for(done.wait(), 5)
            assert len(fired) == 1 and fired[0] - start >= 0.03
            done.clear()
            t.arm(0.001)
            t.disarm()
            assert not t.armed
            # A loop timer well past the disarmed time, as the deadline to fire by.
            await asyncio.sleep(0.05)
            assert len(fired) == 1
        finally:
            t.close()

    run(body)
