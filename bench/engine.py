"""The generator's connections and the state one load point shares between them.

Each connection is an asyncio Protocol that decodes reply frames straight from
`data_received` and, in a closed loop, refills its share of the requests in flight in
the same callback; nothing awaits per request. Set-up messages (`auth`, the
`shm_register` of a client region) go first on each connection, answered before load.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack

from ringserve.ipc import framereader, wire

from .frames import RequestTemplate
from .target import Target

CPU_SAMPLE_EVERY = 64  # replies between sched_getcpu samples
SETUP_TIMEOUT_S = 10.0
# The server closes a connection that completes no frame within its
# handshake_timeout_seconds; an open-loop connection can wait longer than that for
# its first request, so each starts with this (unless auth or a region comes first).
FIRST_FRAME = {"op": "health"}

_libc = ctypes.CDLL(None, use_errno=True)


def sched_getcpu() -> int:
    return int(_libc.sched_getcpu())


PR_SET_TIMERSLACK = 29
PR_GET_TIMERSLACK = 30


def set_timer_slack(ns: int) -> int:
    """Set this thread's timer slack; return the previous value."""
    old = int(_libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0))
    _libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0)
    return old


class Run:
    """State shared by the connections of one point."""

    def __init__(
        self,
        template: RequestTemplate,
        *,
        closed: bool,
        warmup_s: float,
        duration_s: float | None,
        count: int | None,
        keep_latencies: bool,
    ) -> None:
        self.tpl = template
        self.closed = closed
        self.warmup_s = warmup_s
        self.duration_s = duration_s
        self.start(time.perf_counter_ns())
        self.count = count  # measured sends (closed loop with a count)
        self.measured_sent = 0
        self.sending = True
        self.next_id = 0
        self.sent_at: dict[int, int] = {}
        self.lat: list[int] = []
        self.errors: Counter[str] = Counter()
        self.errors_total: Counter[str] = Counter()
        self.completed_total = 0
        self.first_measured: int | None = None
        self.last_done = 0
        self.stop_ns: int | None = None  # when sending stopped
        self.cpus: Counter[int] = Counter()
        self.keep = keep_latencies
        self.done: asyncio.Future[None] | None = None
        self.lost = 0
        self.max_inflight = 0

    def start(self, t_ns: int) -> None:
        self.start_ns = t_ns
        self.measure_from = t_ns + int(self.warmup_s * 1e9)
        self.send_until = (
            self.measure_from + int(self.duration_s * 1e9) if self.duration_s is not None else None
        )

    def may_send(self, now: int) -> bool:
        if not self.sending:
            return False
        if self.send_until is not None and now >= self.send_until:
            self.stop(now)
            return False
        if self.count is not None and self.measured_sent >= self.count and now >= self.measure_from:
            self.stop(now)
            return False
        return True

    def stop(self, now: int) -> None:
        if self.sending:
            self.sending = False
            self.stop_ns = now
        self.maybe_done()

    def maybe_done(self) -> None:
        if not self.sending and not self.sent_at and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def new_request(self, t_send: int) -> bytes:
        self.next_id += 1
        rid = self.next_id
        self.sent_at[rid] = t_send
        if t_send >= self.measure_from:
            self.measured_sent += 1
            if self.first_measured is None:
                self.first_measured = t_send
        n = len(self.sent_at)
        if n > self.max_inflight:
            self.max_inflight = n
        return self.tpl.frame(rid)

    def on_reply(self, msg: Any, now: int) -> None:
        rid = msg.get("id") if isinstance(msg, dict) else None
        t0 = self.sent_at.pop(rid, None) if isinstance(rid, int) else None
        if t0 is None:
            self.errors_total["UNMATCHED_REPLY"] += 1
            self.errors["UNMATCHED_REPLY"] += 1
            return
        self.completed_total += 1
        if self.completed_total % CPU_SAMPLE_EVERY == 0:
            self.cpus[sched_getcpu()] += 1
        code = None
        if self.tpl.check_ok and not msg.get("ok"):
            err = msg.get("error") or {}
            code = str(err.get("code", "NO_OK")) if isinstance(err, dict) else "NO_OK"
            self.errors_total[code] += 1
        if t0 < self.measure_from:
            return
        if code is not None:
            self.errors[code] += 1
            return
        self.lat.append(now - t0)
        self.last_done = now


class Conn(asyncio.Protocol):
    def __init__(self, run: Run, depth: int) -> None:
        self.run = run
        self.depth = depth  # closed loop: requests kept in flight on this connection
        self.inflight = 0
        self.transport: asyncio.Transport | None = None
        self.dec = framereader.FrameDecoder(1 << 31)
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.setup_reply: asyncio.Future[dict[str, Any]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.connected.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        run = self.run
        if self.setup_reply is not None and not self.setup_reply.done():
            self.setup_reply.set_exception(ConnectionError("connection closed during set-up"))
        if run.sending:
            run.errors["CONNECTION_LOST"] += 1
            run.errors_total["CONNECTION_LOST"] += 1
            run.stop(time.perf_counter_ns())
        if run.done is not None and not run.done.done():
            run.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        run = self.run
        bodies = self.dec.feed(data)
        unpack = msgpack.unpackb
        if bodies and self.setup_reply is not None and not self.setup_reply.done():
            self.setup_reply.set_result(unpack(bodies.pop(0), raw=False))
        for body in bodies:
            run.on_reply(unpack(body, raw=False), now)
            self.inflight -= 1
        if run.closed:
            self.fill()
        else:
            run.maybe_done()

    def fill(self) -> None:
        run = self.run
        now = time.perf_counter_ns()
        want = self.depth - self.inflight
        if want > 0 and run.may_send(now):
            frames = []
            for _ in range(want):
                if not run.may_send(now):
                    break
                frames.append(run.new_request(now))
            self.inflight += len(frames)
            assert self.transport is not None
            self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        if not run.sending:
            run.maybe_done()

    def send_now(self, frames: list[bytes]) -> None:
        self.inflight += len(frames)
        assert self.transport is not None
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def setup(self, msg: dict[str, Any]) -> None:
        """Send one set-up request (id 0) and wait for its `ok`."""
        self.setup_reply = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(wire.pack({"id": 0, **msg}))
        reply = await asyncio.wait_for(self.setup_reply, SETUP_TIMEOUT_S)
        self.setup_reply = None
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise ConnectionError(f"{msg['op']} refused: {err.get('code')}: {err.get('message')}")


async def connect(target: Target, run: Run, depth: int, setup: list[dict[str, Any]]) -> Conn:
    loop = asyncio.get_running_loop()
    conn: Conn | None = None

    def factory() -> Conn:
        nonlocal conn
        conn = Conn(run, depth)
        return conn

    if target.kind == "unix":
        await loop.create_unix_connection(factory, target.address)
    else:
        host, port = target.address
        await loop.create_connection(factory, host, port)
    assert conn is not None
    await conn.connected
    # A plain echo that answers without "ok" (check_ok False) gets no set-up frame.
    for msg in setup or ([FIRST_FRAME] if run.tpl.check_ok else []):
        await conn.setup(msg)
    return conn


class Ticker:
    """Calls `fn` every `every` seconds on the loop (progress, CPU sampling)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[], None] | None, every: float
    ) -> None:
        self.loop, self.fn, self.every = loop, fn, every
        self.h: asyncio.TimerHandle | None = loop.call_later(every, self._tick) if fn else None

    def _tick(self) -> None:
        assert self.fn is not None
        self.fn()
        self.h = self.loop.call_later(self.every, self._tick)

    def cancel(self) -> None:
        if self.h is not None:
            self.h.cancel()
            self.h = None
