"""Per worker position (model, version, index) counters that survive restarts.

A restarted worker is a new process whose CPU time and context switches start from
zero, and a worker's context switches are summed over its live threads, so a thread
that ends takes its count with it. Prometheus' rate() would read either drop as a
counter reset and count the whole new value again. So each position keeps what its
finished processes reached, adds its live processes (two overlap while a placement
change rolls), and never reports less than it reported before: the series
`{model, version, worker}` only ever grows, across restarts.
"""

from __future__ import annotations

from typing import Any

from .procstat import ProcFigures

KEYS = (
    "cpu_user_seconds",
    "cpu_system_seconds",
    "voluntary_ctx_switches",
    "involuntary_ctx_switches",
    "busy_seconds",
    "requests",
)
FLOATS = {"cpu_user_seconds", "cpu_system_seconds", "busy_seconds"}


def own_figures(f: ProcFigures, link: Any) -> dict[str, float]:
    """One process's figures under KEYS: the kernel's, and what its link counted."""
    return {
        "cpu_user_seconds": f.user_seconds,
        "cpu_system_seconds": f.system_seconds,
        "voluntary_ctx_switches": f.voluntary_ctx_switches,
        "involuntary_ctx_switches": f.involuntary_ctx_switches,
        "busy_seconds": link.busy_ns / 1e9,
        "requests": link.requests,
    }


class PositionCounters:
    def __init__(self) -> None:
        self.base = dict.fromkeys(KEYS, 0.0)  # what finished processes reached
        self.live: dict[int, dict[str, float]] = {}  # pid -> its last figures
        self.last = dict.fromkeys(KEYS, 0.0)  # the most ever reported
        self.restarts = 0

    def observe(self, pid: int, now: dict[str, float]) -> None:
        self.live[pid] = now

    def gone(self, pid: int, final: dict[str, float]) -> None:
        """The process has ended: `final` is what it showed as a zombie (CPU times
        complete, context switches of its main thread only), so each figure keeps the
        larger of that and the last live reading."""
        last = self.live.pop(pid, final)
        for k in KEYS:
            self.base[k] += max(last[k], final[k])

    def totals(self) -> dict[str, float]:
        for k in KEYS:
            total = self.base[k] + sum(p[k] for p in self.live.values())
            if total < self.last[k]:
                self.base[k] += self.last[k] - total
                total = self.last[k]
            self.last[k] = total
        return {k: v if k in FLOATS else int(v) for k, v in self.last.items()}
