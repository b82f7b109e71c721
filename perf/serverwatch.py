"""What the server did during one load point: `stats` deltas and /proc CPU use.

    with ServerWatch(served, "demo") as w:
        r = ringserve.bench.closed_loop(...)
    row.update(w.figures())

Figures (all over the time between the two `stats` reads, warm-up included):
  - worker_us_per_call: the workers' own time per ring record (one TF call: one request,
    or one batch when batching), from `busy_seconds` / `requests` of the `workers` list;
  - worker_busy_pct: busy seconds over wall seconds, summed over the model's workers
    (100 = one worker computing all the time);
  - frontend_cpu_pct, workers_cpu_pct: CPU time of the frontend process and of the
    workers alive throughout (schedstat, all threads; spinning counts), percent of one
    core;
  - workers_replaced: workers of the model in the first `stats` and not in the second
    (crashed, or killed as hung, and restarted): nonzero means the point is not valid;
  - batches, batched_rows, mean_batch, padding_rows, batch_hist: from the model's
    `batch_sizes` histogram and `padding_rows` (a batcher that gathers nothing shows a
    mean of 1.0); server_requests and server_errors from its counters.
"""

from __future__ import annotations

import os
import time
from typing import Any

import bench_e2e as E
import benchlib as B


def _model(s: dict[str, Any], model: str) -> dict[str, Any]:
    return s.get("models", {}).get(model, {})  # type: ignore[no-any-return]


def _busy(s: dict[str, Any], model: str) -> dict[int, float]:
    """{worker pid: busy seconds} of the model's workers."""
    return {
        int(w["pid"]): float(w.get("busy_seconds", 0))
        for w in s.get("workers", [])
        if w.get("model") == model
    }


def batch_delta(before: dict[str, Any], after: dict[str, Any], model: str) -> dict[str, Any]:
    """Batches the model formed between two `stats` replies, and its request counters."""
    a, b = _model(before, model), _model(after, model)
    ha, hb = a.get("batch_sizes", {}), b.get("batch_sizes", {})
    hist = {int(k): int(v) - int(ha.get(k, 0)) for k, v in hb.items()}
    hist = {k: v for k, v in sorted(hist.items()) if v}
    batches = sum(hist.values())
    rows = sum(k * v for k, v in hist.items())
    ea, eb = a.get("errors", {}), b.get("errors", {})
    errs = {k: int(v) - int(ea.get(k, 0)) for k, v in eb.items()}
    return {
        "batches": batches,
        "batched_rows": rows,
        "mean_batch": rows / batches if batches else float("nan"),
        "padding_rows": int(b.get("padding_rows", 0)) - int(a.get("padding_rows", 0)),
        "batch_hist": hist,
        "server_requests": int(b.get("requests", 0)) - int(a.get("requests", 0)),
        "server_errors": {k: v for k, v in errs.items() if v},
    }


class ServerWatch:
    def __init__(self, served: E.Served, model: str) -> None:
        self.served = served
        self.model = model
        self.pids = [served.pid, *served.worker_pids()]
        self.s0: dict[str, Any] = {}
        self.s1: dict[str, Any] = {}

    def __enter__(self) -> ServerWatch:
        self.snap0 = B.cpu_snapshot(self.pids)
        self.s0 = self.served.stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s1 = self.served.stats()
        self.t1 = time.perf_counter()
        self.snap1 = B.cpu_snapshot(self.pids)

    def figures(self) -> dict[str, Any]:
        # A worker that died during the point reads as 0 CPU seconds at the end: count
        # only processes alive throughout, and report the replaced workers instead.
        gone = [p for p in self.pids if not os.path.exists(f"/proc/{p}/stat")]
        use = {p: u for p, u in B.cpu_usage(self.snap0, self.snap1).items() if p not in gone}
        b0, b1 = _busy(self.s0, self.model), _busy(self.s1, self.model)
        front = self.served.pid
        wall = max(1e-9, self.t1 - self.t0)
        busy = sum(b1[p] - b0[p] for p in b0.keys() & b1.keys())
        return {
            "worker_us_per_call": E.worker_busy(self.s0, self.s1).get(self.model, float("nan")),
            "worker_busy_pct": 100 * busy / wall,
            "frontend_cpu_pct": use.get(front, {}).get("cpu_pct_sched", float("nan")),
            "workers_cpu_pct": sum(
                u.get("cpu_pct_sched", 0.0) for p, u in use.items() if p != front
            ),
            "workers_replaced": len(b0.keys() - b1.keys()),
            "wall_s": wall,
            **batch_delta(self.s0, self.s1, self.model),
        }
