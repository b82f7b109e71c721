"""Fixed-bucket histograms recorded on the hot path as integer increments.

Recording is one `bisect` and two additions; the prometheus_client families are built
from these counts only at scrape time (frontend/metrics.py). Buckets are Prometheus'
`le` (less than or equal) bounds, with +Inf implied.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any


def _series(lo_exp: int, hi_exp: int, steps: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(s * 10.0**e, 9) for e in range(lo_exp, hi_exp + 1) for s in steps)


# 10 us to 50 s in 1-2-5 steps: a ring round trip at one end, a cold GPU call at the
# other; 22 bounds keep histogram_quantile within a factor of 2.5 anywhere between.
DURATION_BOUNDS = _series(-5, 1, (1.0, 2.0, 5.0))
# Rows per batch: every size up to 8, then powers of two and the steps between.
BATCH_BOUNDS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 12.0, 16.0)
BATCH_BOUNDS += (24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 192.0, 256.0, 512.0, 1024.0, 4096.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, x: float) -> None:
        self.counts[bisect_left(self.bounds, x)] += 1
        self.sum += x

    @property
    def count(self) -> int:
        return sum(self.counts)

    def as_dict(self) -> dict[str, Any]:
        """What `stats` reports: per-bucket (not cumulative) counts, `le` bounds."""
        return {"le": list(self.bounds), "counts": list(self.counts), "sum": self.sum}


def cumulative(h: dict[str, Any]) -> list[tuple[str, float]]:
    """Prometheus buckets from a `stats` histogram: (le, cumulative count), +Inf last."""
    out = []
    total = 0
    for le, n in zip(h["le"], h["counts"], strict=False):
        total += n
        out.append((repr(float(le)), float(total)))
    out.append(("+Inf", float(sum(h["counts"]))))
    return out


def quantile(q: float, h: dict[str, Any]) -> float | None:
    """Prometheus' histogram_quantile over a `stats` histogram (or a difference of two):
    linear inside the bucket; None when empty. Used by `ringserve top`."""
    counts = h["counts"]
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    lo = 0.0
    bounds = h["le"]
    for i, n in enumerate(counts):
        if i == len(bounds):  # +Inf bucket: the highest finite bound, as Prometheus does
            return float(bounds[-1]) if bounds else None
        hi = float(bounds[i])
        if seen + n >= rank and n > 0:
            return lo + (hi - lo) * (rank - seen) / n
        seen += n
        lo = hi
    return float(bounds[-1]) if bounds else None
