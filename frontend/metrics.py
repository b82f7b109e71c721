"""Prometheus text exposition over HTTP (`server.metrics`), built from the `stats` op.

A deliberately small HTTP/1.0 responder on the same loop: GET /metrics, and the
probes a load balancer reads: /healthz (200 while the process serves) and /readyz
(200 exactly when the `health` op answers ready, else 503).
"""

from __future__ import annotations

import asyncio
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


class MetricsProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats, ready: Callable[[], bool] = lambda: True) -> None:
        self.stats = stats
        self.ready = ready
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        if b"\r\n\r\n" not in self.buf and b"\n\n" not in self.buf:
            if len(self.buf) > 8192:
                self.transport.close()
            return
        line = self.buf.split(b"\n", 1)[0].decode("latin-1").split()
        path = line[1].split("?")[0] if len(line) >= 2 and line[0] == "GET" else ""
        if path == "/metrics":
            body = render(self.stats()).encode()
            head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
        elif path == "/healthz" or (path == "/readyz" and self.ready()):
            body = b"ok\n"
            head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
        elif path == "/readyz":
            body = b"not ready\n"
            head = b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        else:
            body = b"not found: GET /metrics\n"
            head = b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
        self.transport.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.transport.close()
