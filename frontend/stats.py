"""Per-model counters and latency figures for the `stats` op."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

WINDOW = 4096


class ModelStats:
    def __init__(self) -> None:
        self.requests = 0
        self.success = 0
        self.errors: Counter[str] = Counter()
        self.rejected = 0
        self.expired = 0
        self.cancelled = 0
        self.batches = 0
        self.batch_sizes: Counter[int] = Counter()
        self.padding_rows = 0
        # A list, not an array: stored once a request, and numpy boxes and converts
        # every float stored into an array.
        self._lat = [0.0] * WINDOW
        self._n = 0

    def ok(self, seconds: float) -> None:
        self.requests += 1
        self.success += 1
        self._lat[self._n % WINDOW] = seconds
        self._n += 1

    def batch(self, rows: int, pad: int) -> None:
        self.batches += 1
        self.batch_sizes[rows] += 1
        self.padding_rows += pad

    def fail(self, code: str) -> None:
        self.requests += 1
        self.errors[code] += 1

    def as_dict(self) -> dict[str, Any]:
        lat = self._lat[: min(self._n, WINDOW)]
        pct = (
            {f"p{q}_us": float(np.percentile(lat, q) * 1e6) for q in (50, 90, 99)}
            if len(lat)
            else {}
        )
        return {
            "requests": self.requests,
            "success": self.success,
            "errors": dict(self.errors),
            "rejected": self.rejected,
            "expired": self.expired,
            "cancelled": self.cancelled,
            "batches": self.batches,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "padding_rows": self.padding_rows,
            "latency": {"window": len(lat), **pct},
        }
