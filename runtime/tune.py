"""`ringserve tune --model-path PATH`: find the [[models]] settings that serve a model best.

Model Analyzer's job, on one host. For each candidate of `tunegrid` it starts a
private server (its own name, a Unix socket in a temporary folder, no TCP port) with
the model and those settings, loads it with `ringserve.bench`, and scores it:

  - `--objective throughput` (default): the highest req/s of a closed-loop sweep
    over `--concurrency`, among the points whose p99 is within `--p99-ms` (when
    given). The sweep stops at the first point past the p99 budget or that gains
    less than 5% over the one before; a candidate below half the best one's req/s
    at the same concurrency is stopped early as hopeless.
  - `--objective p50 --concurrency N`: the lowest p50 at concurrency N; a short
    probe first, and a candidate whose probe p50 is over 1.5x the best is stopped.

Points with errors do not count. `--budget-minutes` bounds the whole run (a
candidate that would not fit is not started); Ctrl-C stops at once with the best
found so far. Every server is stopped before the next starts and before exit.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from typing import Any

from .tunegrid import Candidate

GAIN_MIN = 1.05  # a sweep stops when one more step of concurrency gains less
HOPELESS = 0.5  # stopped below this fraction of the best req/s at the same concurrency
P50_PROBE = 1.5  # p50 objective: stopped when the probe's p50 is over this x the best
START_GUESS_S = 15.0  # before any candidate has started: a server start, and its stop


@dataclass
class Result:
    cand: Candidate
    status: str = "not run"
    score: float = math.nan
    best: dict[str, Any] | None = None
    points: list[dict[str, Any]] = field(default_factory=list)
    start_s: float = 0.0
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        b = self.best or {}
        cpu = b.get("workers_cpu_pct", math.nan) + b.get("frontend_cpu_pct", 0.0)
        return {
            "candidate": self.cand.name,
            "status": self.status,
            "score": self.score,
            "concurrency": b.get("concurrency"),
            "rps": b.get("rps", math.nan),
            "p50_us": b.get("p50_us", math.nan),
            "p99_us": b.get("p99_us", math.nan),
            "cpu_pct": cpu,
            "ctx_per_s": b.get("workers_ctx_per_s", math.nan) + b.get("frontend_ctx_per_s", 0.0),
            "busy_pct": b.get("busy_pct", math.nan),
            "server_start_s": self.start_s,
            "seconds": self.seconds,
            **{k: getattr(self.cand, k) for k in ("instances", "intra", "inter", "pinned")},
            "max_batch": self.cand.max_batch,
        }


class Objective:
    def __init__(self, kind: str, p99_ms: float | None, concurrency: list[int]) -> None:
        self.kind = kind
        self.p99_us = p99_ms * 1000 if p99_ms else None
        self.concurrency = concurrency

    def ok(self, row: dict[str, Any]) -> bool:
        if sum(row.get("errors", {}).values()) or row.get("requests", 0) == 0:
            return False
        return self.p99_us is None or row["p99_us"] <= self.p99_us

    def score(self, rows: list[dict[str, Any]]) -> tuple[float, dict[str, Any] | None]:
        good = [r for r in rows if self.ok(r)]
        if not good:
            return math.nan, None
        if self.kind == "p50":
            b = min(good, key=lambda r: r["p50_us"])
            return b["p50_us"], b
        b = max(good, key=lambda r: r["rps"])
        return b["rps"], b

    def better(self, a: float, b: float) -> bool:
        """Is score a better than score b (NaN is never better)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.kind == "p50" else a > b

    def describe(self) -> str:
        if self.kind == "p50":
            return f"lowest p50 at concurrency {self.concurrency[0]}"
        budget = f" with p99 <= {self.p99_us / 1000:g} ms" if self.p99_us else ""
        return f"highest throughput{budget}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ringserve.bench.cli import add_load_args, add_request_args

    p.add_argument(
        "--model-path",
        required=True,
        help="the model's base path (numbered version folders) or one version folder",
    )
    p.add_argument("--model-name", default=None, help="default: from the path")
    add_request_args(p)
    p.add_argument("--objective", choices=("throughput", "p50"), default="throughput")
    p.add_argument("--p99-ms", type=float, default=None, help="throughput: p99 budget in ms")
    add_load_args(p, duration=2.0, warmup=0.5)
    p.set_defaults(concurrency=None)
    p.add_argument("--budget-minutes", type=float, default=10.0, help="default 10")
    p.add_argument("--cores", type=int, default=None, help="default: the CPUs this may use")
    p.add_argument("--instances", default=None, help="comma list (default 1, 2, 4 .. cores)")
    p.add_argument("--max-batch-sizes", default="8,32", help="batching candidates (default 8,32)")
    p.add_argument("--no-batching", action="store_true", help="never try batching")
    p.add_argument("--no-pinning", action="store_true", help="never try cpu_affinity")
    p.add_argument("--batch-timeout-us", type=int, default=1000, help="when batching")
    p.add_argument("--output", default=None, metavar="FILE.toml", help="the winning [[models]]")
    p.add_argument("--json", default=None, metavar="FILE", help="every candidate as JSON")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="the candidates' curves")
    p.add_argument(
        "--server-toml",
        action="append",
        default=[],
        metavar="LINE",
        help="extra [server] line for the servers started (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    from .tunerun import Tuner

    try:
        return Tuner(args).run()
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"ringserve tune: {exc}", file=sys.stderr)
        return 2
