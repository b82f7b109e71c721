"""The frontend's Python work per request under batching, without sockets or workers:
the real Dispatcher, batcher, request checks, ring records and reply building, driven
in one process so a change to the per-request path shows in microseconds, alone,
within a second (the end-to-end benchmarks need minutes and a quiet machine).

One cycle: N typed `infer` requests (the demo MLP's batch-1 shape, decoded by
ipc/requests.py) arrive while the worker is busy and queue; the worker frees up and
the batch is written into a real ring; a stand-in worker reads the record and writes a
response of N rows; the dispatcher polls it, splits it and builds the N replies (packed
by ipc/wire.py as a msgpack connection would queue them). Reported per request, best of
--repeat runs of --cycles cycles: decoding, accepting, sending the batch, completing.
Not included: socket reads and writes, framing, the event loop, the spin.

    python perf/dispatch_cost.py [--batch 11] [--cycles 1000] [--repeat 7]

It measures the ringserve its interpreter imports: from a wheel install the compiled
request path, with RINGSERVE_PURE_PYTHON=1 (or from an editable install) the sources.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from ringserve.frontend.dispatch import Dispatcher
from ringserve.frontend.links import WorkerLink
from ringserve.frontend.pending import Job
from ringserve.frontend.regions import Regions
from ringserve.frontend.registry import AVAILABLE, Registry
from ringserve.frontend.settings import FrontendSettings, ModelSettings
from ringserve.ipc import layout as L
from ringserve.ipc import records, wire
from ringserve.ipc.requests import decode_infer
from ringserve.ipc.ring import Ring

from idleloop import IdleLoop

RING_BYTES = 64 << 20


class _Conn:
    regions: Regions | None = None
    takes_frames = True  # as the msgpack connection: ok replies of a batch come packed

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def reply(self, msg: dict[str, Any], large: bool = False) -> None:
        self.out.append(wire.pack(msg))

    def send_frame(self, frame: bytes) -> None:
        self.out.append(frame)

    def request_done(self) -> None:
        pass


class Bench:
    def __init__(self, batch: int) -> None:
        self.batch = batch
        # A batch timeout no pause of this process reaches: past it, the requests
        # queued so far would leave as a record of their own and the cycle's count fail.
        reg = Registry((ModelSettings("demo", max_batch_size=32, batch_timeout_us=10**6),))
        self.v = v = reg.version_state("demo", 1)
        v.state = AVAILABLE
        v.signatures = {
            "serving_default": {
                "inputs": {"x": {"dtype": "float32", "shape": [-1, 784]}},
                "outputs": {"y": {"dtype": "float32", "shape": [-1, 10]}},
            }
        }
        self.d = d = Dispatcher(FrontendSettings(), reg, IdleLoop())  # type: ignore[arg-type]
        self._maps = [mmap.mmap(-1, L.segment_size(RING_BYTES)) for _ in range(2)]
        req, resp = (Ring(m, create=True, capacity=RING_BYTES) for m in self._maps)
        self.req_worker, self.resp_worker = Ring(self._maps[0]), Ring(self._maps[1])
        self._efds = [os.eventfd(0), os.eventfd(0)]
        self.link = link = WorkerLink(
            "w", "demo", 1, req, resp, self._efds[0], self._efds[1], d.on_response
        )
        d.add_link(link)
        link.ready = True
        v.links.append(link)
        # A record that never completes: the worker stays busy, so arrivals queue.
        link.inflight[-1] = Job(1, [], batched=True, pad=1)
        self.conn = _Conn()
        x = np.random.default_rng(0).random((1, 784), dtype=np.float32).tobytes()
        tensor = {"dtype": "float32", "shape": [1, 784], "data": x}
        self.bodies = [
            wire.pack({"id": i, "op": "infer", "model": "demo", "inputs": {"x": tensor}})[4:]
            for i in range(batch)
        ]
        self.y = np.zeros((batch, 10), dtype=np.float32)

    def close(self) -> None:
        for fd in self._efds:
            os.close(fd)

    def _worker(self) -> None:
        rec = self.req_worker.peek()
        assert rec is not None
        head, _ = records.read(rec.payload)
        self.req_worker.release()
        out = [("y", "float32", self.y.shape, [self.y])]
        records.write(self.resp_worker, L.KIND_RESPONSE, [head[0], "", "", 1, 0, 0, 0], out)

    def cycle(self, acc: list[int]) -> None:
        d, link, clock = self.d, self.link, time.perf_counter_ns
        t0 = clock()
        reqs = [decode_infer(memoryview(b), owned=True) for b in self.bodies]
        t1 = clock()
        link.busy_until = time.perf_counter() + 1.0
        for r in reqs:
            assert r is not None
            d.infer(self.conn, r.id, r)
        t2 = clock()
        link.busy_until = 0.0
        d._pump(self.v)
        t3 = clock()
        self._worker()
        t4 = clock()
        poller: Any = getattr(d, "poller", d)  # (Dispatcher._poll before polling.py)
        poller._poll(link)
        t5 = clock()
        if len(self.conn.out) != self.batch:
            raise RuntimeError(f"{len(self.conn.out)} replies for {self.batch} requests")
        self.conn.out.clear()
        for i, dt in enumerate((t1 - t0, t2 - t1, t3 - t2, t5 - t4)):
            acc[i] += dt


PHASES = ("decode", "accept", "send batch", "complete + replies")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python perf/dispatch_cost.py", description=__doc__)
    ap.add_argument("--batch", type=int, default=11, help="requests a batch (default 11)")
    ap.add_argument("--cycles", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    b = Bench(a.batch)
    try:
        warm = [0, 0, 0, 0]
        for _ in range(300):
            b.cycle(warm)
        best: list[float] | None = None
        for _ in range(a.repeat):
            acc = [0, 0, 0, 0]
            for _ in range(a.cycles):
                b.cycle(acc)
            per = [x / a.cycles / a.batch / 1000 for x in acc]
            if best is None or sum(per) < sum(best):
                best = per
    finally:
        b.close()
    assert best is not None
    parts = ", ".join(f"{n} {us:.2f}" for n, us in zip(PHASES, best, strict=True))
    print(f"dispatch_cost: batch of {a.batch}, us a request: {parts}; total {sum(best):.2f}")


if __name__ == "__main__":
    main()
