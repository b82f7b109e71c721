"""Prometheus text exposition of the `stats` figures (served by http/probes.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Stats = Callable[[], dict[str, Any]]


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(stats: dict[str, Any]) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, helptext: str, rows: list[tuple[dict[str, Any], Any]]):
        lines.append(f"# HELP ringserve_{name} {helptext}")
        lines.append(f"# TYPE ringserve_{name} {kind}")
        for labels, value in rows:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            lines.append(f"ringserve_{name}{{{lab}}} {float(value)}")

    models = stats.get("models", {})
    for key, kind, text in (
        ("requests", "counter", "Requests answered."),
        ("success", "counter", "Requests answered with outputs."),
        ("rejected", "counter", "Requests refused because the queue was full."),
        ("expired", "counter", "Requests whose deadline passed."),
        ("cancelled", "counter", "Queued requests dropped because the client left."),
        ("batches", "counter", "Batches run."),
        ("padding_rows", "counter", "Rows of padding added to reach an allowed batch size."),
        ("queue_depth", "gauge", "Requests waiting."),
    ):
        metric(
            f"model_{key}", kind, text, [({"model": m}, s.get(key, 0)) for m, s in models.items()]
        )
    metric(
        "model_errors",
        "counter",
        "Requests answered with an error, by code.",
        [({"model": m, "code": c}, n) for m, s in models.items() for c, n in s["errors"].items()],
    )
    metric(
        "model_latency_microseconds",
        "gauge",
        "Latency percentiles over the last requests.",
        [
            ({"model": m, "quantile": q}, s["latency"][f"p{q}_us"])
            for m, s in models.items()
            for q in (50, 90, 99)
            if f"p{q}_us" in s["latency"]
        ],
    )
    workers = stats.get("workers", [])
    for key, kind, text in (
        ("requests", "counter", "Records a worker computed."),
        ("busy_seconds", "counter", "Seconds a worker spent computing."),
        ("cpu_seconds", "counter", "CPU seconds of a worker process."),
        ("restarts", "counter", "Restarts of a worker position."),
        ("inflight", "gauge", "Records in a worker's ring."),
    ):
        metric(
            f"worker_{key}",
            kind,
            text,
            [
                ({"model": w["model"], "version": w["version"], "index": w["index"]}, w.get(key, 0))
                for w in workers
            ],
        )
    metric("connections", "gauge", "Open client connections.", [({}, stats.get("connections", 0))])
    return "\n".join(lines) + "\n"
