"""`--plot FILE.png`: latency percentiles against throughput, one curve per run.

matplotlib is an optional dependency: `pip install 'ringserve[bench]'`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

INSTALL = "plotting needs matplotlib: pip install 'ringserve[bench]' (or pip install matplotlib)"


class PlotUnavailable(RuntimeError):
    pass


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotUnavailable(INSTALL) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_available() -> None:
    """Fail before a long run, not after it."""
    _pyplot()


def latency_vs_throughput(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    path: str | Path,
    title: str = "",
    percentiles: Sequence[str] = ("p50", "p90", "p99"),
    highlight: str | None = None,
) -> Path:
    """One colour per run (label, rows); one line style per percentile."""
    plt = _pyplot()
    styles = {"p50": "-", "p90": "--", "p99": ":"}
    fig, ax = plt.subplots(figsize=(9, 4.2), dpi=90)
    cmap = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(runs):
        # In the order measured: a sweep traces the curve even where throughput falls back.
        pts = [
            (r["rps"], r) for r in rows if r.get("rps") and math.isfinite(r.get("p50_us", math.nan))
        ]
        if not pts:
            continue
        xs = [x for x, _ in pts]
        colour = cmap(i % 10)
        wide = 2.5 if label == highlight else 1.2
        for j, p in enumerate(percentiles):
            ys = [r[f"{p}_us"] / 1000 for _, r in pts]
            ax.plot(
                xs,
                ys,
                styles.get(p, "-"),
                color=colour,
                marker="o",
                markersize=3,
                linewidth=wide,
                label=label if j == 0 else None,
            )
    ax.set_xlabel("throughput (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    names = {"p50": "solid", "p90": "dashed", "p99": "dotted"}
    key = ", ".join(f"{names.get(p, p)} {p}" for p in percentiles)
    ax.set_title(title + ("\n" if title else "") + key, fontsize=9)
    if runs:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
