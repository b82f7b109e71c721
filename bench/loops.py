"""Closed and open loops: one load point each, bounded in time and count.

Closed loop: C requests outstanding at all times, pipelined on one connection or
spread over several. Open loop: requests at a fixed rate (or Poisson arrivals), each
latency measured from its *scheduled* send time, so a stall is charged to every
request it delays (no coordinated omission). Sends are timed with a timerfd
(microsecond precision, not the event loop's millisecond timers); the achieved send
lag is reported.

A `Window` (optional) is told when the measured window begins and ends, on the
generator's loop, so what the server did can be read over exactly that window.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import numpy as np

from .engine import Conn, Run, Ticker, connect, set_timer_slack
from .frames import RequestTemplate
from .result import LoadResult, percentiles
from .target import Target

MAX_DURATION_S = 3600.0
MAX_REQUESTS = 10_000_000
MAX_CONCURRENCY = 4096
MAX_RATE = 1_000_000.0
MAX_INFLIGHT_OPEN = 65536
GRACE_S = 10.0  # after the send phase: wait this long for outstanding replies
SEND_QUANTUM_NS = 100_000


class Window(Protocol):
    async def begin(self) -> None: ...

    async def end(self) -> None: ...


def _setup(token: str | None, setup: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return ([{"op": "auth", "token": token}] if token is not None else []) + list(setup or [])


def _spread(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _check_bounds(duration_s: float | None, count: int | None) -> None:
    if duration_s is None and count is None:
        raise ValueError("give a duration or a request count")
    if duration_s is not None and not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S}] s, received {duration_s}")
    if count is not None and not 0 < count <= MAX_REQUESTS:
        raise ValueError(f"request count must be in (0, {MAX_REQUESTS}], received {count}")


async def _begin_later(window: Window, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    await window.begin()


async def _close_window(window: Window | None, begin: asyncio.Task[None] | None) -> None:
    if window is None:
        return
    if begin is not None:
        if not begin.done():  # the run ended before its warm-up did
            begin.cancel()
            try:
                await begin
            except asyncio.CancelledError:
                pass
            await window.begin()
        else:
            begin.result()
    await window.end()


async def _wait_done(run: Run, timeout_s: float) -> None:
    """Until every request is answered (`run.done`), `timeout_s` at most."""
    assert run.done is not None
    try:
        await asyncio.wait_for(asyncio.shield(run.done), timeout_s)
    except TimeoutError:
        pass


def _stop(ticker: Ticker | None, begin: asyncio.Task[None] | None, conns: list[Conn]) -> None:
    """Whatever happened: no more ticks, no window begun late, connections closed."""
    if ticker is not None:
        ticker.cancel()
    if begin is not None and not begin.done():
        begin.cancel()
    for c in conns:
        if c.transport is not None:
            c.transport.close()


async def closed_loop_async(
    target: Target,
    template: RequestTemplate,
    *,
    concurrency: int = 1,
    connections: int = 1,
    duration_s: float | None = 3.0,
    count: int | None = None,
    warmup_s: float = 0.5,
    token: str | None = None,
    setup: list[dict[str, Any]] | None = None,
    keep_latencies: bool = False,
    tick: Callable[[], None] | None = None,
    tick_interval_s: float = 0.05,
    max_time_s: float | None = None,
    window: Window | None = None,
    transport: str | None = None,
) -> LoadResult:
    """C requests outstanding; `connections` connections share them (C pipelined on one
    connection when connections == 1; one each when connections == C).

    `count` bounds the measured requests; `duration_s` the measured time (either or
    both; the first reached ends the send phase). `max_time_s` bounds the whole run.
    """
    _check_bounds(duration_s, count)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be in [1, {MAX_CONCURRENCY}], received {concurrency}")
    connections = max(1, min(connections, concurrency))
    loop = asyncio.get_running_loop()
    run = Run(
        template,
        closed=True,
        warmup_s=warmup_s,
        duration_s=duration_s,
        count=count,
        keep_latencies=keep_latencies,
    )
    msgs = _setup(token, setup)
    conns: list[Conn] = []
    begin: asyncio.Task[None] | None = None
    ticker = None
    try:
        for d in _spread(concurrency, connections):
            conns.append(await connect(target, run, d, msgs))
        hard = max_time_s or (warmup_s + (duration_s or MAX_DURATION_S) + GRACE_S)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        run.start(time.perf_counter_ns())
        run.done = loop.create_future()
        ticker = Ticker(loop, tick, tick_interval_s)
        if window is not None:
            begin = loop.create_task(_begin_later(window, warmup_s))
        for c in conns:
            c.fill()
        await _wait_done(run, hard)
        run.sending = False
        if run.stop_ns is None:
            run.stop_ns = time.perf_counter_ns()
        if run.sent_at:  # past the grace period: give up on these
            await _wait_done(run, GRACE_S)
        await _close_window(window, begin)
    finally:
        _stop(ticker, begin, conns)
    run.lost = len(run.sent_at)
    window_end = run.stop_ns if duration_s is not None and count is None else run.last_done
    window_start = run.measure_from if run.first_measured is None else run.first_measured
    return _result(
        run,
        "closed",
        target,
        transport or target.kind,
        concurrency,
        len(conns),
        None,
        window_start,
        window_end,
        ru0,
    )


def _result(
    run: Run,
    mode: str,
    target: Target,
    transport: str,
    concurrency: int,
    connections: int,
    rate: float | None,
    w0: int,
    w1: int,
    ru0: Any,
) -> LoadResult:
    """The point's figures, at its end: the client's CPU time is from `ru0` to now."""
    end = time.perf_counter_ns()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    lat_us = np.asarray(run.lat, dtype=np.float64) / 1e3
    pct = percentiles(lat_us)
    window = max(1e-9, (w1 - w0) / 1e9)
    wall = (end - run.start_ns) / 1e9
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    n = len(run.lat)
    rps = n / window if n else 0.0
    return LoadResult(
        mode=mode,
        target=target.url,
        transport=transport,
        concurrency=concurrency,
        connections=connections,
        offered_rate=rate,
        window_s=window,
        wall_s=wall,
        requests=n,
        completed_total=run.completed_total,
        errors=dict(run.errors),
        errors_total=dict(run.errors_total),
        lost=run.lost,
        rps=rps,
        p50_us=pct["p50"],
        p90_us=pct["p90"],
        p99_us=pct["p99"],
        mean_us=pct["mean"],
        max_us=pct["max"],
        rows_per_request=run.tpl.rows,
        rows_per_s=rps * run.tpl.rows,
        request_bytes=run.tpl.size,
        client_cpu_pct=100.0 * cpu / wall if wall > 0 else 0.0,
        client_cpus=dict(run.cpus),
        latencies_us=lat_us.tolist() if run.keep else None,
    )


# ---- open loop -------------------------------------------------------------------------


class _itimerspec(ctypes.Structure):
    _fields_ = [
        ("it_interval_sec", ctypes.c_long),
        ("it_interval_nsec", ctypes.c_long),
        ("it_value_sec", ctypes.c_long),
        ("it_value_nsec", ctypes.c_long),
    ]


class TimerFd:
    """An absolute CLOCK_MONOTONIC timer with nanosecond resolution (perf_counter_ns's
    clock on Linux), readable on the event loop."""

    CLOCK_MONOTONIC = 1
    TFD_NONBLOCK = 0o4000
    TFD_CLOEXEC = 0o2000000
    TFD_TIMER_ABSTIME = 1

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._settime = libc.timerfd_settime
        fd = libc.timerfd_create(self.CLOCK_MONOTONIC, self.TFD_NONBLOCK | self.TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self.fd = int(fd)
        self._spec = _itimerspec()

    def arm_at(self, t_ns: int) -> None:
        t_ns = max(t_ns, 1)
        s = self._spec
        s.it_value_sec, s.it_value_nsec = divmod(t_ns, 1_000_000_000)
        if self._settime(self.fd, self.TFD_TIMER_ABSTIME, ctypes.byref(s), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


async def open_loop_async(
    target: Target,
    template: RequestTemplate,
    *,
    rate: float,
    duration_s: float = 3.0,
    warmup_s: float = 0.5,
    connections: int = 1,
    poisson: bool = False,
    seed: int = 0,
    max_inflight: int = 4096,
    token: str | None = None,
    setup: list[dict[str, Any]] | None = None,
    keep_latencies: bool = False,
    tick: Callable[[], None] | None = None,
    tick_interval_s: float = 0.05,
    window: Window | None = None,
    transport: str | None = None,
) -> LoadResult:
    """Requests at `rate` per second for warm-up + duration; latency from the scheduled
    send time. A request due while `max_inflight` are outstanding is not sent and
    counts as lost (the server is saturated)."""
    _check_bounds(duration_s, None)
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be in (0, {MAX_RATE}], received {rate}")
    max_inflight = min(max_inflight, MAX_INFLIGHT_OPEN)
    loop = asyncio.get_running_loop()
    total_s = warmup_s + duration_s
    n = int(rate * total_s)
    if n < 1 or n > MAX_REQUESTS:
        raise ValueError(f"rate x time gives {n} requests; expected 1..{MAX_REQUESTS}")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n) if poisson else np.full(n, 1.0 / rate)
    offsets = (np.cumsum(gaps) - gaps[0]) * 1e9
    run = Run(
        template,
        closed=False,
        warmup_s=warmup_s,
        duration_s=None,
        count=None,
        keep_latencies=keep_latencies,
    )
    msgs = _setup(token, setup)
    conns: list[Conn] = []
    tfd: TimerFd | None = None
    ticker = None
    begin: asyncio.Task[None] | None = None
    old_slack = set_timer_slack(1000)
    lags: list[int] = []
    state = {"i": 0, "rr": 0, "skipped": 0}
    try:
        for _ in range(max(1, connections)):
            conns.append(await connect(target, run, 0, msgs))
        tfd = TimerFd()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        run.start(time.perf_counter_ns() + 1_000_000)
        sched = (offsets + run.start_ns).astype(np.int64).tolist()
        run.done = loop.create_future()
        timer = tfd

        def on_timer() -> None:
            timer.clear()
            now = time.perf_counter_ns()
            i = state["i"]
            batches: dict[int, list[bytes]] = {}
            while i < n and sched[i] <= now:
                t_s = sched[i]
                i += 1
                if len(run.sent_at) >= max_inflight:
                    state["skipped"] += 1
                    continue
                k = state["rr"]
                state["rr"] = (k + 1) % len(conns)
                batches.setdefault(k, []).append(run.new_request(t_s))
                if t_s >= run.measure_from:
                    lags.append(now - t_s)
            state["i"] = i
            for k, frames in batches.items():
                conns[k].send_now(frames)
            if i < n:
                # At most one wake-up per SEND_QUANTUM_NS: above ~10k req/s a wake-up per
                # request cost the generator most of a core, taken from the server on a
                # 2-core host. Requests due meanwhile leave together; their latency still
                # runs from their scheduled time, and the send lag reports the wait.
                timer.arm_at(max(sched[i], now + SEND_QUANTUM_NS))
            else:
                loop.remove_reader(timer.fd)
                run.stop(time.perf_counter_ns())

        loop.add_reader(tfd.fd, on_timer)
        tfd.arm_at(sched[0])
        ticker = Ticker(loop, tick, tick_interval_s)
        if window is not None:
            begin = loop.create_task(_begin_later(window, warmup_s + 0.001))
        await _wait_done(run, total_s + 2 + GRACE_S)
        await _close_window(window, begin)
    finally:
        _stop(ticker, begin, conns)
        if tfd is not None:
            try:
                loop.remove_reader(tfd.fd)
            except (ValueError, OSError):
                pass
            tfd.close()
        set_timer_slack(old_slack)
    run.lost = len(run.sent_at) + state["skipped"] + (n - state["i"])
    w1 = run.measure_from + int(duration_s * 1e9)
    r = _result(
        run,
        "open",
        target,
        transport or target.kind,
        run.max_inflight,
        len(conns),
        rate,
        run.measure_from,
        w1,
        ru0,
    )
    # Achieved throughput: the window's replies over the time they took to arrive (equal
    # to the offered rate below saturation, the server's capacity above it).
    if r.requests and run.last_done > run.measure_from:
        r.rps = r.requests / max(duration_s, (run.last_done - run.measure_from) / 1e9)
        r.rows_per_s = r.rps * r.rows_per_request
    lp = percentiles(np.asarray(lags, dtype=np.float64) / 1e3)
    r.send_lag_p50_us = lp["p50"]
    r.send_lag_p99_us = lp["p99"]
    return r


# ---- sync wrappers ---------------------------------------------------------------------


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401

        return "uvloop"
    except ImportError:
        return "asyncio"


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on a fresh uvloop loop when uvloop is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        return r.run(coro)


def closed_loop(target: Target, template: RequestTemplate, **kw: Any) -> LoadResult:
    return run_async(closed_loop_async(target, template, **kw))  # type: ignore[no-any-return]


def open_loop(target: Target, template: RequestTemplate, **kw: Any) -> LoadResult:
    return run_async(open_loop_async(target, template, **kw))  # type: ignore[no-any-return]
