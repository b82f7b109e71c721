"""Rings and wake-ups at the speed of the machine: raw floors, the ring, sockets, the
server's own overhead and its CPU use, in one run.

Sections (all by default; choose with --only a,b,c,d,cpu):
  a  raw floors between two processes: posix_ipc semaphore, eventfd and shared-memory
     flag ping-pong (busy spin, and spin + sched_yield); the least a Python ring can do
     for a 64 B record (BareRing: the floor for any pure-Python ring); memcpy bandwidth in a process
     (numpy copy into an existing buffer, heap and shared memory) at 64 KiB, 1 MiB,
     16 MiB.
  b  ring round trip between two processes with ringserve's Ring + records (or raw
     reserve/commit/peek/release, --ring-api raw) and its wake-up scheme (eventfd signal
     + wake.Waiter adaptive spin): the producer writes a record, the consumer reads it
     and echoes a record of the same size on a second ring; 64 B, 64 KiB, 1 MiB, 16 MiB,
     and 64 B through the ring alone (no record layer); bandwidth at 16 MiB as a
     fraction of memcpy, small records as a multiple of the fastest wake-up of (a).
  c  a plain uvloop length-prefixed msgpack echo server (`ringserve.bench.echo`, a separate
     process placed like the worker): round trip over Unix and TCP at 64 B and 3 KiB,
     concurrency 1, driven by `ringserve bench`.
  d  end to end (perf/bench_e2e.py's pieces): served p50 at concurrency 1 minus the
     in-process TF p50, over Unix and TCP, against the echo round trip of the same
     transport measured in the same rounds: overhead - echo_rtt (target <= 50 us).
  cpu the server's CPU use: idle after start, under closed-loop load (concurrency 1 and
     8), idle after load; utime+stime from /proc/<pid>/stat of the server and its
     workers, as percent of one core, plus wake-ups (context switches) per second.

Every section runs under each --pin placement (none: unpinned; same: both sides on one
CPU; split: on two CPUs) and reports the CPUs each side was seen on. Times are also
given as a fraction of the in-process TF call (demo MLP, batch 1, same placement),
timed in a child process during the same run.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_e2e as E
import benchcli as C
import benchlib as B
import inproc
import numpy as np

from ringserve import bench as LG
from ringserve.bench.echo import EchoServer

HERE = Path(__file__).resolve()
STOP = 1 << 63
W_STOP, W_PING, W_PONG = 0, 8, 16  # u64 words on separate cache lines
KiB, MiB = 1024, 1024 * 1024
RING_SIZES = (64, 64 * KiB, MiB, 16 * MiB)
STREAM_SIZE = 16 * MiB
COPY_SIZES = (64 * KiB, MiB, 16 * MiB)
ECHO_SIZES = (64, 3 * KiB)
ECHO_FOR_MODEL = {"linear": 64, "demo": 3 * KiB}  # request sizes ~ 144 B and 3.2 KiB
BARE_HDR = struct.Struct("<QQQQ")  # seq, length, commit, reserved
BARE_SLOT = 128  # one 64 B record with its header, 64-aligned
BARE_CAP = 16 * KiB
BARE_SEGMENT = 4096 + 2 * BARE_CAP  # a page of words, then the two data areas
BARE_WORDS = ((24, 32), (40, 48))  # (head, tail) word of ring 0 and ring 1, own cache lines


# ---- shared memory ---------------------------------------------------------------------


def memfd_segment(size: int, name: str = "rsperf") -> tuple[int, mmap.mmap]:
    """An anonymous shared-memory file (no /dev/shm name to leak), mapped and populated."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd, map_fd(fd, size)


def map_fd(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)


def aligned(n: int, align: int = 4096) -> np.ndarray[Any, Any]:
    raw = np.empty(n + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    a = raw[off : off + n]
    a[:] = 1  # touch every page
    return a


# ---- the wake-up scheme, whichever version ringserve.ipc.wake is at ----------------------


def make_waiter(wake: Any, fd: int, ring: Any, max_spin_us: int) -> Any:
    """wake.Waiter for the consumer of `ring` (newer versions also take the ring's words,
    where the waiter announces that it sleeps)."""
    import inspect

    if "words" in inspect.signature(wake.Waiter).parameters:
        return wake.Waiter(fd, ring.readable, ring.words, max_spin_us=max_spin_us)
    return wake.Waiter(fd, ring.readable, max_spin_us=max_spin_us)


def make_doorbell(wake: Any, ring: Any, fd: int) -> Callable[[], None]:
    """What the producer calls after publishing on `ring`: ring_doorbell (eventfd only
    when the consumer sleeps) when ringserve has it, else an unconditional signal."""
    if hasattr(wake, "ring_doorbell"):
        words = ring.words
        return lambda: wake.ring_doorbell(words, fd)
    return lambda: wake.signal(fd)


def wake_scheme() -> str:
    from ringserve.ipc import wake

    return (
        "ring_doorbell (eventfd only if the peer sleeps) + Waiter"
        if hasattr(wake, "ring_doorbell")
        else "eventfd signal + Waiter"
    )


# ---- children --------------------------------------------------------------------------


class Child:
    """A helper process running this file with --child; reports JSON lines on stdout."""

    def __init__(
        self, role: str, spec: dict[str, Any], fds: tuple[int, ...] = (), stdin_pipe: bool = False
    ) -> None:
        self.role = role
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--child", role, "--spec", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            pass_fds=fds,
        )
        self.ready = self.read(60)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            self.kill()
            raise TimeoutError(f"child {self.role}: silent for {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child {self.role}: exited with {self.proc.wait()}")
        return json.loads(line)  # type: ignore[no-any-return]

    def finish(self, timeout: float = 10.0) -> dict[str, Any]:
        try:
            out = self.read(timeout)
        finally:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _child_start(spec: dict[str, Any]) -> None:
    B.die_with_parent()
    if spec.get("cpus") is not None:
        os.sched_setaffinity(0, spec["cpus"])


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def child_main(role: str, spec: dict[str, Any]) -> None:
    _child_start(spec)
    roles = {
        "sem": _child_sem,
        "efd": _child_efd,
        "spin": _child_spin,
        "bare": _child_bare,
        "ring": _child_ring,
        "sink": _child_sink,
    }
    roles[role](spec)


def _cpu_sampler() -> tuple[Counter[int], Callable[[], None]]:
    seen: Counter[int] = Counter()

    def sample() -> None:
        seen[B.sched_getcpu()] += 1

    return seen, sample


def _child_sem(spec: dict[str, Any]) -> None:
    import posix_ipc

    a = posix_ipc.Semaphore(spec["a"])
    b = posix_ipc.Semaphore(spec["b"])
    m = map_fd(spec["ctl"], 4096)
    w = memoryview(m).cast("Q")
    seen, sample = _cpu_sampler()
    _say({"t": "ready"})
    n = 0
    while True:
        a.acquire()
        if w[W_STOP]:
            break
        b.release()
        n += 1
        if n & 63 == 0:
            sample()
    _say({"n": n, "cpus": seen})


def _child_efd(spec: dict[str, Any]) -> None:
    a, b = spec["a"], spec["b"]
    m = map_fd(spec["ctl"], 4096)
    w = memoryview(m).cast("Q")
    seen, sample = _cpu_sampler()
    rd, wr = os.eventfd_read, os.eventfd_write
    _say({"t": "ready"})
    n = 0
    while True:
        rd(a)
        if w[W_STOP]:
            break
        wr(b, 1)
        n += 1
        if n & 63 == 0:
            sample()
    _say({"n": n, "cpus": seen})


def _child_spin(spec: dict[str, Any]) -> None:
    m = map_fd(spec["ctl"], 4096)
    w = memoryview(m).cast("Q")
    yield_ = os.sched_yield if spec["yield"] else None
    seen, sample = _cpu_sampler()
    _say({"t": "ready"})
    i = 0
    while True:
        i += 1
        if yield_ is None:
            while (v := w[W_PING]) != i:
                if v == STOP:
                    _say({"n": i - 1, "cpus": seen})
                    return
        else:
            while (v := w[W_PING]) != i:
                if v == STOP:
                    _say({"n": i - 1, "cpus": seen})
                    return
                yield_()
        w[W_PONG] = i
        if i & 63 == 0:
            sample()


class BareRing:
    """The least a Python ring can do per 64 B record, as a floor for the real one.

    Producer: check room against the tail, copy the payload, pack a header with a
    commit word, store head. Consumer: spin on head, unpack and check the header, copy
    the payload out, store tail. Fixed-size slots (no wrap logic, no variable sizes)
    and a busy spin (no sleeping, no yield) make it a lower bound, not a usable ring.
    """

    def __init__(self, m: mmap.mmap, which: int) -> None:
        self.w = memoryview(m).cast("Q")
        start = 4096 + which * BARE_CAP
        self.d = memoryview(m)[start : start + BARE_CAP]
        self.hi, self.ti = BARE_WORDS[which]

    def put(self, seq: int, payload: Any) -> None:
        w = self.w
        while seq - w[self.ti] > BARE_CAP // BARE_SLOT:
            pass
        pos = seq * BARE_SLOT % BARE_CAP
        n = len(payload)
        self.d[pos + 32 : pos + 32 + n] = payload
        BARE_HDR.pack_into(self.d, pos, seq, n, (seq * 0x9E3779B1 ^ n) & 0xFFFFFFFF, 0)
        w[self.hi] = seq

    def get(self, seq: int, out: memoryview) -> bool:
        """Copy record `seq` into `out`; False if the peer stopped instead."""
        w = self.w
        while (v := w[self.hi]) != seq:
            if v == STOP:
                return False
        pos = seq * BARE_SLOT % BARE_CAP
        s, n, c, _ = BARE_HDR.unpack_from(self.d, pos)
        if s != seq or c != (seq * 0x9E3779B1 ^ n) & 0xFFFFFFFF:
            raise RuntimeError(f"bare ring: bad header at {pos}")
        out[:n] = self.d[pos + 32 : pos + 32 + n]
        w[self.ti] = seq
        return True

    def close(self) -> None:
        self.d.release()
        self.w.release()


def _bare_segment() -> tuple[int, mmap.mmap]:
    return memfd_segment(BARE_SEGMENT, "rsperf-bare")


def _child_bare(spec: dict[str, Any]) -> None:
    m = map_fd(spec["ctl"], BARE_SEGMENT)
    req, resp = BareRing(m, 0), BareRing(m, 1)
    buf = memoryview(bytearray(64))
    seen, sample = _cpu_sampler()
    _say({"t": "ready"})
    i = 0
    while req.get(i + 1, buf):
        i += 1
        resp.put(i, buf)
        if i & 63 == 0:
            sample()
    req.close()
    resp.close()
    _say({"n": i, "cpus": seen})


def _child_ring(spec: dict[str, Any]) -> None:
    from ringserve.ipc import layout as L
    from ringserve.ipc import records, wake
    from ringserve.ipc.ring import Ring

    seg = spec["segment"]
    mreq, mresp = map_fd(spec["req_fd"], seg), map_fd(spec["resp_fd"], seg)
    req, resp = Ring(memoryview(mreq)), Ring(memoryview(mresp))
    req_efd, resp_efd = spec["req_efd"], spec["resp_efd"]
    waiter = make_waiter(wake, req_efd, req, spec["max_spin_us"])
    doorbell = make_doorbell(wake, resp, resp_efd)
    raw = spec["api"] == "raw"
    parent = os.getppid()
    seen, sample = _cpu_sampler()
    _say({"t": "ready"})
    n = 0
    while True:
        if not waiter.wait(5.0):
            if os.getppid() != parent:
                return
            continue
        rec = req.peek()
        if rec is None:
            continue
        if rec.kind == L.KIND_STOP:
            req.release()
            break
        size = len(rec.payload)
        if raw:
            while (view := resp.try_reserve(size)) is None:
                time.sleep(0.0001)
            view[:] = rec.payload
            view.release()
            resp.commit(L.KIND_RESPONSE)
        else:
            head, t = records.read(rec.payload)
            x = t["x"]
            spec_out = [("x", "uint8", [x.shape[0]], [x])]
            while records.write(resp, L.KIND_RESPONSE, head, spec_out) is None:
                time.sleep(0.0001)
            del t, x, spec_out
        del rec
        req.release()
        doorbell()
        n += 1
        if n & 15 == 0:
            sample()
    _say({"n": n, "cpus": seen, "spins_hit": waiter.spins_hit, "sleeps": waiter.sleeps})
    req.close()
    resp.close()


def _child_sink(spec: dict[str, Any]) -> None:
    """Consumer of a one-way stream: copy each record's tensor out of the ring into this
    process's own buffer (so the bytes really arrive), release, and time the steady
    state from the first measured record to the last."""
    from ringserve.ipc import layout as L
    from ringserve.ipc import records
    from ringserve.ipc.ring import Ring

    m = map_fd(spec["req_fd"], spec["segment"])
    ring = Ring(memoryview(m))
    waiter = make_waiter(_wake(), spec["req_efd"], ring, spec["max_spin_us"])
    dst = aligned(spec["size"])
    warm = spec["warm"]
    seen, sample = _cpu_sampler()
    _say({"t": "ready"})
    n = 0
    t0 = t1 = 0
    while True:
        if not waiter.wait(10.0):
            _say({"error": "no record within 10 s"})
            return
        rec = ring.peek()
        if rec is None:
            continue
        if rec.kind == L.KIND_STOP:
            ring.release()
            break
        _, t = records.read(rec.payload)
        np.copyto(dst, t["x"])
        del t, rec
        ring.release()
        n += 1
        if n == warm:
            t0 = time.perf_counter_ns()
        t1 = time.perf_counter_ns()
        sample()
    _say({"n": n, "measured": n - warm, "ns": t1 - t0, "cpus": seen, "check": int(dst[-1])})
    ring.close()


def _wake() -> Any:
    from ringserve.ipc import wake

    return wake


# ---- (a) raw floors --------------------------------------------------------------------


def _pingpong(
    n: int, budget_s: float, step: Callable[[], None], sample: Callable[[], None]
) -> np.ndarray[Any, Any]:
    lat = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    stop = clock() + int(budget_s * 1e9)
    i = 0
    while i < n:
        t0 = clock()
        step()
        t1 = clock()
        lat[i] = t1 - t0
        i += 1
        if i & 15 == 0:
            sample()
            if t1 > stop:
                break
    return lat[:i]


def raw_floor(kind: str, plan: B.PinPlan, n: int, budget_s: float) -> dict[str, Any]:
    """Round trip of one wake-up mechanism between this process and a child."""
    bare = kind == BARE_KIND
    ctl_fd, ctl = _bare_segment() if bare else memfd_segment(4096, "rsperf-ctl")
    w = memoryview(ctl).cast("Q")
    rings: list[BareRing] = []
    B.set_affinity(plan.client)
    spec: dict[str, Any] = {"ctl": ctl_fd, "cpus": sorted(plan.worker) if plan.worker else None}
    seen, sample = _cpu_sampler()
    fds: tuple[int, ...] = (ctl_fd,)
    sems: list[Any] = []
    efds: list[int] = []
    try:
        if kind == "posix_ipc semaphore":
            import posix_ipc

            base = f"/rsperf-{os.getpid()}-{time.monotonic_ns()}"
            sems = [posix_ipc.Semaphore(base + s, posix_ipc.O_CREX, initial_value=0) for s in "ab"]
            spec.update(a=sems[0].name, b=sems[1].name)
            child = Child("sem", spec, fds)
            for s in sems:
                s.unlink()
            a, b = sems

            def step() -> None:
                a.release()
                b.acquire()

        elif kind == "eventfd":
            efds = [os.eventfd(0, os.EFD_CLOEXEC), os.eventfd(0, os.EFD_CLOEXEC)]
            spec.update(a=efds[0], b=efds[1])
            child = Child("efd", spec, (*fds, *efds))
            ea, eb = efds
            rd, wr = os.eventfd_read, os.eventfd_write

            def step() -> None:
                wr(ea, 1)
                rd(eb)

        elif bare:
            child = Child("bare", spec, fds)
            rings = [BareRing(ctl, 0), BareRing(ctl, 1)]
            req, resp = rings
            src = memoryview(bytes(range(64)))
            dst = memoryview(bytearray(64))
            seqs = iter(range(1, 1 << 62))

            def step() -> None:
                i = next(seqs)
                req.put(i, src)
                resp.get(i, dst)

        else:
            spec["yield"] = kind.endswith("sched_yield")
            child = Child("spin", spec, fds)
            it = iter(range(1, 1 << 62))
            yield_ = os.sched_yield if spec["yield"] else None

            def step() -> None:
                i = next(it)
                w[W_PING] = i
                if yield_ is None:
                    while w[W_PONG] != i:
                        pass
                else:
                    while w[W_PONG] != i:
                        yield_()

        with B.watchdog(budget_s + 30, kind):
            for _ in range(min(200, n // 10)):
                step()
            lat = _pingpong(n, budget_s, step, sample)
            if kind in ("posix_ipc semaphore", "eventfd"):
                w[W_STOP] = 1
                if sems:
                    sems[0].release()
                else:
                    os.eventfd_write(efds[0], 1)
            elif bare:
                w[BARE_WORDS[0][0]] = STOP
            else:
                w[W_PING] = STOP
            info = child.finish()
    finally:
        for r in rings:
            r.close()
        for s in sems:
            s.close()
        for fd in efds:
            os.close(fd)
        w.release()
        ctl.close()
        os.close(ctl_fd)
        B.set_affinity(None)
    p = B.percentiles(lat / 1e3)
    return {
        "mechanism": kind,
        "pin": plan.mode,
        "n": len(lat),
        **{f"{k}_us": v for k, v in p.items()},
        "cpus_parent": dict(seen),
        "cpus_child": {int(k): v for k, v in info["cpus"].items()},
    }


BARE_KIND = "least Python ring, 64 B (BareRing: busy spin)"
RAW_KINDS = (
    "posix_ipc semaphore",
    "eventfd",
    "spin + sched_yield on a shared-memory flag",
    "busy spin on a shared-memory flag",
    BARE_KIND,
)
BUSY_KINDS = ("busy spin on a shared-memory flag", BARE_KIND)  # skipped on one CPU


def memcpy_bw(size: int, into_shm: bool, seconds: float) -> float:
    """GB/s of np.copyto(dst, src) with both buffers existing and touched, 4 KiB aligned."""
    src = aligned(size)
    src[:] = np.arange(size, dtype=np.uint64).astype(np.uint8)
    fd = -1
    m: mmap.mmap | None = None
    if into_shm:
        fd, m = memfd_segment(size + 4096, "rsperf-copy")
        dst = np.frombuffer(m, dtype=np.uint8, count=size)
    else:
        dst = aligned(size)
    np.copyto(dst, src)
    clock = time.perf_counter_ns
    n = 0
    t0 = clock()
    end = t0 + int(seconds * 1e9)
    while True:
        np.copyto(dst, src)
        n += 1
        if n >= 4 and clock() > end:
            break
    gbs = size * n / ((clock() - t0) / 1e9) / 1e9
    if m is not None:
        del dst
        m.close()
        os.close(fd)
    return gbs


# ---- (b) ring --------------------------------------------------------------------------


class RingPair:
    """Two rings (request, response) in memfd segments, a consumer child echoing records."""

    def __init__(self, capacity: int, api: str, max_spin_us: int, plan: B.PinPlan) -> None:
        from ringserve.ipc import layout as L
        from ringserve.ipc import wake
        from ringserve.ipc.ring import Ring

        self.L, self.wake = L, wake
        seg = L.segment_size(capacity)
        self.req_fd, self.mreq = memfd_segment(seg, "rsperf-req")
        self.resp_fd, self.mresp = memfd_segment(seg, "rsperf-resp")
        self.req = Ring(memoryview(self.mreq), create=True, capacity=capacity)
        self.resp = Ring(memoryview(self.mresp), create=True, capacity=capacity)
        self.req_efd, self.resp_efd = wake.new_eventfd(), wake.new_eventfd()
        self.waiter = make_waiter(wake, self.resp_efd, self.resp, max_spin_us)
        self.doorbell = make_doorbell(wake, self.req, self.req_efd)
        self.api = api
        self.spurious = 0
        spec = {
            "segment": seg,
            "req_fd": self.req_fd,
            "resp_fd": self.resp_fd,
            "req_efd": self.req_efd,
            "resp_efd": self.resp_efd,
            "max_spin_us": max_spin_us,
            "api": api,
            "cpus": sorted(plan.worker) if plan.worker else None,
        }
        self.child = Child("ring", spec, (self.req_fd, self.resp_fd, self.req_efd, self.resp_efd))

    def round_trip(self, src: np.ndarray[Any, Any], dst: np.ndarray[Any, Any], i: int) -> None:
        from ringserve.ipc import records

        L, req, resp = self.L, self.req, self.resp
        size = src.shape[0]
        if self.api == "raw":
            view = req.try_reserve(size)
            if view is None:
                raise RuntimeError("request ring full")
            view[:] = src.data
            view.release()
            req.commit(L.KIND_REQUEST)
        elif records.write(req, L.KIND_REQUEST, [i], [("x", "uint8", [size], [src])]) is None:
            raise RuntimeError("request ring full")
        self.doorbell()
        while True:
            if not self.waiter.wait(10.0):
                raise TimeoutError("no echo within 10 s")
            # readable() is true as soon as a wrap-around pad record is published, before
            # the record itself is committed: peek() then finds nothing yet.
            rec = resp.peek()
            if rec is not None:
                break
            self.spurious += 1
        if self.api == "raw":
            dst.data.cast("B")[:] = rec.payload
        else:
            _, t = records.read(rec.payload)
            np.copyto(dst, t["x"])
            del t
        del rec
        resp.release()

    def close(self) -> dict[str, Any]:
        try:
            if self.req.try_reserve(0) is not None:
                self.req.commit(self.L.KIND_STOP)
                self.wake.signal(self.req_efd)  # always: the consumer may be mid-spin
            info = self.child.finish()
        finally:
            self.child.kill()
            self.req.close()
            self.resp.close()
            self.mreq.close()
            self.mresp.close()
            for fd in (self.req_fd, self.resp_fd, self.req_efd, self.resp_efd):
                os.close(fd)
        return info


def ring_rtt(
    size: int, plan: B.PinPlan, n: int, budget_s: float, capacity: int, api: str, spin_us: int
) -> dict[str, Any]:
    B.set_affinity(plan.client)
    pair = RingPair(capacity, api, spin_us, plan)
    seen, sample = _cpu_sampler()
    try:
        src = aligned(size)
        src[:] = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
        dst = aligned(size)
        with B.watchdog(budget_s + 60, f"ring {size} B"):
            pair.round_trip(src, dst, 0)
            if not np.array_equal(src, dst):
                raise AssertionError("ring echo returned different bytes")
            for i in range(max(3, min(200, n // 10))):
                pair.round_trip(src, dst, i)
            hits0, sleeps0 = pair.waiter.spins_hit, pair.waiter.sleeps
            ctr = iter(range(1 << 62))
            lat = _pingpong(n, budget_s, lambda: pair.round_trip(src, dst, next(ctr)), sample)
            hits, sleeps = pair.waiter.spins_hit - hits0, pair.waiter.sleeps - sleeps0
            spurious = pair.spurious
    finally:
        info = pair.close()
        B.set_affinity(None)
    p = B.percentiles(lat / 1e3)
    return {
        "size": size,
        "pin": plan.mode,
        "api": api,
        "n": len(lat),
        **{f"{k}_us": v for k, v in p.items()},
        "gbs_payload": 2 * size / (p["p50"] / 1e6) / 1e9,
        "parent_spins_hit": hits,
        "parent_spurious_wakeups": spurious,
        "parent_sleeps": sleeps,
        "child_spins_hit": info.get("spins_hit"),
        "child_sleeps": info.get("sleeps"),
        "cpus_parent": dict(seen),
        "cpus_child": {int(k): v for k, v in info["cpus"].items()},
    }


def ring_stream(
    size: int, plan: B.PinPlan, n: int, capacity: int, max_spin_us: int
) -> dict[str, Any]:
    """One-way stream of `n` records of `size` bytes: the producer writes each into the
    ring as soon as there is room (records API), the consumer copies each out into its
    own buffer. Both copies run at once on their own CPUs when they have two, which is
    how a ring moves bulk data; the round trip above runs its three copies in series."""
    from ringserve.ipc import layout as L
    from ringserve.ipc import records
    from ringserve.ipc.ring import Ring

    wake = _wake()
    B.set_affinity(plan.client)
    seg = L.segment_size(capacity)
    fd, m = memfd_segment(seg, "rsperf-stream")
    ring = Ring(memoryview(m), create=True, capacity=capacity)
    efd = wake.new_eventfd()
    warm = 3
    spec = {
        "segment": seg,
        "req_fd": fd,
        "req_efd": efd,
        "max_spin_us": max_spin_us,
        "size": size,
        "warm": warm,
        "cpus": sorted(plan.worker) if plan.worker else None,
    }
    child = Child("sink", spec, (fd, efd))
    doorbell = make_doorbell(wake, ring, efd)
    src = aligned(size)
    src[:] = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    tensors = [("x", "uint8", [size], [src])]
    info: dict[str, Any] = {}
    try:
        with B.watchdog(120, f"stream {size} B"):
            for i in range(warm + n):
                while records.write(ring, L.KIND_REQUEST, [i], tensors) is None:
                    doorbell()  # a wrap pad may be all that is published
                    os.sched_yield()  # the ring is full: the consumer is copying
                doorbell()
            while ring.try_reserve(0) is None:
                os.sched_yield()
            ring.commit(L.KIND_STOP)
            wake.signal(efd)
            info = child.finish(60)
    finally:
        child.kill()
        ring.close()
        m.close()
        os.close(fd)
        os.close(efd)
        B.set_affinity(None)
    if "error" in info:
        raise RuntimeError(f"stream consumer: {info['error']}")
    if info.get("check") != int(src[-1]):
        raise AssertionError("stream consumer received different bytes")
    gbs = info["measured"] * size / (info["ns"] / 1e9) / 1e9
    return {
        "size": size,
        "pin": plan.mode,
        "records": info["measured"],
        "gbs": gbs,
        "cpus_child": {int(k): v for k, v in info["cpus"].items()},
    }


# ---- (c) echo --------------------------------------------------------------------------


class PinnedEcho(EchoServer):
    """`ringserve bench`'s plain echo, placed on `cpus` like the process it stands in for."""

    def __init__(self, cpus: frozenset[int] | None) -> None:
        super().__init__()
        if cpus is not None:
            B.set_affinity(cpus, self.pid)
        self.targets = {"unix": self.target("unix"), "tcp": self.target("tcp")}


def echo_rtt(
    target: LG.Target,
    size: int,
    duration: float,
    warmup: float,
    pin: str,
    server_pid: int | None = None,
) -> dict[str, Any]:
    watch = E.CpuWatch({server_pid: "server"}) if server_pid else None
    r = LG.closed_loop(
        target,
        LG.echo_template(size),
        concurrency=1,
        duration_s=duration,
        warmup_s=warmup,
        tick=watch,
        tick_interval_s=0.01,
    )
    row = r.row()
    row.update(payload=size, pin=pin)
    row["cpus_server"] = dict(watch.seen["server"]) if watch else {}
    return row


# ---- (d) + cpu -------------------------------------------------------------------------


def cpu_phase(
    served: E.Served, roles: dict[int, str], seconds: float, load: Callable[[], Any] | None
) -> dict[str, Any]:
    """CPU of the server's processes (and this one) over `seconds` idle, or during `load`."""
    pids = [*roles, os.getpid()]
    a = B.cpu_snapshot(pids)
    res = None
    if load is None:
        time.sleep(seconds)
    else:
        res = load()
    b = B.cpu_snapshot(pids)
    use = B.cpu_usage(a, b)
    out: dict[str, Any] = {"wall_s": (b.t_ns - a.t_ns) / 1e9, "procs": {}}
    for pid, u in use.items():
        role = roles.get(pid, "client")
        out["procs"][f"{role} ({pid})"] = u
    out["frontend_pct"] = use[served.pid]["cpu_pct"]
    out["workers_pct"] = sum(use[p]["cpu_pct"] for p, r in roles.items() if r != "frontend")
    out["client_pct"] = use[os.getpid()]["cpu_pct"]
    out["frontend_ctx_per_s"] = use[served.pid]["ctx_per_s"]
    out["workers_ctx_per_s"] = sum(use[p]["ctx_per_s"] for p, r in roles.items() if r != "frontend")
    if res is not None:
        out["rps"] = res.rps
        out["p50_us"] = res.p50_us
        out["completed"] = res.completed_total
        server = out["frontend_pct"] + out["workers_pct"]
        out["server_cpu_us_per_req"] = (
            server / 100 * out["wall_s"] / res.completed_total * 1e6 if res.completed_total else 0
        )
    return out


def section_d(
    args: argparse.Namespace,
    plan: B.PinPlan,
    models: dict[str, Path],
    inputs: dict[tuple[str, int], Path],
    child: inproc.FloorChild,
    tmp: str,
    out: dict[str, Any],
) -> None:
    knobs = E.ServerKnobs(1, args.intra, args.inter, args.server_toml, [])
    tpls = E.templates(list(models), inputs)
    echo = PinnedEcho(plan.frontend)
    served = E.Served(models, knobs, plan, tmp).start()
    code = None
    try:
        roles = {served.pid: "frontend", **served.worker_pids()}
        out["workers"].extend(served.stats().get("workers", []))
        targets = served.targets()
        do_cpu = "cpu" in args.only
        if do_cpu:
            time.sleep(args.idle_settle)
            ph = cpu_phase(served, roles, args.idle_seconds, None)
            out["cpu"].append({"pin": plan.mode, "phase": "idle after start", **ph})
        if "d" in args.only:
            for rnd in range(args.repeat):
                for m in models:
                    f = child.time(m, inputs[(m, 1)], n=args.floor_calls, warmup=200)
                    out["floor"].append({**f, "pin": plan.mode, "round": rnd})
                    g = child.time(
                        m, inputs[(m, 1)], n=max(20, args.floor_calls // 4), warmup=20, gap_us=1000
                    )
                    out["floor_idle"].append({**g, "pin": plan.mode, "round": rnd})
                    h = child.time(m, inputs[(m, 1)], n=args.floor_calls, warmup=200, path="worker")
                    for t in ("unix", "tcp"):
                        r = LG.closed_loop(
                            targets[t],
                            tpls[m],
                            concurrency=1,
                            duration_s=args.duration,
                            warmup_s=args.warmup,
                        )
                        e = echo_rtt(
                            echo.targets[t],
                            ECHO_FOR_MODEL[m],
                            args.duration,
                            args.warmup,
                            plan.mode,
                        )
                        out["e2e"].append(
                            {
                                "pin": plan.mode,
                                "round": rnd,
                                "model": m,
                                "transport": t,
                                "served": r.row(),
                                "echo": e,
                                "inproc": f,
                                "inproc_idle": g,
                                "inproc_worker": h,
                            }
                        )
                        _progress(
                            f"d {plan.mode} r{rnd} {m} {t}: served p50 {r.p50_us:.0f} us, "
                            f"inproc {f['p50_us']:.0f}, echo {e['p50_us']:.0f}"
                        )
        if do_cpu:
            for conc in (1, 8):

                def load(c: int = conc) -> LG.LoadResult:
                    return LG.closed_loop(
                        targets["unix"],
                        tpls["demo" if "demo" in tpls else next(iter(tpls))],
                        concurrency=c,
                        duration_s=args.load_seconds,
                        warmup_s=0.0,
                    )

                ph = cpu_phase(served, roles, args.load_seconds, load)
                out["cpu"].append({"pin": plan.mode, "phase": f"load c={conc} (unix)", **ph})
            time.sleep(args.idle_settle)
            ph = cpu_phase(served, roles, args.idle_seconds, None)
            out["cpu"].append({"pin": plan.mode, "phase": "idle after load", **ph})
    finally:
        code = served.stop()
        echo.close()
        B.set_affinity(None)
    out["server_exit_codes"].append(code)


def _progress(text: str) -> None:
    sys.stderr.write(f"  {text}\n")
    sys.stderr.flush()


# ---- the run ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": B.machine_info(),
        "command": B.command_line(),
        "date": B.now_utc(),
        "loop": LG.loop_name(),
        "wake_scheme": wake_scheme(),
        "raw": [],
        "memcpy": [],
        "ring": [],
        "stream": [],
        "echo": [],
        "e2e": [],
        "floor": [],
        "floor_idle": [],
        "cpu": [],
        "workers": [],
        "server_exit_codes": [],
        "args": {k: v for k, v in vars(args).items() if k not in ("child", "spec")},
    }
    pins = B.parse_pins(args.pin)
    with tempfile.TemporaryDirectory(prefix="rsbench-ipc-") as tmp:
        need_tf = not args.no_tf or "d" in args.only or "cpu" in args.only
        models: dict[str, Path] = {}
        inputs: dict[tuple[str, int], Path] = {}
        if need_tf:
            paths = inproc.build_models(tmp)
            models = {m: paths[m] for m in args.models.split(",") if m}
            inputs = inproc.make_inputs(Path(tmp), [1])
        if "a" in args.only:
            for size in COPY_SIZES:
                for rep in range(args.repeat):
                    for shm in (False, True):
                        gbs = memcpy_bw(size, shm, args.copy_seconds)
                        out["memcpy"].append({"size": size, "shm": shm, "rep": rep, "gbs": gbs})
        for pin in pins:
            plan = B.pin_plan(pin)
            child = None
            if need_tf:
                child = inproc.FloorChild(
                    models, cpus=plan.worker, intra=args.intra, inter=args.inter, log_dir=tmp
                )
            try:
                if child is not None and "d" not in args.only:
                    for rnd in range(args.repeat):
                        for m in models:
                            f = child.time(m, inputs[(m, 1)], n=args.floor_calls, warmup=200)
                            out["floor"].append({**f, "pin": pin, "round": rnd})
                for rnd in range(args.repeat):
                    if "a" in args.only:
                        for kind in RAW_KINDS:
                            if kind in BUSY_KINDS and pin == "same" and not args.spin_same:
                                continue  # both sides spin on one CPU: a time slice per trip
                            r = raw_floor(kind, plan, args.raw_n, args.budget)
                            r["round"] = rnd
                            out["raw"].append(r)
                            _progress(f"a {pin} r{rnd} {kind}: p50 {r['p50_us']:.1f} us")
                    if "b" in args.only:
                        for size in RING_SIZES:
                            n = max(30, int(args.ring_n * min(1.0, 64 * KiB / size)))
                            r = ring_rtt(
                                size,
                                plan,
                                n,
                                args.budget,
                                args.ring_bytes,
                                args.ring_api,
                                args.max_spin_us,
                            )
                            r["round"] = rnd
                            out["ring"].append(r)
                            _progress(f"b {pin} r{rnd} ring {size} B: p50 {r['p50_us']:.1f} us")
                        if args.ring_api != "raw":
                            # The ring alone, without the record layer, in the same round.
                            r = ring_rtt(
                                64,
                                plan,
                                args.ring_n,
                                args.budget,
                                args.ring_bytes,
                                "raw",
                                args.max_spin_us,
                            )
                            r["round"] = rnd
                            out["ring"].append(r)
                            _progress(f"b {pin} r{rnd} ring only 64 B: p50 {r['p50_us']:.1f} us")
                        st = ring_stream(
                            STREAM_SIZE, plan, args.stream_n, args.ring_bytes, args.max_spin_us
                        )
                        st["round"] = rnd
                        out["stream"].append(st)
                        _progress(
                            f"b {pin} r{rnd} stream {_size(STREAM_SIZE)}: {st['gbs']:.2f} GB/s"
                        )
                if "c" in args.only:
                    echo = PinnedEcho(plan.worker)
                    B.set_affinity(plan.client)
                    try:
                        for rnd in range(args.repeat):
                            for t in ("unix", "tcp"):
                                for size in ECHO_SIZES:
                                    e = echo_rtt(
                                        echo.targets[t],
                                        size,
                                        args.duration,
                                        args.warmup,
                                        pin,
                                        echo.pid,
                                    )
                                    e["round"] = rnd
                                    out["echo"].append(e)
                                    _progress(
                                        f"c {pin} r{rnd} echo {t} {size} B: "
                                        f"p50 {e['p50_us']:.1f} us"
                                    )
                    finally:
                        echo.close()
                        B.set_affinity(None)
                if "d" in args.only or "cpu" in args.only:
                    assert child is not None
                    section_d(args, plan, models, inputs, child, tmp, out)
            finally:
                if child is not None:
                    out.setdefault("floor_child", {})[pin] = child.info
                    child.close()
    return out


# ---- tables ----------------------------------------------------------------------------


def tf_ref(res: dict[str, Any], pin: str, model: str = "demo") -> float:
    return B.median(f["p50_us"] for f in res["floor"] if f["pin"] == pin and f["model"] == model)


def spin_floor(res: dict[str, Any], pin: str) -> float:
    """The fastest wake-up round trip of (a) at `pin`: a shared-flag spin on two CPUs;
    on one CPU, where a spinning peer holds the CPU, whatever was fastest there."""
    meds = [
        B.median(r["p50_us"] for r in rs)
        for (kind, p), rs in _group(res["raw"], "mechanism", "pin").items()
        if p == pin and kind != BARE_KIND
    ]
    return min(meds) if meds else float("nan")


def _merge_cpus(rows: list[dict[str, Any]], key: str) -> str:
    c: Counter[int] = Counter()
    for r in rows:
        for k, v in r[key].items():
            c[int(k)] += v
    return B.cpu_hist(c)


def _group(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n // MiB} MiB"
    if n >= KiB:
        return f"{n // KiB} KiB"
    return f"{n} B"


def render(res: dict[str, Any]) -> str:
    a = res["args"]
    L = [
        f"bench_ipc: {res['date']}; {res['loop']}; pins {a['pin']}; median of "
        f"{a['repeat']} rounds; 'x TF' = value / in-process TF p50 of the demo MLP at batch 1 "
        "(same placement, same run)",
        "",
    ]
    if res["floor"]:
        rows = []
        for (pin, m), rs in _group(res["floor"], "pin", "model").items():
            med = B.median_dicts(rs)
            rows.append(
                [
                    pin,
                    m,
                    B.fmt(med["p50_us"]),
                    B.fmt(med["p99_us"]),
                    B.fmt(med["calls_per_s"], 0),
                    _merge_cpus(rs, "cpus"),
                ]
            )
        L += [
            "In-process TF call (`signatures['serving_default'](x=tf.constant(x))`, batch 1):",
            "",
            B.md_table(["pin", "model", "p50 us", "p99 us", "calls/s", "cpus"], rows),
            "",
        ]
    if res["raw"]:
        rows = []
        for (kind, pin), rs in _group(res["raw"], "mechanism", "pin").items():
            med = B.median_dicts(rs)
            rows.append(
                [
                    kind,
                    pin,
                    B.fmt(med["p50_us"], 2),
                    B.fmt(med["p50_us"] / spin_floor(res, pin), 1),
                    B.fmt(med["p90_us"], 2),
                    B.fmt(med["p99_us"], 2),
                    _merge_cpus(rs, "cpus_parent"),
                    _merge_cpus(rs, "cpus_child"),
                    B.fmt(med["p50_us"] / tf_ref(res, pin), 3),
                ]
            )
        L += [
            "(a) Waking another process, round trip (x floor = p50 / the fastest of these "
            "at the same placement, the least Python ring aside):",
            "",
            B.md_table(
                [
                    "mechanism",
                    "pin",
                    "p50 us",
                    "x floor",
                    "p90 us",
                    "p99 us",
                    "cpus parent",
                    "cpus child",
                    "p50 x TF",
                ],
                rows,
            ),
            "",
        ]
    if res["memcpy"]:
        rows = []
        for (size,), rs in _group(res["memcpy"], "size").items():
            heap = B.median(r["gbs"] for r in rs if not r["shm"])
            shm = B.median(r["gbs"] for r in rs if r["shm"])
            rows.append([_size(size), B.fmt(heap, 1), B.fmt(shm, 1)])
        L += [
            "(a) memcpy in one process (np.copyto into an existing buffer), GB/s:",
            "",
            B.md_table(["size", "heap -> heap", "heap -> shared memory"], rows),
            "",
        ]
    if res["ring"]:
        copy16 = (
            B.median(r["gbs"] for r in res["memcpy"] if r["size"] == 16 * MiB and not r["shm"])
            if res["memcpy"]
            else float("nan")
        )
        rows = []
        for (size, api, pin), rs in _group(res["ring"], "size", "api", "pin").items():
            med = B.median_dicts(rs)
            frac = med["gbs_payload"] / copy16 if size == 16 * MiB else float("nan")
            rows.append(
                [
                    _size(size) + (" (ring only)" if api != a["ring_api"] else ""),
                    pin,
                    B.fmt(med["p50_us"], 1),
                    B.fmt(med["p50_us"] / spin_floor(res, pin), 1) if size <= 64 else "-",
                    B.fmt(med["p90_us"], 1),
                    B.fmt(med["p99_us"], 1),
                    B.fmt(med["gbs_payload"], 2),
                    B.fmt(frac, 2),
                    f"{sum(r['parent_spins_hit'] for r in rs)}/"
                    f"{sum(r['parent_sleeps'] for r in rs)}",
                    f"{sum(r['child_spins_hit'] or 0 for r in rs)}/"
                    f"{sum(r['child_sleeps'] or 0 for r in rs)}",
                    _merge_cpus(rs, "cpus_parent"),
                    _merge_cpus(rs, "cpus_child"),
                    B.fmt(med["p50_us"] / tf_ref(res, pin), 3),
                ]
            )
        L += [
            f"(b) Ring round trip ({a['ring_api']} API, {_size(a['ring_bytes'])} rings, "
            f"{res.get('wake_scheme', '?')}, max_spin_us {a['max_spin_us']}); "
            "GB/s = 2 x size / p50; "
            "16 MiB fraction vs memcpy heap->heap at 16 MiB (3 copies per trip: ideal 0.67); "
            "x floor = p50 / the fastest wake-up round trip of (a) at the same placement "
            "(a shared-flag spin, except on one CPU); (ring only) = the ring without "
            "the record layer (msgpack head, tensor table):",
            "",
            B.md_table(
                [
                    "size",
                    "pin",
                    "p50 us",
                    "x floor",
                    "p90 us",
                    "p99 us",
                    "GB/s",
                    "x memcpy",
                    "parent spin hits/sleeps",
                    "child spin hits/sleeps",
                    "cpus parent",
                    "cpus child",
                    "p50 x TF",
                ],
                rows,
            ),
            "",
        ]
    if res.get("stream"):
        copy16 = (
            B.median(r["gbs"] for r in res["memcpy"] if r["size"] == 16 * MiB and not r["shm"])
            if res["memcpy"]
            else float("nan")
        )
        rows = []
        for (size, pin), rs in _group(res["stream"], "size", "pin").items():
            gbs = B.median(r["gbs"] for r in rs)
            rows.append(
                [
                    _size(size),
                    pin,
                    str(rs[0]["records"]),
                    B.fmt(gbs, 2),
                    B.fmt(gbs / copy16, 2),
                    _merge_cpus(rs, "cpus_child"),
                ]
            )
        L += [
            "(b) One-way stream through one ring (records API): the producer writes each "
            "record as soon as there is room, the consumer copies each out into its own "
            "buffer; GB/s = payload bytes / steady-state time; x memcpy = over memcpy "
            "heap->heap at 16 MiB (two copies per record, in parallel when the two sides "
            "have a CPU each):",
            "",
            B.md_table(
                ["size", "pin", "records", "GB/s", "x memcpy", "cpus consumer"],
                rows,
            ),
            "",
        ]
    if res["echo"]:
        rows = []
        for (t, size, pin), rs in _group(res["echo"], "transport", "payload", "pin").items():
            med = B.median_dicts(rs)
            rows.append(
                [
                    t,
                    _size(size),
                    pin,
                    B.fmt(med["p50_us"], 1),
                    B.fmt(med["p90_us"], 1),
                    B.fmt(med["p99_us"], 1),
                    B.fmt(med["rps"], 0),
                    _merge_cpus(rs, "client_cpus"),
                    _merge_cpus(rs, "cpus_server"),
                    B.fmt(med["p50_us"] / tf_ref(res, pin), 3),
                ]
            )
        L += [
            "(c) uvloop msgpack echo server, concurrency 1 (server: the second CPU when split):",
            "",
            B.md_table(
                [
                    "transport",
                    "payload",
                    "pin",
                    "p50 us",
                    "p90 us",
                    "p99 us",
                    "req/s",
                    "cpus client",
                    "cpus server",
                    "p50 x TF",
                ],
                rows,
            ),
            "",
        ]
    if res["e2e"]:
        rows = []
        for (m, t, pin), rs in _group(res["e2e"], "model", "transport", "pin").items():
            over = [r["served"]["p50_us"] - r["inproc"]["p50_us"] for r in rs]
            echo = [r["echo"]["p50_us"] for r in rs]
            net = [o - e for o, e in zip(over, echo, strict=True)]
            own = [r["served"]["p50_us"] - r["inproc_worker"]["p50_us"] for r in rs]
            n = B.median(net)
            rows.append(
                [
                    m,
                    t,
                    pin,
                    B.fmt(B.median(r["inproc"]["p50_us"] for r in rs)),
                    B.fmt(B.median(r["served"]["p50_us"] for r in rs)),
                    B.fmt(B.median(over)),
                    f"{B.fmt(B.median(echo))} ({_size(rs[0]['echo']['payload'])})",
                    B.fmt(n),
                    "yes" if n <= 50 else "no",
                    B.fmt(B.median(r["served"]["p50_us"] / r["inproc"]["p50_us"] for r in rs), 2),
                    B.fmt(B.median(r["inproc_idle"]["p50_us"] for r in rs)),
                    f"{B.fmt(B.median(r['inproc_worker']['p50_us'] for r in rs))} "
                    f"({rs[0]['inproc_worker'].get('call_path', '?')})",
                    B.fmt(B.median(own)),
                ]
            )
        L += [
            "(d) Served batch 1 at concurrency 1 vs the in-process call (per-round "
            "differences, medians):",
            "",
            B.md_table(
                [
                    "model",
                    "transport",
                    "pin",
                    "inproc p50 us",
                    "served p50 us",
                    "overhead us",
                    "echo_rtt us",
                    "overhead - echo_rtt us",
                    "<= 50 us",
                    "served / inproc",
                    "inproc p50 after 1 ms idle us",
                    "worker's call in process p50 us",
                    "served - worker's call us",
                ],
                rows,
            ),
            "",
            "The target compares with the public signature call (`inproc`), what a user "
            "runs in process. The worker makes the same call through the signature's flat "
            "form, verified against the public call at load (docs/architecture.md), which "
            "is faster; the last two columns time that call in the same child, so the "
            "serving path's own cost is `served - worker's call`.",
            "",
        ]
    if res["cpu"]:
        rows = []
        for c in res["cpu"]:
            rows.append(
                [
                    c["pin"],
                    c["phase"],
                    B.fmt(c.get("rps"), 0),
                    B.fmt(c["frontend_pct"], 1),
                    B.fmt(c["workers_pct"], 1),
                    B.fmt(c["client_pct"], 1),
                    B.fmt(c["frontend_pct"] + c["workers_pct"], 1),
                    B.fmt(c.get("server_cpu_us_per_req"), 0),
                    B.fmt(c["frontend_ctx_per_s"], 0),
                    B.fmt(c["workers_ctx_per_s"], 0),
                    B.fmt(c["wall_s"], 1),
                ]
            )
        L += [
            "Server CPU (utime+stime from /proc/<pid>/stat, percent of one core; workers "
            "summed; client = this process):",
            "",
            B.md_table(
                [
                    "pin",
                    "phase",
                    "req/s",
                    "frontend %",
                    "workers %",
                    "client %",
                    "server total %",
                    "server CPU us/req",
                    "frontend wake-ups/s",
                    "worker wake-ups/s",
                    "seconds",
                ],
                rows,
            ),
            "",
        ]
    if res["workers"]:
        ws = "; ".join(
            f"{w.get('model')} pid {w.get('pid')} affinity {w.get('cpu_affinity')}"
            for w in res["workers"]
        )
        L.append(f"Workers: {ws}. Server exit codes: {res['server_exit_codes']}.")
    return "\n".join(L).rstrip() + "\n"


# ---- CLI -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/bench_ipc.py",
        description="Raw IPC floors, the ringserve ring, socket echo, the server's overhead "
        "over the in-process TF call and its CPU use, in one run.",
    )
    p.add_argument("--only", default="a,b,c,d,cpu", help="sections (default a,b,c,d,cpu)")
    p.add_argument(
        "--pin",
        default=None,
        help="placements to run, comma list of none,same,split (default all three; --quick: none)",
    )
    p.add_argument("--repeat", type=int, default=3, help="rounds; medians (default 3)")
    p.add_argument("--raw-n", type=int, default=20000, help="(a) round trips per test")
    p.add_argument("--budget", type=float, default=2.0, help="(a,b) seconds at most per test")
    p.add_argument("--spin-same", action="store_true", help="(a) also busy-spin on one CPU")
    p.add_argument("--copy-seconds", type=float, default=0.2, help="(a) seconds per memcpy")
    p.add_argument("--ring-n", type=int, default=5000, help="(b) round trips at <= 64 KiB")
    p.add_argument("--ring-bytes", type=int, default=64 * MiB, help="(b) ring capacity")
    p.add_argument("--ring-api", default="records", choices=("records", "raw"))
    p.add_argument("--stream-n", type=int, default=40, help="(b) records per one-way stream")
    p.add_argument("--max-spin-us", type=int, default=1000, help="(b) Waiter max spin")
    p.add_argument("--duration", type=float, default=2.0, help="(c,d) seconds per point")
    p.add_argument("--warmup", type=float, default=0.3, help="(c,d) warm-up seconds")
    p.add_argument("--models", default="demo,linear", help="(d) models (default both)")
    p.add_argument("--floor-calls", type=int, default=2000, help="(d) TF calls per round")
    p.add_argument("--intra", type=int, default=1)
    p.add_argument("--inter", type=int, default=1)
    C.add_server_toml_arg(p)
    p.add_argument("--idle-seconds", type=float, default=10.0, help="(cpu) idle window")
    p.add_argument("--idle-settle", type=float, default=2.0, help="(cpu) wait before idle")
    p.add_argument("--load-seconds", type=float, default=5.0, help="(cpu) load window")
    p.add_argument("--no-tf", action="store_true", help="(a-c only) skip the TF reference")
    C.add_output_args(p)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        child_main(args.child, json.loads(args.spec))
        return 0
    args.only = [s for s in args.only.split(",") if s]
    C.apply_quick(
        args, raw_n=500, budget=0.5, ring_n=200, copy_seconds=0.05,
        idle_seconds=1.0, idle_settle=0.5, load_seconds=0.5,
    )  # fmt: skip
    if args.pin is None:
        args.pin = "none" if args.quick else "none,same,split"
    res = run(args)
    bad = any(c != 0 for c in res["server_exit_codes"])
    return C.finish(args, res, render(res), "bench_ipc", "IPC floors (perf/bench_ipc.py)", bad)


if __name__ == "__main__":
    sys.exit(main())
