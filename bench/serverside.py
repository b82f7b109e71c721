"""What the server did during a load point, read from its `stats` op.

Two pairs of readings: one before the warm-up and after the last reply (every request
the generator sent falls between them, so the server's request and error counts can
be compared with the generator's), and one at the start and end of the measured
window, read on the generator's loop while the load runs (rates and shares over
exactly the window).

Window figures:
  - compute_us: the workers' own time per ring record (one TensorFlow call: one
    request, or one batch), from `busy_seconds` / `requests` of `workers`;
  - rows_per_call: mean rows per TensorFlow call (from `batch_sizes` when batching);
  - queue_us: the mean time a request waited before a worker took it, from the
    server's `queue_duration` histograms (`models.<m>.versions.<v>`) when `stats`
    has them (`queue_source: "server"`); from a server without them, client mean
    latency - compute_us (queue, transport and frontend together) stands in
    (`queue_source: "derived"`);
  - per worker: cpu_pct (percent of one core), ctx_per_s (voluntary + involuntary
    context switches a second), busy_pct (computing); summed over workers as
    workers_cpu_pct and workers_ctx_per_s, and busy_pct averaged;
  - frontend_cpu_pct and frontend_ctx_per_s: the server process, from `stats`'
    `frontend` figures when it has them, else from /proc when the server runs on
    this host (absent otherwise).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from ringserve.client import AsyncClient

from .target import Target, call_ok

_TICK = os.sysconf("SC_CLK_TCK")


def _model(s: dict[str, Any], model: str) -> dict[str, Any]:
    return s.get("models", {}).get(model, {})  # type: ignore[no-any-return]


def _workers(s: dict[str, Any], model: str) -> dict[int, dict[str, Any]]:
    return {int(w["pid"]): w for w in s.get("workers", []) if w.get("model") == model}


def _local_proc(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, context switches) of a ringserve process on this host, else None."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"ringserve" not in f.read():
                return None
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK
        ctx = 0
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                        ctx += int(line.split()[1])
        return cpu, ctx
    except (OSError, ValueError, IndexError):
        return None


class ServerWatch:
    """A `Window` for the loops, plus the readings around the whole point."""

    def __init__(self, target: Target, model: str, token: str | None = None) -> None:
        self.target = target
        self.model = model
        self.token = token
        self.outer: list[dict[str, Any]] = []
        self.inner: list[tuple[float, dict[str, Any], tuple[float, int] | None]] = []
        self._client: AsyncClient | None = None

    # ---- around the point (blocking) ----------------------------------------------
    def before(self) -> None:
        self.outer = [call_ok(self.target, "stats", token=self.token)]
        self.inner = []

    def after(self) -> None:
        self.outer.append(call_ok(self.target, "stats", token=self.token))

    # ---- the window (on the generator's loop) -------------------------------------
    async def _read(self) -> None:
        if self._client is None:
            self._client = await AsyncClient(self.target.url, token=self.token).connect()
        s = await self._client.stats()
        self.inner.append((time.perf_counter(), s, _frontend(s)))

    async def begin(self) -> None:
        await self._read()

    async def end(self) -> None:
        try:
            await self._read()
        finally:
            if self._client is not None:
                await self._client.close()
                self._client = None

    # ---- figures ------------------------------------------------------------------
    def counts(self) -> dict[str, Any]:
        """The server's counts over the whole point (warm-up included)."""
        if len(self.outer) < 2:
            return {}
        a, b = _model(self.outer[0], self.model), _model(self.outer[1], self.model)
        ea, eb = a.get("errors", {}), b.get("errors", {})
        errs = {k: int(v) - int(ea.get(k, 0)) for k, v in eb.items()}
        return {
            "server_requests": int(b.get("requests", 0)) - int(a.get("requests", 0)),
            "server_success": int(b.get("success", 0)) - int(a.get("success", 0)),
            "server_errors": {k: v for k, v in sorted(errs.items()) if v},
        }

    def figures(self, client_mean_us: float = math.nan) -> dict[str, Any]:
        out = self.counts()
        if len(self.inner) < 2:
            return out
        (t0, s0, f0), (t1, s1, f1) = self.inner[0], self.inner[-1]
        wall = max(1e-9, t1 - t0)
        w0, w1 = _workers(s0, self.model), _workers(s1, self.model)
        both = sorted(w0.keys() & w1.keys())
        per: list[dict[str, Any]] = []
        calls = 0
        busy = 0.0
        for pid in both:
            a, b = w0[pid], w1[pid]
            d_busy = float(b.get("busy_seconds", 0)) - float(a.get("busy_seconds", 0))
            d_calls = int(b.get("requests", 0)) - int(a.get("requests", 0))
            vol = int(b.get("voluntary_ctx_switches", 0)) - int(a.get("voluntary_ctx_switches", 0))
            inv = int(b.get("involuntary_ctx_switches", 0)) - int(
                a.get("involuntary_ctx_switches", 0)
            )
            cpu = float(b.get("cpu_seconds", 0)) - float(a.get("cpu_seconds", 0))
            busy += d_busy
            calls += d_calls
            per.append(
                {
                    "pid": pid,
                    "index": b.get("index"),
                    "cpu_pct": 100 * cpu / wall,
                    "ctx_per_s": (vol + inv) / wall,
                    "voluntary_per_s": vol / wall,
                    "involuntary_per_s": inv / wall,
                    "busy_pct": 100 * d_busy / wall,
                    "calls": d_calls,
                }
            )
        m0, m1 = _model(s0, self.model), _model(s1, self.model)
        ha, hb = m0.get("batch_sizes", {}), m1.get("batch_sizes", {})
        hist = {int(k): int(v) - int(ha.get(k, 0)) for k, v in hb.items()}
        batches = sum(hist.values())
        compute_us = 1e6 * busy / calls if calls else math.nan
        out.update(
            {
                "window_s": wall,
                "compute_us": compute_us,
                "rows_per_call": (
                    sum(k * v for k, v in hist.items()) / batches if batches else 1.0
                ),
                "workers": per,
                "workers_cpu_pct": sum(w["cpu_pct"] for w in per),
                "workers_ctx_per_s": sum(w["ctx_per_s"] for w in per),
                "busy_pct": sum(w["busy_pct"] for w in per) / len(per) if per else math.nan,
                "workers_replaced": len(w0.keys() - w1.keys()),
            }
        )
        qs = _queue(m0, m1)
        if qs is not None:
            out.update(queue_us=qs, queue_source="server")
        else:
            out.update(queue_us=client_mean_us - compute_us, queue_source="derived")
        if f0 is not None and f1 is not None:
            out["frontend_cpu_pct"] = 100 * (f1[0] - f0[0]) / wall
            out["frontend_ctx_per_s"] = (f1[1] - f0[1]) / wall
        return out


def _frontend(s: dict[str, Any]) -> tuple[float, int] | None:
    """(CPU seconds, context switches) of the server process: its own `stats` figures,
    else /proc when it runs here."""
    f = s.get("frontend")
    if isinstance(f, dict) and "cpu_user_seconds" in f:
        try:
            cpu = float(f["cpu_user_seconds"]) + float(f.get("cpu_system_seconds", 0))
            ctx = int(f.get("voluntary_ctx_switches", 0)) + int(
                f.get("involuntary_ctx_switches", 0)
            )
            return cpu, ctx
        except (TypeError, ValueError):
            pass
    pid = s.get("server", {}).get("pid")
    return _local_proc(pid) if isinstance(pid, int) and pid > 0 else None


def _histogram_total(m: dict[str, Any], key: str) -> tuple[int, float] | None:
    """(count, sum) of a duration histogram over the model's versions, if reported."""
    versions = m.get("versions")
    if not isinstance(versions, dict):
        return None
    n, total, seen = 0, 0.0, False
    for v in versions.values():
        h = v.get(key) if isinstance(v, dict) else None
        if isinstance(h, dict) and "counts" in h and "sum" in h:
            n += sum(int(c) for c in h["counts"])
            total += float(h["sum"])
            seen = True
    return (n, total) if seen else None


def _queue(m0: dict[str, Any], m1: dict[str, Any]) -> float | None:
    """Mean queue wait (us) over the window when `stats` reports it, else None."""
    a, b = _histogram_total(m0, "queue_duration"), _histogram_total(m1, "queue_duration")
    if a is None or b is None:
        return None
    n = b[0] - a[0]
    return 1e6 * (b[1] - a[1]) / n if n > 0 else math.nan
