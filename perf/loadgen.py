"""Load generator for ringserve: closed and open loop, raw sockets, pre-encoded frames.

Speaks the wire protocol (protocol.md) directly: a 4-byte big-endian length and one
msgpack map per frame, framed with ringserve.ipc.wire; tensors travel as raw bytes.
Each request is a pre-encoded frame whose uint64 `id` is patched in place, so the
client spends about a microsecond building it. Runs on uvloop when installed.

Closed loop: C requests outstanding at all times, either pipelined on one connection
or spread over several (`--connections`). Open loop: requests at a fixed rate (or
Poisson arrivals), each latency measured from its *scheduled* send time, so a stall
is charged to every request it delays (no coordinated omission). Sends are timed with
a timerfd (microsecond precision, not the event loop's millisecond timers); the
achieved send lag is reported.

Only loopback TCP and Unix sockets are accepted; every run is bounded in time and
count.

Library:
    import loadgen
    t = loadgen.parse_target("unix:///tmp/rs.sock")
    tpl = loadgen.infer_template("demo", {"x": x})
    r = loadgen.closed_loop(t, tpl, concurrency=8, duration_s=3)
    print(r.p50_us, r.rps)

CLI: python perf/loadgen.py unix:///path --model demo --concurrency 1,8,32
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ipaddress
import os
import resource
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from typing import Any

import benchlib as B
import msgpack
import numpy as np

from ringserve.ipc import wire

MAX_DURATION_S = 600.0
MAX_REQUESTS = 10_000_000
MAX_CONCURRENCY = 4096
MAX_RATE = 1_000_000.0
MAX_INFLIGHT_OPEN = 65536
GRACE_S = 10.0  # after the send phase: wait this long for outstanding replies
ID = struct.Struct(">Q")
CPU_SAMPLE_EVERY = 64  # replies between sched_getcpu samples


# ---- targets ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    kind: str  # "unix" | "tcp"
    address: Any  # path, or (host, port)
    url: str


def parse_target(url: str) -> Target:
    """tcp://host:port (host must be loopback) or unix:///path."""
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path:
            raise ValueError(f"target {url!r}: empty socket path")
        return Target("unix", path, url)
    if not url.startswith("tcp://"):
        raise ValueError(f"target: expected tcp://host:port or unix:///path, received {url!r}")
    hostport = url[len("tcp://") :]
    host, sep, port = hostport.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit():
        raise ValueError(f"target {url!r}: expected tcp://host:port")
    infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    addrs = {i[4][0] for i in infos}
    if not addrs or not all(ipaddress.ip_address(a).is_loopback for a in addrs):
        raise ValueError(f"target {url!r}: only loopback addresses are allowed, {host} is {addrs}")
    return Target("tcp", (host, int(port)), url)


# ---- requests --------------------------------------------------------------------------


class RequestTemplate:
    """One pre-encoded request frame; `frame(rid)` patches in the uint64 id.

    The body is the msgpack map {"id": <uint64, always 9 bytes>, **fields}.
    """

    def __init__(self, fields: dict[str, Any], check_ok: bool = True) -> None:
        if "id" in fields:
            raise ValueError("fields must not contain 'id'")
        n = len(fields) + 1
        hdr = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
        prefix = hdr + msgpack.packb("id") + b"\xcf"
        suffix = b"".join(
            msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
            for k, v in fields.items()
        )
        self._head = wire.HEADER.pack(len(prefix) + 8 + len(suffix)) + prefix
        self._suffix = suffix
        self.size = len(self._head) + 8 + len(suffix)
        self.check_ok = check_ok  # False for echo servers (no "ok" in replies)
        self.fields = fields

    def frame(self, rid: int) -> bytes:
        return self._head + ID.pack(rid) + self._suffix


def wire_tensor(a: np.ndarray[Any, Any]) -> dict[str, Any]:
    """Protocol tensor of `a`: raw little-endian bytes (never lists)."""
    if a.dtype.kind in "OSU":
        items = [x if isinstance(x, bytes) else str(x).encode() for x in a.reshape(-1)]
        return {"dtype": "string", "shape": list(a.shape), "data": items}
    le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": le.tobytes()}


def infer_template(
    model: str,
    inputs: dict[str, np.ndarray[Any, Any]],
    *,
    signature: str | None = None,
    outputs: list[str] | None = None,
    version: int | None = None,
) -> RequestTemplate:
    f: dict[str, Any] = {
        "op": "infer",
        "model": model,
        "inputs": {k: wire_tensor(v) for k, v in inputs.items()},
    }
    if version is not None:
        f["version"] = version
    if signature is not None:
        f["signature"] = signature
    if outputs is not None:
        f["outputs"] = outputs
    return RequestTemplate(f)


def echo_template(payload_bytes: int, seed: int = 0) -> RequestTemplate:
    """For a plain echo server: {"id", "op": "echo", "data": <payload_bytes of bin>}."""
    data = np.random.default_rng(seed).integers(0, 256, payload_bytes, dtype=np.uint8).tobytes()
    return RequestTemplate({"op": "echo", "data": data}, check_ok=False)


# ---- blocking helpers (set-up only, never on the measured path) -------------------------


def call(
    target: Target, op: str, token: str | None = None, timeout: float = 10.0, **fields: Any
) -> dict[str, Any]:
    """One request over a fresh blocking socket; returns the reply map."""
    fam = socket.AF_UNIX if target.kind == "unix" else socket.AF_INET
    if target.kind == "tcp" and ":" in target.address[0]:
        fam = socket.AF_INET6
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(target.address)
        dec = wire.FrameDecoder(1 << 30)
        msgs = ([{"id": 1, "op": "auth", "token": token}] if token else []) + [
            {"id": 2, "op": op, **fields}
        ]
        for m in msgs:
            s.sendall(wire.pack(m))
            while True:
                data = s.recv(1 << 20)
                if not data:
                    raise ConnectionError(f"{target.url}: connection closed during {m['op']}")
                bodies = dec.feed(data)
                if bodies:
                    reply: dict[str, Any] = msgpack.unpackb(bodies[0], raw=False)
                    break
            if m["op"] == "auth" and not reply.get("ok"):
                raise ConnectionError(f"auth refused: {reply.get('error')}")
        return reply


def example_inputs(
    target: Target, model: str, batch: int = 1, seed: int = 0, token: str | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """Seeded inputs of batch `batch` shaped from the model's `metadata` (-1 -> batch)."""
    meta = call(target, "metadata", token=token, model=model)
    if not meta.get("ok"):
        raise RuntimeError(f"metadata of {model!r}: {meta.get('error')}")
    spec = meta["signatures"]["serving_default"]["inputs"]
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, t in sorted(spec.items()):
        shape = [batch if d in (-1, None) else d for d in (t["shape"] or [-1])]
        dt = t["dtype"]
        if dt == "string":
            out[name] = np.full(shape, b"ringserve", dtype=object)
        elif dt.startswith("float"):
            out[name] = rng.standard_normal(shape).astype(dt)
        elif dt == "bool":
            out[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            out[name] = rng.integers(0, 10, shape).astype(dt)
    return out


# ---- results ---------------------------------------------------------------------------


@dataclass
class LoadResult:
    mode: str  # "closed" | "open"
    target: str
    transport: str
    concurrency: int  # closed: C; open: the largest number in flight seen
    connections: int
    offered_rate: float | None  # open loop only
    window_s: float  # measurement window (after warm-up)
    wall_s: float  # the whole run, warm-up included
    requests: int  # measured successful replies
    completed_total: int  # every reply, warm-up included
    errors: dict[str, int]
    lost: int  # no reply within the grace period, or not sent (open loop, limit)
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    send_lag_p50_us: float | None = None
    send_lag_p99_us: float | None = None
    client_cpu_pct: float = 0.0  # this process, percent of one core, over wall_s
    client_cpus: dict[int, int] = field(default_factory=dict)
    latencies_us: list[float] | None = None

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("latencies_us", None)
        return d


# ---- the engine ------------------------------------------------------------------------


class _Run:
    """State shared by the connections of one run."""

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
        self.start_ns = time.perf_counter_ns()
        self.measure_from = self.start_ns + int(warmup_s * 1e9)
        self.send_until = (
            self.measure_from + int(duration_s * 1e9) if duration_s is not None else None
        )
        self.count = count  # measured sends (closed loop with a count)
        self.measured_sent = 0
        self.sending = True
        self.next_id = 0
        self.sent_at: dict[int, int] = {}
        self.lat: list[int] = []
        self.errors: Counter[str] = Counter()
        self.completed_total = 0
        self.first_measured: int | None = None
        self.last_done = 0
        self.stop_ns: int | None = None  # when sending stopped
        self.cpus: Counter[int] = Counter()
        self.keep = keep_latencies
        self.done: asyncio.Future[None] | None = None
        self.lost = 0
        self.max_inflight = 0

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
            self.errors["UNMATCHED_REPLY"] += 1
            return
        self.completed_total += 1
        if self.completed_total % CPU_SAMPLE_EVERY == 0:
            self.cpus[B.sched_getcpu()] += 1
        if t0 < self.measure_from:
            return
        if self.tpl.check_ok and not msg.get("ok"):
            err = msg.get("error") or {}
            self.errors[str(err.get("code", "NO_OK"))] += 1
            return
        self.lat.append(now - t0)
        self.last_done = now


class _Conn(asyncio.Protocol):
    def __init__(self, run: _Run, depth: int) -> None:
        self.run = run
        self.depth = depth  # closed loop: requests kept in flight on this connection
        self.inflight = 0
        self.transport: asyncio.Transport | None = None
        self.dec = wire.FrameDecoder(1 << 31)
        self.lost_exc: Exception | None = None
        self.connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.auth_reply: asyncio.Future[dict[str, Any]] | None = None

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
        self.lost_exc = exc or ConnectionError("connection closed")
        run = self.run
        if run.sending:
            run.errors["CONNECTION_LOST"] += 1
            run.stop(time.perf_counter_ns())
        if run.done is not None and not run.done.done():
            run.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter_ns()
        run = self.run
        bodies = self.dec.feed(data)
        unpack = msgpack.unpackb
        if bodies and self.auth_reply is not None and not self.auth_reply.done():
            self.auth_reply.set_result(unpack(bodies.pop(0), raw=False))
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


async def _connect(target: Target, run: _Run, depth: int, token: str | None) -> _Conn:
    loop = asyncio.get_running_loop()
    conn: _Conn | None = None

    def factory() -> _Conn:
        nonlocal conn
        conn = _Conn(run, depth)
        return conn

    if target.kind == "unix":
        await loop.create_unix_connection(factory, target.address)
    else:
        host, port = target.address
        await loop.create_connection(factory, host, port)
    assert conn is not None
    await conn.connected
    if token is not None:
        conn.auth_reply = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(wire.pack({"id": 0, "op": "auth", "token": token}))
        reply = await asyncio.wait_for(conn.auth_reply, 10.0)
        if not reply.get("ok"):
            raise ConnectionError(f"auth refused: {reply.get('error')}")
    return conn


def _spread(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _check_bounds(duration_s: float | None, count: int | None) -> None:
    if duration_s is None and count is None:
        raise ValueError("give a duration or a request count")
    if duration_s is not None and not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {MAX_DURATION_S}] s")
    if count is not None and not 0 < count <= MAX_REQUESTS:
        raise ValueError(f"request count must be in (0, {MAX_REQUESTS}]")


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
    keep_latencies: bool = False,
    tick: Callable[[], None] | None = None,
    tick_interval_s: float = 0.05,
    max_time_s: float | None = None,
) -> LoadResult:
    """C requests outstanding; `connections` connections share them (C pipelined on one
    connection when connections == 1; one each when connections == C).

    `count` bounds the measured requests; `duration_s` the measured time (either or
    both; the first reached ends the send phase). `max_time_s` bounds the whole run.
    """
    _check_bounds(duration_s, count)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be in [1, {MAX_CONCURRENCY}]")
    connections = max(1, min(connections, concurrency))
    loop = asyncio.get_running_loop()
    run = _Run(
        template,
        closed=True,
        warmup_s=warmup_s,
        duration_s=duration_s,
        count=count,
        keep_latencies=keep_latencies,
    )
    conns = [await _connect(target, run, d, token) for d in _spread(concurrency, connections)]
    hard = max_time_s or (warmup_s + (duration_s or MAX_DURATION_S) + GRACE_S)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    run.start_ns = time.perf_counter_ns()
    run.measure_from = run.start_ns + int(warmup_s * 1e9)
    if duration_s is not None:
        run.send_until = run.measure_from + int(duration_s * 1e9)
    run.done = loop.create_future()
    ticker = _Ticker(loop, tick, tick_interval_s)
    try:
        for c in conns:
            c.fill()
        try:
            await asyncio.wait_for(asyncio.shield(run.done), hard)
        except TimeoutError:
            pass
        run.sending = False
        if run.stop_ns is None:
            run.stop_ns = time.perf_counter_ns()
        if run.sent_at:  # past the grace period: give up on these
            try:
                await asyncio.wait_for(asyncio.shield(run.done), GRACE_S)
            except TimeoutError:
                pass
    finally:
        ticker.cancel()
        for c in conns:
            if c.transport is not None:
                c.transport.close()
    end = time.perf_counter_ns()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    run.lost = len(run.sent_at)
    window_end = run.stop_ns if duration_s is not None and count is None else run.last_done
    window_start = run.measure_from if run.first_measured is None else run.first_measured
    return _result(
        run,
        "closed",
        target,
        concurrency,
        len(conns),
        None,
        window_start,
        window_end,
        end,
        ru0,
        ru1,
    )


class _Ticker:
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


def _result(
    run: _Run,
    mode: str,
    target: Target,
    concurrency: int,
    connections: int,
    rate: float | None,
    w0: int,
    w1: int,
    end: int,
    ru0: Any,
    ru1: Any,
) -> LoadResult:
    lat_us = np.asarray(run.lat, dtype=np.float64) / 1e3
    pct = B.percentiles(lat_us)
    window = max(1e-9, (w1 - w0) / 1e9)
    wall = (end - run.start_ns) / 1e9
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    # Closed loop over a fixed window: replies of requests sent in the window.
    n = len(run.lat)
    return LoadResult(
        mode=mode,
        target=target.url,
        transport=target.kind,
        concurrency=concurrency,
        connections=connections,
        offered_rate=rate,
        window_s=window,
        wall_s=wall,
        requests=n,
        completed_total=run.completed_total,
        errors=dict(run.errors),
        lost=run.lost,
        rps=n / window if n else 0.0,
        p50_us=pct["p50"],
        p90_us=pct["p90"],
        p99_us=pct["p99"],
        mean_us=pct["mean"],
        max_us=pct["max"],
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


SEND_QUANTUM_NS = 100_000


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
    keep_latencies: bool = False,
    tick: Callable[[], None] | None = None,
    tick_interval_s: float = 0.05,
) -> LoadResult:
    """Requests at `rate` per second for warm-up + duration; latency from the scheduled
    send time. A request due while `max_inflight` are outstanding is not sent and
    counts as lost (the server is saturated)."""
    _check_bounds(duration_s, None)
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate must be in (0, {MAX_RATE}]")
    max_inflight = min(max_inflight, MAX_INFLIGHT_OPEN)
    loop = asyncio.get_running_loop()
    total_s = warmup_s + duration_s
    n = int(rate * total_s)
    if n < 1 or n > MAX_REQUESTS:
        raise ValueError(f"rate x time gives {n} requests; expected 1..{MAX_REQUESTS}")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, n) if poisson else np.full(n, 1.0 / rate)
    offsets = (np.cumsum(gaps) - gaps[0]) * 1e9
    run = _Run(
        template,
        closed=False,
        warmup_s=warmup_s,
        duration_s=None,
        count=None,
        keep_latencies=keep_latencies,
    )
    conns = [await _connect(target, run, 0, token) for _ in range(max(1, connections))]
    tfd = TimerFd()
    old_slack = B.set_timer_slack(1000)
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    run.start_ns = time.perf_counter_ns() + 1_000_000
    run.measure_from = run.start_ns + int(warmup_s * 1e9)
    sched = (offsets + run.start_ns).astype(np.int64).tolist()
    run.done = loop.create_future()
    lags: list[int] = []
    state = {"i": 0, "rr": 0, "skipped": 0}

    def on_timer() -> None:
        tfd.clear()
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
            tfd.arm_at(max(sched[i], now + SEND_QUANTUM_NS))
        else:
            loop.remove_reader(tfd.fd)
            run.stop(time.perf_counter_ns())

    loop.add_reader(tfd.fd, on_timer)
    tfd.arm_at(sched[0])
    ticker = _Ticker(loop, tick, tick_interval_s)
    try:
        try:
            await asyncio.wait_for(asyncio.shield(run.done), total_s + 2 + GRACE_S)
        except TimeoutError:
            pass
    finally:
        ticker.cancel()
        try:
            loop.remove_reader(tfd.fd)
        except (ValueError, OSError):
            pass
        tfd.close()
        B.set_timer_slack(old_slack)
        for c in conns:
            if c.transport is not None:
                c.transport.close()
    end = time.perf_counter_ns()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    run.lost = len(run.sent_at) + state["skipped"] + (n - state["i"])
    w1 = run.measure_from + int(duration_s * 1e9)
    r = _result(
        run, "open", target, run.max_inflight, len(conns), rate, run.measure_from, w1, end, ru0, ru1
    )
    # Achieved throughput: the window's replies over the time they took to arrive (equal
    # to the offered rate below saturation, the server's capacity above it).
    if r.requests and run.last_done > run.measure_from:
        r.rps = r.requests / max(duration_s, (run.last_done - run.measure_from) / 1e9)
    lp = B.percentiles(np.asarray(lags, dtype=np.float64) / 1e3)
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
    """Run on a fresh uvloop (or asyncio) loop."""
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
            return r.run(coro)
    except ImportError:
        return asyncio.run(coro)


def closed_loop(target: Target, template: RequestTemplate, **kw: Any) -> LoadResult:
    return run_async(closed_loop_async(target, template, **kw))  # type: ignore[no-any-return]


def open_loop(target: Target, template: RequestTemplate, **kw: Any) -> LoadResult:
    return run_async(open_loop_async(target, template, **kw))  # type: ignore[no-any-return]


# ---- CLI -------------------------------------------------------------------------------


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/loadgen.py",
        description="Closed- or open-loop load against a ringserve server (or any "
        "length-prefixed msgpack echo server with --echo). Prints a markdown table of "
        "medians over --repeat runs.",
    )
    p.add_argument("target", help="tcp://127.0.0.1:PORT or unix:///path (loopback/Unix only)")
    p.add_argument("--model", default="demo", help="model name (default: demo)")
    p.add_argument(
        "--input-npy",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="an input from a .npy file (default: seeded inputs shaped from `metadata`)",
    )
    p.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    p.add_argument("--signature", default=None)
    p.add_argument("--echo", type=int, metavar="BYTES", help="echo-server mode: payload size")
    p.add_argument(
        "--concurrency", default="1,8,32", help="closed loop: comma list (default 1,8,32)"
    )
    B.add_connections_arg(p)
    p.add_argument("--rate", default="", help="open loop: comma list of requests/s")
    p.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals")
    p.add_argument("--max-inflight", type=int, default=4096, help="open loop cap (default 4096)")
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds (default 3)")
    p.add_argument("--requests", type=int, default=None, help="closed loop: measured requests")
    p.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds (default 0.5)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; medians (default 3)")
    p.add_argument("--token", default=None, help="auth token for TCP")
    p.add_argument(
        "--inproc-model",
        default=None,
        metavar="DIR",
        help="SavedModel version folder: also time the in-process TF call on the same input "
        "(child process) and report ratios against it",
    )
    p.add_argument("--inproc-pin", default=None, metavar="CPUS", help="e.g. 1: pin that child")
    p.add_argument("--intra", type=int, default=1, help="in-process child's intra-op threads")
    p.add_argument("--inter", type=int, default=1, help="in-process child's inter-op threads")
    p.add_argument("--quick", action="store_true", help="tiny counts for a smoke test")
    p.add_argument("--json", default=None, metavar="FILE", help="write all results as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.repeat = 0.3, 0.1, 1
        args.concurrency = ",".join(args.concurrency.split(",")[:2])
    target = parse_target(args.target)
    if args.echo is not None:
        tpl = echo_template(args.echo)
        inputs: dict[str, np.ndarray[Any, Any]] = {}
    else:
        if args.input_npy:
            inputs = {}
            for spec in args.input_npy:
                name, _, path = spec.partition("=")
                inputs[name] = np.load(path)
        else:
            inputs = example_inputs(target, args.model, args.batch, token=args.token)
        tpl = infer_template(args.model, inputs, signature=args.signature)
    floor: list[dict[str, Any]] = []
    child = None
    if args.inproc_model:
        import tempfile

        import inproc

        if len(inputs) != 1:
            raise SystemExit("--inproc-model needs a model with exactly one input")
        tmpdir = tempfile.TemporaryDirectory(prefix="rsbench-loadgen-")
        npy = os.path.join(tmpdir.name, "x.npy")
        np.save(npy, next(iter(inputs.values())))
        cpus = frozenset(_ints(args.inproc_pin)) if args.inproc_pin else None
        child = inproc.FloorChild(
            {"m": args.inproc_model},
            cpus=cpus,
            intra=args.intra,
            inter=args.inter,
            log_dir=tmpdir.name,
        )
    rows: list[LoadResult] = []
    results: dict[tuple[str, float], list[LoadResult]] = {}
    rates = _floats(args.rate)
    try:
        for _ in range(args.repeat):
            if child is not None:
                n = 200 if args.quick else 2000
                floor.append(child.time("m", npy, n=n, warmup=min(200, n)))
            if rates:
                for r in rates:
                    res = open_loop(
                        target,
                        tpl,
                        rate=r,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        connections=args.connections or 1,
                        poisson=args.poisson,
                        max_inflight=args.max_inflight,
                        token=args.token,
                    )
                    results.setdefault(("open", r), []).append(res)
                    rows.append(res)
            else:
                for c in _ints(args.concurrency):
                    res = closed_loop(
                        target,
                        tpl,
                        concurrency=c,
                        connections=args.connections or c,
                        duration_s=None if args.requests else args.duration,
                        count=args.requests,
                        warmup_s=args.warmup,
                        token=args.token,
                    )
                    results.setdefault(("closed", c), []).append(res)
                    rows.append(res)
    finally:
        if child is not None:
            child.close()
            tmpdir.cleanup()
    ref = B.median_dicts(floor) if floor else None
    print(render(results, ref, args, tpl.size))
    B.write_json(
        args.json,
        {
            "machine": B.machine_info(),
            "command": B.command_line(),
            "loop": loop_name(),
            "request_bytes": tpl.size,
            "inproc_floor": floor,
            "runs": [r.row() for r in rows],
        },
    )
    return 0 if rows and all(r.requests > 0 for r in rows) else 1


def render(
    results: dict[tuple[str, float], list[LoadResult]],
    ref: dict[str, Any] | None,
    args: argparse.Namespace,
    req_bytes: int,
) -> str:
    out = [
        f"loadgen: {args.target}, {'echo ' + str(args.echo) + ' B' if args.echo else args.model}"
        f", request frame {req_bytes} B, {loop_name()}, median of {args.repeat}",
        "",
    ]
    if ref:
        out.append(
            f"in-process TF call on the same input: p50 {ref['p50_us']:.1f} us, "
            f"p99 {ref['p99_us']:.1f} us, {ref['calls_per_s']:.0f} calls/s"
        )
        out.append("")
    hdr = ["mode", "transport", "conc", "conns", "rate", "p50 us", "p90 us", "p99 us", "req/s"]
    hdr += ["errors", "lost", "client cpu %", "send lag p99 us"]
    if ref:
        hdr += ["p50 - inproc us", "p50 / inproc", "req/s / inproc"]
    rows = []
    for (mode, key), rs in results.items():
        m = B.median_dicts([r.row() for r in rs])
        errs = sum(sum(r.errors.values()) for r in rs)
        row = [
            mode,
            rs[0].transport,
            fmt_int(m["concurrency"]),
            rs[0].connections,
            fmt_int(key) if mode == "open" else "-",
            B.fmt(m["p50_us"]),
            B.fmt(m["p90_us"]),
            B.fmt(m["p99_us"]),
            B.fmt(m["rps"], 0),
            errs,
            sum(r.lost for r in rs),
            B.fmt(m["client_cpu_pct"], 0),
            B.fmt(m["send_lag_p99_us"]) if mode == "open" else "-",
        ]
        if ref:
            row += [
                B.fmt(m["p50_us"] - ref["p50_us"]),
                B.fmt(m["p50_us"] / ref["p50_us"], 2),
                B.fmt(m["rps"] / ref["calls_per_s"], 2),
            ]
        rows.append(row)
    out.append(B.md_table(hdr, rows))
    return "\n".join(out)


def fmt_int(x: Any) -> str:
    try:
        return str(int(x))
    except (TypeError, ValueError):
        return "-"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, OSError, RuntimeError) as exc:
        sys.stderr.write(f"loadgen: {type(exc).__name__}: {exc}\n")
        sys.exit(2)
