"""What `ringserve tune` writes: the ranked table, the winning [[models]] block, the plot."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tune import Result

if TYPE_CHECKING:
    from .tunerun import Tuner

PLOT_MAX = 8  # curves on the plot: the best ones, so it stays readable


def _f(v: Any, nd: int = 0, scale: float = 1.0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v / scale:.{nd}f}"


def table(ranked: Sequence[Result], score: Callable[[Result], str]) -> str:
    head = [
        "#",
        "candidate",
        "score",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "CPU %",
        "ctx/s",
        "busy %",
        "start s",
        "status",
    ]
    rows = [head]
    for i, r in enumerate(ranked, 1):
        d = r.row()
        rows.append(
            [
                str(i),
                r.cand.name,
                score(r),
                _f(d["concurrency"]),
                _f(d["rps"]),
                _f(d["p50_us"], 3, 1000),
                _f(d["p99_us"], 3, 1000),
                _f(d["cpu_pct"]),
                _f(d["ctx_per_s"]),
                _f(d["busy_pct"]),
                _f(d["server_start_s"], 1),
                r.status,
            ]
        )
    w = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w[i]) if i in (1, 11) else c.rjust(w[i]) for i, c in enumerate(r))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(line.rstrip() for line in lines)


def write_toml(path: str, block: str, t: Tuner) -> None:
    b = t.best
    assert b is not None and b.best is not None
    head = [
        f"# ringserve tune, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"{t.objective.describe()}",
        f"# best of {len([r for r in t.results if r.points])} candidates tried on "
        f"{len(t.cores)} cores{' (interrupted: best so far)' if t.interrupted else ''}: "
        f"{b.best['rps']:.0f} req/s, p50 {b.best['p50_us'] / 1000:.3f} ms, "
        f"p99 {b.best['p99_us'] / 1000:.3f} ms at concurrency {b.best['concurrency']}",
        "",
    ]
    Path(path).write_text("\n".join(head) + block)


def write_plot(path: str, ranked: Sequence[Result], t: Tuner) -> None:
    from ringserve.bench.plot import latency_vs_throughput

    shown = [r for r in ranked if r.points][:PLOT_MAX]
    best = t.best.cand.name if t.best else None
    latency_vs_throughput(
        [(r.cand.name, r.points) for r in shown],
        path,
        title=f"ringserve tune: {t.name}, {t.objective.describe()} (best {PLOT_MAX} shown)",
        percentiles=("p50", "p99"),
        highlight=best,
    )
