"""/metrics: the Prometheus exposition, produced by prometheus_client.

A custom collector turns one `stats` snapshot (the frontend's counters and
histograms, the supervisor's per-position worker figures) into metric families at
scrape time; nothing on the request path touches prometheus_client. The families,
their labels and meaning are listed in docs/metrics.md. The HTTP layer
(frontend/http/) serves it on the `[server] metrics` and `[server] http` listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.registry import CollectorRegistry

from .histogram import cumulative

Stats = Callable[[], dict[str, Any]]

MV = ["model", "version"]
WORKER = ["model", "version", "worker"]

# (stats key, family name, help)
HISTOGRAMS = (
    (
        "request_duration",
        "ringserve_request_duration_seconds",
        "Seconds from a request's arrival to its reply handed to the connection.",
    ),
    (
        "queue_duration",
        "ringserve_queue_duration_seconds",
        "Seconds from a request's arrival to its first hand-over to a worker.",
    ),
    (
        "compute_duration",
        "ringserve_compute_duration_seconds",
        "Seconds a worker spent on one record (a request or a batch), all phases.",
    ),
    (
        "compute_input_duration",
        "ringserve_compute_input_duration_seconds",
        "Seconds a worker spent reading a record and making its input tensors.",
    ),
    (
        "compute_infer_duration",
        "ringserve_compute_infer_duration_seconds",
        "Seconds a worker spent in the TensorFlow call for one record.",
    ),
    (
        "compute_output_duration",
        "ringserve_compute_output_duration_seconds",
        "Seconds a worker spent turning one record's outputs into arrays.",
    ),
    ("batch_size", "ringserve_batch_size", "Rows per batch run (padding not counted)."),
)


class StatsCollector:
    """prometheus_client collector over a `stats` snapshot taken at each collect."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from families(self.stats())


def families(st: dict[str, Any]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "ringserve_requests",
        "Infer requests answered, by code (OK or the error code).",
        labels=[*MV, "code"],
    )
    hists = {key: HistogramMetricFamily(name, text, labels=MV) for key, name, text in HISTOGRAMS}
    padding = CounterMetricFamily(
        "ringserve_batch_padding_rows",
        "Rows of padding added to reach an allowed batch size.",
        labels=MV,
    )
    depth = GaugeMetricFamily("ringserve_queue_depth", "Requests waiting in the queue.", labels=MV)
    inflight = GaugeMetricFamily(
        "ringserve_inflight", "Requests handed to a worker and not answered yet.", labels=MV
    )
    for model, ms in sorted(st.get("models", {}).items()):
        for version, vs in sorted(ms.get("versions", {}).items()):
            mv = [model, str(version)]
            for code, n in sorted(vs["requests"].items()):
                requests.add_metric([*mv, code], n)
            for key, fam in hists.items():
                h = vs[key]
                fam.add_metric(mv, cumulative(h), h["sum"])
            padding.add_metric(mv, vs["padding_rows"])
            depth.add_metric(mv, vs["queue_depth"])
            inflight.add_metric(mv, vs["inflight"])
    yield requests
    yield from hists.values()
    yield from (padding, depth, inflight)
    yield from _worker_families(st.get("positions", []))
    yield from _gpu_families(st.get("positions", []), st.get("gpus"))
    yield from _frontend_families(st.get("frontend"))


def _worker_families(rows: list[dict[str, Any]]) -> Iterator[Metric]:
    cpu = CounterMetricFamily(
        "ringserve_worker_cpu_seconds",
        "CPU seconds of a worker position's processes, across restarts.",
        labels=[*WORKER, "mode"],
    )
    ctx = CounterMetricFamily(
        "ringserve_worker_context_switches",
        "Context switches of a worker position's threads, across restarts.",
        labels=[*WORKER, "kind"],
    )
    busy = CounterMetricFamily(
        "ringserve_worker_busy_seconds",
        "Seconds a worker position spent computing records, across restarts.",
        labels=WORKER,
    )
    records = CounterMetricFamily(
        "ringserve_worker_records",
        "Records (requests or batches) a worker position computed, across restarts.",
        labels=WORKER,
    )
    threads = GaugeMetricFamily(
        "ringserve_worker_threads", "OS threads of the worker process.", labels=WORKER
    )
    restarts = CounterMetricFamily(
        "ringserve_worker_restarts", "Times a worker position was restarted.", labels=WORKER
    )
    up = GaugeMetricFamily(
        "ringserve_worker_up",
        "1 while the worker position has a serving process.",
        labels=WORKER,
    )
    for r in rows:
        w = [r["model"], str(r["version"]), str(r["worker"])]
        _add_cpu_ctx(cpu, ctx, w, r)
        busy.add_metric(w, r["busy_seconds"])
        records.add_metric(w, r["requests"])
        if r["pids"]:
            threads.add_metric(w, r["threads"])
        restarts.add_metric(w, r["restarts"])
        up.add_metric(w, r["up"])
    yield from (cpu, ctx, busy, records, threads, restarts, up)


def _gpu_families(
    rows: list[dict[str, Any]], gpus: list[dict[str, Any]] | None
) -> Iterator[Metric]:
    if not gpus:
        return  # no GPU worker, no NVML or no driver: absent, not zero
    by_index = {g["index"]: g for g in gpus}
    labels = [*WORKER, "gpu"]
    util = GaugeMetricFamily(
        "ringserve_gpu_utilization_ratio",
        "Fraction of the last sample period the worker's GPU was running a kernel (NVML).",
        labels=labels,
    )
    used = GaugeMetricFamily(
        "ringserve_gpu_memory_used_bytes",
        "Memory in use on the worker's GPU (NVML).",
        labels=labels,
    )
    total = GaugeMetricFamily(
        "ringserve_gpu_memory_total_bytes", "Memory of the worker's GPU (NVML).", labels=labels
    )
    for r in rows:
        dev = r.get("device", "")
        if not dev.startswith("gpu:") or not dev[4:].isdigit():
            continue
        g = by_index.get(int(dev[4:]))
        if g is None:
            continue
        lab = [r["model"], str(r["version"]), str(r["worker"]), str(g["index"])]
        util.add_metric(lab, g["utilization"])
        used.add_metric(lab, g["memory_used_bytes"])
        total.add_metric(lab, g["memory_total_bytes"])
    yield from (util, used, total)


def _frontend_families(fe: dict[str, Any] | None) -> Iterator[Metric]:
    if not fe:
        return
    cpu = CounterMetricFamily(
        "ringserve_frontend_cpu_seconds",
        "CPU seconds of the server process (supervisor and frontend).",
        labels=["mode"],
    )
    ctx = CounterMetricFamily(
        "ringserve_frontend_context_switches",
        "Context switches of the server process's threads.",
        labels=["kind"],
    )
    _add_cpu_ctx(cpu, ctx, [], fe)
    conns = GaugeMetricFamily(
        "ringserve_frontend_connections", "Open client connections.", labels=["transport"]
    )
    for kind, n in sorted(fe["connections"].items()):
        conns.add_metric([kind], n)
    rx = CounterMetricFamily(
        "ringserve_frontend_received_bytes", "Bytes read from client connections."
    )
    rx.add_metric([], fe["received_bytes"])
    tx = CounterMetricFamily(
        "ringserve_frontend_sent_bytes", "Bytes written to client connections."
    )
    tx.add_metric([], fe["sent_bytes"])
    yield from (cpu, ctx, conns, rx, tx)


def _add_cpu_ctx(
    cpu: CounterMetricFamily, ctx: CounterMetricFamily, labels: list[str], r: dict[str, Any]
) -> None:
    """A process's CPU seconds by mode and context switches by kind (a worker position's
    or the server's: `stats` reports both under the same keys)."""
    cpu.add_metric([*labels, "user"], r["cpu_user_seconds"])
    cpu.add_metric([*labels, "system"], r["cpu_system_seconds"])
    ctx.add_metric([*labels, "voluntary"], r["voluntary_ctx_switches"])
    ctx.add_metric([*labels, "involuntary"], r["involuntary_ctx_switches"])


class Exposition:
    """Encodes the collector as the text format or, when asked, OpenMetrics."""

    def __init__(self, stats: Stats) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(stats))

    def render(self, accept: str | None) -> tuple[str, bytes]:
        try:
            encoder, content_type = choose_encoder(accept or "")
        except Exception:  # an Accept header we cannot parse gets the text format
            encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
        return content_type, encoder(self.registry)
