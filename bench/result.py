"""The figures of one load point, as the generator saw them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


def percentiles(samples: Sequence[float] | np.ndarray[Any, Any]) -> dict[str, float]:
    """p50/p90/p99/mean/max of `samples` (any unit); NaN when empty."""
    if len(samples) == 0:
        nan = float("nan")
        return {"p50": nan, "p90": nan, "p99": nan, "mean": nan, "max": nan}
    a = np.asarray(samples, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(a.mean()),
        "max": float(a.max()),
    }


@dataclass
class LoadResult:
    mode: str  # "closed" | "open"
    target: str
    transport: str  # "unix" | "tcp" | "unix+shm"
    concurrency: int  # closed: C; open: the largest number in flight seen
    connections: int
    offered_rate: float | None  # open loop only
    window_s: float  # measurement window (after warm-up)
    wall_s: float  # the whole run, warm-up included
    requests: int  # measured successful replies
    completed_total: int  # every reply, warm-up and errors included
    errors: dict[str, int]  # measured error replies by code
    errors_total: dict[str, int]  # every error reply by code, warm-up included
    lost: int  # no reply within the grace period, or not sent (open loop, limit)
    rps: float
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    rows_per_request: int = 1
    rows_per_s: float = 0.0
    request_bytes: int = 0
    send_lag_p50_us: float | None = None
    send_lag_p99_us: float | None = None
    client_cpu_pct: float = 0.0  # this process, percent of one core, over wall_s
    client_cpus: dict[int, int] = field(default_factory=dict)
    latencies_us: list[float] | None = None

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("latencies_us", None)
        return d
