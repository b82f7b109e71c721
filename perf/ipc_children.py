"""The helper processes of perf/bench_ipc.py, and what both sides share.

Each floor or ring benchmark runs its peer in a fresh interpreter of this file
(`Child`): a posix_ipc semaphore, eventfd or shared-memory flag ping-pong, the least
Python ring (`BareRing`), ringserve's own Ring, or a one-way sink. A child reports JSON
lines on stdout; the parent owns and closes every segment and descriptor it passes.

    python perf/ipc_children.py --child ROLE --spec JSON   (started by Child only)
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
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchlib as B
import numpy as np
from ipc_report import KiB

HERE = Path(__file__).resolve()
STOP = 1 << 63
W_STOP, W_PING, W_PONG = 0, 8, 16  # u64 words on separate cache lines
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


def cpu_sampler() -> tuple[Counter[int], Callable[[], None]]:
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
    seen, sample = cpu_sampler()
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
    seen, sample = cpu_sampler()
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
    seen, sample = cpu_sampler()
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


def bare_segment() -> tuple[int, mmap.mmap]:
    return memfd_segment(BARE_SEGMENT, "rsperf-bare")


def _child_bare(spec: dict[str, Any]) -> None:
    m = map_fd(spec["ctl"], BARE_SEGMENT)
    req, resp = BareRing(m, 0), BareRing(m, 1)
    buf = memoryview(bytearray(64))
    seen, sample = cpu_sampler()
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
    seen, sample = cpu_sampler()
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
    waiter = make_waiter(wake_module(), spec["req_efd"], ring, spec["max_spin_us"])
    dst = aligned(spec["size"])
    warm = spec["warm"]
    seen, sample = cpu_sampler()
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


def wake_module() -> Any:
    from ringserve.ipc import wake

    return wake


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python perf/ipc_children.py")
    p.add_argument("--child", required=True)
    p.add_argument("--spec", required=True)
    args = p.parse_args(argv)
    child_main(args.child, json.loads(args.spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
