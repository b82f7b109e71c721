"""Two-process stress test of a ring in real POSIX shared memory, with eventfd wake-ups.

The parent creates the segment (ringserve.ipc.shm.create: the name is unlinked at once,
only the fd lives on) and produces; a child started with the fd (pass_fds) attaches and
consumes. Each record carries a sequence number and a crc32 of its bytes; the child
checks order, loss, duplicates and checksums and prints a JSON summary.

Wake-ups go both ways. Data: the consumer sleeps in a wake.Waiter on the ring; the
producer either always signals its eventfd or rings wake.ring_doorbell (eventfd only
while the consumer's `sleeping` word is set). Space: when the ring is full the producer
sleeps in a Waiter of its own, whose `sleeping` word lives in a spare page after the
ring, and the consumer rings that doorbell after each release. Every wait has a
timeout; a wait that runs into its timeout is counted as a stall (a lost wake-up) and
fails the test.
"""

from __future__ import annotations

import json
import os
import random
import select
import struct
import subprocess
import sys
import time
import zlib
from typing import Any

import pytest

from ringserve.ipc import layout as L
from ringserve.ipc import shm, wake
from ringserve.ipc.ring import Ring

CAP = 64 * 1024
BACK = L.segment_size(CAP)  # a spare page after the ring: the producer's "sleeping" word
SEG = BACK + 4096
REC = struct.Struct("<QI")  # sequence number, crc32(seq bytes + body)
WAIT_S = 5.0  # one wait; reaching it means a lost wake-up (or a badly stalled machine)
IDLE_S = 60.0  # no progress at all for this long: give up

CHILD = r"""
import json, struct, sys, time, zlib
from ringserve.ipc import layout as L, shm, wake
from ringserve.ipc.ring import Ring

fd, size, back_at, data_efd, space_efd = map(int, sys.argv[1:6])
mode, spin_us = sys.argv[6], int(sys.argv[9])
wait_s, idle_s = float(sys.argv[7]), float(sys.argv[8])
REC = struct.Struct("<QI")
seg = shm.attach(fd, size)
ring = Ring(seg.map)
back = memoryview(seg.map)[back_at : back_at + 8 * L.HEADER_WORDS].cast("Q")
waiter = wake.Waiter(data_efd, ring.readable, ring.words, max_spin_us=spin_us)
if mode == "doorbell":
    notify = lambda: wake.ring_doorbell(back, space_efd)
else:
    notify = lambda: wake.signal(space_efd)
wake.signal(space_efd)  # attached: the producer may start

expect, count, nbytes, digest, last_ring_seq = 0, 0, 0, 0, 0
errors, stalls, pad_only, stopped = [], 0, 0, False
last_progress = time.monotonic()

def error(msg):
    if len(errors) < 20:
        errors.append(msg)

while not stopped and len(errors) < 20:
    t0 = time.monotonic()
    ok = waiter.wait(wait_s)
    if time.monotonic() - t0 >= wait_s:
        stalls += 1
        error(f"a wait ran into its {wait_s} s timeout after seq {expect - 1}: lost wake-up?")
        break
    if not ok:
        if time.monotonic() - last_progress > idle_s:
            error(f"no record for {idle_s} s after seq {expect - 1}")
            break
        continue
    rec = ring.peek()
    if rec is None:  # only padding was published: the tail moved all the same
        pad_only += 1
        notify()
        continue
    last_progress = time.monotonic()
    if rec.seq <= last_ring_seq:
        error(f"ring seq {rec.seq} after {last_ring_seq}")
    last_ring_seq = rec.seq
    p = rec.payload
    if rec.kind == L.KIND_STOP:
        stopped = True
    elif rec.kind != L.KIND_TEST or len(p) < REC.size:
        error(f"record {rec.seq}: kind {rec.kind}, {len(p)} bytes")
    else:
        seq, crc = REC.unpack_from(p, 0)
        body = p[REC.size :]
        if zlib.crc32(body, zlib.crc32(p[:8])) != crc:
            error(f"record {seq}: checksum mismatch ({len(body)} bytes)")
        if seq < expect:
            error(f"duplicate or reordered record {seq}, expected {expect}")
        elif seq > expect:
            error(f"lost records {expect}..{seq - 1}")
        expect = max(expect, seq + 1)
        count += 1
        nbytes += len(body)
        digest = zlib.crc32(REC.pack(seq, crc), digest)
        body.release()
    p.release()
    ring.release()
    notify()

print(json.dumps({
    "count": count, "bytes": nbytes, "digest": digest, "errors": errors,
    "stopped": stopped, "stalls": stalls, "pad_only_peeks": pad_only,
    "sleeps": waiter.sleeps, "spins": waiter.spins_hit,
}), flush=True)
back.release()
ring.close()
seg.close()
sys.exit(0 if stopped and not errors else 1)
"""


def ringserve_shm() -> set[str]:
    return {e for e in os.listdir(shm.SHM_DIR) if e.startswith(shm.PREFIX)}


def sizes(rng: random.Random, max_body: int) -> int:
    r = rng.random()
    if r < 0.6:
        return rng.randrange(0, 256)
    if r < 0.95:
        return rng.randrange(256, 4096)
    if r < 0.995:
        return rng.randrange(4096, 32768)
    return rng.randrange(0, max_body + 1)  # up to max_payload: wraps need padding


def run_stress(n: int, seed: int, mode: str, spin_us: int) -> dict[str, Any]:
    before = ringserve_shm()
    instance = f"stress{os.getpid()}"
    seg = shm.create(instance, "ring", SEG)
    assert not any(instance in e for e in ringserve_shm()), "the name outlived create()"
    ring = Ring(seg.map, create=True, capacity=CAP)
    words = ring.words
    back = memoryview(seg.map)[BACK : BACK + 8 * L.HEADER_WORDS].cast("Q")
    data_efd, space_efd = wake.new_eventfd(), wake.new_eventfd()
    tail_seen = [0]
    space = wake.Waiter(space_efd, lambda: words[L.W_TAIL] != tail_seen[0], back, spin_us)
    proc: subprocess.Popen[str] | None = None
    stats = {"full": 0, "stalls": 0}
    try:
        args = [seg.fd, SEG, BACK, data_efd, space_efd, mode, WAIT_S, IDLE_S, spin_us]
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *map(str, args)],
            pass_fds=(seg.fd, data_efd, space_efd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

        def wait_space(what: str) -> None:
            deadline = time.monotonic() + IDLE_S
            while True:
                t0 = time.monotonic()
                ok = space.wait(WAIT_S)
                if time.monotonic() - t0 >= WAIT_S:
                    stats["stalls"] += 1
                if ok and not stats["stalls"]:
                    return
                if stats["stalls"] or proc.poll() is not None or time.monotonic() > deadline:
                    if proc.poll() is None:
                        proc.kill()
                    out, err = proc.communicate(timeout=30)
                    raise AssertionError(
                        f"{what}: consumer gone or stuck, or a lost wake-up "
                        f"(stats {stats})\n{out}\n{err}"
                    )

        # The child signals once attached; only then do wait times mean anything.
        poll_deadline = time.monotonic() + IDLE_S
        while not wake.drain(space_efd):
            assert proc.poll() is None, proc.communicate(timeout=30)
            assert time.monotonic() < poll_deadline, "child did not start"
            select.select([space_efd], [], [], 1.0)

        rng = random.Random(seed)
        pool = memoryview(rng.randbytes(1 << 17))
        max_body = ring.max_payload - REC.size
        digest = 0
        nbytes = 0
        doorbell = (
            (lambda: wake.ring_doorbell(words, data_efd))
            if mode == "doorbell"
            else (lambda: wake.signal(data_efd))
        )
        for seq in range(n):
            size = sizes(rng, max_body)
            off = rng.randrange(0, len(pool) - size + 1)
            body = pool[off : off + size]
            while True:
                tail_seen[0] = words[L.W_TAIL]
                view = ring.try_reserve(REC.size + size)
                if view is not None:
                    break
                stats["full"] += 1
                doorbell()  # padding may have been published: the consumer must pass it
                wait_space(f"record {seq}")
            seq_bytes = struct.pack("<Q", seq)
            crc = zlib.crc32(body, zlib.crc32(seq_bytes))
            REC.pack_into(view, 0, seq, crc)
            view[REC.size :] = body
            view.release()
            ring.commit(L.KIND_TEST)
            doorbell()
            digest = zlib.crc32(REC.pack(seq, crc), digest)
            nbytes += size
        while True:
            tail_seen[0] = words[L.W_TAIL]
            stop = ring.try_reserve(0)
            if stop is not None:
                break
            doorbell()
            wait_space("stop record")
        stop.release()
        ring.commit(L.KIND_STOP)
        doorbell()
        out, err = proc.communicate(timeout=IDLE_S)
        assert proc.returncode == 0, f"consumer failed ({proc.returncode})\n{out}\n{err}"
        summary: dict[str, Any] = json.loads(out)
        summary["producer"] = {
            "digest": digest,
            "bytes": nbytes,
            "full": stats["full"],
            "stalls": stats["stalls"],
            "sleeps": space.sleeps,
        }
        return summary
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.communicate(timeout=30)  # reaped, pipes closed
        back.release()
        ring.close()
        seg.close()
        os.close(data_efd)
        os.close(space_efd)
        assert ringserve_shm() <= before, f"left in /dev/shm: {ringserve_shm() - before}"


def check(summary: dict[str, Any], n: int) -> None:
    prod = summary["producer"]
    assert summary["errors"] == []
    assert summary["stopped"]
    assert summary["count"] == n
    assert summary["bytes"] == prod["bytes"]
    assert summary["digest"] == prod["digest"]
    assert summary["stalls"] == 0 and prod["stalls"] == 0, f"lost wake-ups: {summary}"
    assert prod["full"] > 0, "the ring never filled: the test exercised no back-pressure"


# (wake-up mode, spin budget): with no spin every wait goes through the sleeping word
# and the eventfd, which is where a lost wake-up would show.
MODES = [("doorbell", 300), ("doorbell", 0), ("always", 0)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode, spin_us", MODES)
def test_two_process_stress(mode: str, spin_us: int) -> None:
    n = 200_000
    summary = run_stress(n, seed=12345 + spin_us, mode=mode, spin_us=spin_us)
    print(json.dumps(summary))
    check(summary, n)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode, spin_us", MODES)
def test_two_process_stress_1m(mode: str, spin_us: int) -> None:
    n = 1_000_000
    summary = run_stress(n, seed=987654321 + spin_us, mode=mode, spin_us=spin_us)
    print(json.dumps(summary))
    check(summary, n)
