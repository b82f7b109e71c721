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

The peer processes and the segments they share are in perf/ipc_children.py, the
tables in perf/ipc_report.py (which re-renders a --json file).
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_e2e as E
import benchcli as C
import benchlib as B
import inproc
import numpy as np
from ipc_children import (
    BARE_WORDS,
    STOP,
    W_PING,
    W_PONG,
    W_STOP,
    BareRing,
    Child,
    aligned,
    bare_segment,
    cpu_sampler,
    make_doorbell,
    make_waiter,
    memfd_segment,
    wake_module,
    wake_scheme,
)
from ipc_report import BARE_KIND, KiB, MiB, render, size_text

from ringserve import bench as LG
from ringserve.bench.echo import EchoServer

RING_SIZES = (64, 64 * KiB, MiB, 16 * MiB)
STREAM_SIZE = 16 * MiB
COPY_SIZES = (64 * KiB, MiB, 16 * MiB)
ECHO_SIZES = (64, 3 * KiB)
ECHO_FOR_MODEL = {"linear": 64, "demo": 3 * KiB}  # request sizes ~ 144 B and 3.2 KiB


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
    ctl_fd, ctl = bare_segment() if bare else memfd_segment(4096, "rsperf-ctl")
    w = memoryview(ctl).cast("Q")
    rings: list[BareRing] = []
    B.set_affinity(plan.client)
    spec: dict[str, Any] = {"ctl": ctl_fd, "cpus": sorted(plan.worker) if plan.worker else None}
    seen, sample = cpu_sampler()
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
    seen, sample = cpu_sampler()
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

    wake = wake_module()
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
                            f"b {pin} r{rnd} stream {size_text(STREAM_SIZE)}: {st['gbs']:.2f} GB/s"
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
