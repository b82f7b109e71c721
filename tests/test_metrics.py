"""/metrics: the families of docs/metrics.md from prometheus_client, OpenMetrics on
request, figures that agree with `stats`, counters that survive a worker restart, and
GPU figures absent (not zero) on a host without one."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import types
from typing import Any

import numpy as np
import pytest

from ringserve.client import Client, RingserveError
from ringserve.frontend.histogram import DURATION_BOUNDS, quantile
from ringserve.frontend.metrics import families
from ringserve.runtime import gpu
from ringserve.runtime.launch import ServerProcess
from ringserve.runtime.positions import PositionCounters

from faults import wait_until
from promtext import Samples, get, samples, scrape, total

MV = {"model": "linear", "version": "1"}
W0 = {**MV, "worker": "0"}
HISTOGRAMS = (
    "ringserve_request_duration_seconds",
    "ringserve_queue_duration_seconds",
    "ringserve_compute_duration_seconds",
    "ringserve_compute_input_duration_seconds",
    "ringserve_compute_infer_duration_seconds",
    "ringserve_compute_output_duration_seconds",
    "ringserve_batch_size",
)


def port(srv: ServerProcess) -> int:
    return int(srv.metrics_port)  # type: ignore[attr-defined]


def now(srv: ServerProcess) -> Samples:
    return samples(scrape(port(srv))[1])


def traffic(srv: ServerProcess, ok: int, bad: int) -> None:
    """`ok` requests of 1 to 3 rows, pipelined so they batch; `bad` with a wrong shape."""
    rng = np.random.default_rng(1)
    with Client(srv.unix_url) as c:
        xs = [{"x": np.ones((int(rng.integers(1, 4)), 16), np.float32)} for _ in range(ok)]
        for out in c.infer_many("linear", xs):
            assert not isinstance(out, Exception), out
        for _ in range(bad):
            with pytest.raises(RingserveError, match="INVALID_ARGUMENT"):
                c.infer("linear", {"x": np.ones((1, 15), np.float32)})


def test_families_and_buckets(metrics_server: ServerProcess) -> None:
    traffic(metrics_server, 5, 1)
    ctype, text = scrape(port(metrics_server))
    assert ctype.startswith("text/plain; version=0.0.4")
    sm = samples(text)
    assert get(sm, "ringserve_requests_total", **MV, code="OK") >= 5
    assert get(sm, "ringserve_requests_total", **MV, code="INVALID_ARGUMENT") >= 1
    for h in HISTOGRAMS:
        assert get(sm, f"{h}_count", **MV) >= 1, h
        assert get(sm, f"{h}_bucket", **MV, le="+Inf") == get(sm, f"{h}_count", **MV)
    les = sorted(float(dict(lab)["le"]) for n, lab in sm if n.endswith("_duration_seconds_bucket"))
    assert les[0] <= 5e-5 and 10 <= max(x for x in les if x != float("inf"))
    for name in (
        "ringserve_batch_padding_rows_total",
        "ringserve_queue_depth",
        "ringserve_inflight",
    ):
        get(sm, name, **MV)
    for mode in ("user", "system"):
        get(sm, "ringserve_worker_cpu_seconds_total", **W0, mode=mode)
    for kind in ("voluntary", "involuntary"):
        assert get(sm, "ringserve_worker_context_switches_total", **W0, kind=kind) >= 0
        get(sm, "ringserve_frontend_context_switches_total", kind=kind)
    assert get(sm, "ringserve_worker_busy_seconds_total", **W0) > 0
    assert get(sm, "ringserve_worker_threads", **W0) >= 1
    assert get(sm, "ringserve_worker_restarts_total", **W0) >= 0
    assert get(sm, "ringserve_worker_up", **W0) == 1
    assert total(sm, "ringserve_frontend_cpu_seconds_total") > 0
    assert get(sm, "ringserve_frontend_received_bytes_total") > 0
    assert get(sm, "ringserve_frontend_sent_bytes_total") > 0
    get(sm, "ringserve_frontend_connections", transport="unix")
    # gpu:0 is configured, but this host has no NVML: no GPU series at all, not zeros.
    if not os.path.exists("/dev/nvidiactl"):
        assert "ringserve_gpu" not in text


def test_openmetrics_when_asked(metrics_server: ServerProcess) -> None:
    ctype, text = scrape(port(metrics_server), "application/openmetrics-text; version=1.0.0")
    assert ctype.startswith("application/openmetrics-text")
    assert text.endswith("# EOF\n")
    assert "# TYPE ringserve_requests counter" in text
    # An Accept header it cannot use gets the text format, not an error.
    ctype, _ = scrape(port(metrics_server), "application/json, text/plain;version=garbage")
    assert ctype.startswith("text/plain")


def test_stats_agree_with_metrics(metrics_server: ServerProcess) -> None:
    with Client(metrics_server.unix_url) as c:
        st0, sm0 = c.stats(), now(metrics_server)
        traffic(metrics_server, 40, 3)
        sm1 = now(metrics_server)
        st1 = c.stats()

    def d(name: str, **labels: Any) -> float:
        # total(): a series that did not exist yet before the traffic counts as 0.
        return total(sm1, name, **labels) - total(sm0, name, **labels)

    assert d("ringserve_requests_total", **MV, code="OK") == 40
    assert d("ringserve_requests_total", **MV, code="INVALID_ARGUMENT") == 3
    assert d("ringserve_request_duration_seconds_count", **MV) == 40
    assert d("ringserve_queue_duration_seconds_count", **MV) == 40
    m0, m1 = st0["models"]["linear"], st1["models"]["linear"]
    assert m1["success"] - m0["success"] == 40
    assert m1["requests"] - m0["requests"] == 43
    assert m1["errors"]["INVALID_ARGUMENT"] - m0["errors"].get("INVALID_ARGUMENT", 0) == 3
    # Between the scrape and the stats call nothing ran: the same figures, exactly.
    ms = st1["models"]["linear"]
    assert ms["requests"] == total(sm1, "ringserve_requests_total", model="linear")
    assert ms["batches"] == get(sm1, "ringserve_batch_size_count", **MV)
    rows = sum(int(k) * n for k, n in ms["batch_sizes"].items())
    assert rows == get(sm1, "ringserve_batch_size_sum", **MV)
    assert ms["padding_rows"] == get(sm1, "ringserve_batch_padding_rows_total", **MV)
    assert 0 < ms["batches"] - m0["batches"] <= 40
    (w,) = st1["workers"]
    (pos,) = st1["positions"]
    assert pos["requests"] == get(sm1, "ringserve_worker_records_total", **W0)
    assert pos["requests"] == get(sm1, "ringserve_compute_duration_seconds_count", **MV)
    assert w["busy_seconds"] == pytest.approx(get(sm1, "ringserve_worker_busy_seconds_total", **W0))
    assert w["threads"] == get(sm1, "ringserve_worker_threads", **W0)
    # CPU time only grows between the two readings.
    cpu = get(sm1, "ringserve_worker_cpu_seconds_total", **W0, mode="user")
    assert cpu <= pos["cpu_user_seconds"] <= cpu + 1.0
    # The per-request histograms sum to about the time the requests took.
    v = ms["versions"]["1"]
    assert sum(v["request_duration"]["counts"]) == get(
        sm1, "ringserve_request_duration_seconds_count", **MV
    )
    p50 = quantile(0.5, v["request_duration"])
    assert p50 is not None and 1e-6 < p50 < 5.0


def test_counters_survive_a_worker_restart(metrics_server: ServerProcess) -> None:
    traffic(metrics_server, 10, 0)
    before = now(metrics_server)
    with Client(metrics_server.unix_url) as c:
        (w,) = c.stats()["workers"]
    os.kill(w["pid"], signal.SIGKILL)

    def restarted() -> Samples | None:
        sm = now(metrics_server)
        up = get(sm, "ringserve_worker_up", **W0)
        return sm if up == 1 and get(sm, "ringserve_worker_restarts_total", **W0) >= 1 else None

    after = wait_until(restarted, 120, "the killed worker to serve again")
    restarts = "ringserve_worker_restarts_total"
    assert get(after, restarts, **W0) == get(before, restarts, **W0) + 1
    for name, extra in (
        ("ringserve_worker_cpu_seconds_total", {"mode": "user"}),
        ("ringserve_worker_cpu_seconds_total", {"mode": "system"}),
        ("ringserve_worker_context_switches_total", {"kind": "voluntary"}),
        ("ringserve_worker_context_switches_total", {"kind": "involuntary"}),
        ("ringserve_worker_busy_seconds_total", {}),
        ("ringserve_worker_records_total", {}),
    ):
        assert get(after, name, **W0, **extra) >= get(before, name, **W0, **extra), name
    # The new process loaded a model: its CPU time came on top of the old one's.
    cpu = "ringserve_worker_cpu_seconds_total"
    assert total(after, cpu, **W0) > total(before, cpu, **W0)
    traffic(metrics_server, 3, 0)  # and it serves


def test_position_counters_never_go_back() -> None:
    c = PositionCounters()
    fig = dict.fromkeys(c.base, 0.0)
    c.observe(1, {**fig, "cpu_user_seconds": 2.0, "voluntary_ctx_switches": 100})
    assert c.totals()["voluntary_ctx_switches"] == 100
    # A thread ended: the live sum drops, the counter does not.
    c.observe(1, {**fig, "cpu_user_seconds": 2.5, "voluntary_ctx_switches": 60})
    assert c.totals()["voluntary_ctx_switches"] == 100
    # Exit: the zombie shows its final CPU time and its main thread's switches only.
    c.gone(1, {**fig, "cpu_user_seconds": 3.0, "voluntary_ctx_switches": 5})
    c.observe(2, {**fig, "cpu_user_seconds": 0.5, "voluntary_ctx_switches": 10})
    t = c.totals()
    assert t["cpu_user_seconds"] == pytest.approx(3.5)
    assert t["voluntary_ctx_switches"] == 110


def test_quantile_interpolates_like_prometheus() -> None:
    h = {"le": [1.0, 2.0, 4.0], "counts": [0, 10, 10, 0], "sum": 0.0}
    assert quantile(0.5, h) == pytest.approx(2.0)
    assert quantile(0.25, h) == pytest.approx(1.5)
    assert quantile(0.99, {"le": [1.0], "counts": [0, 3], "sum": 9.0}) == 1.0  # +Inf
    assert quantile(0.5, {"le": [1.0], "counts": [0, 0], "sum": 0.0}) is None
    assert DURATION_BOUNDS[0] == 1e-5 and DURATION_BOUNDS[-1] == 50.0


# ---- NVML: imported only for GPU workers, used only when the driver loads ----------
def test_gpu_import_guard() -> None:
    logged: list[str] = []

    def must_not_import(name: str) -> Any:
        raise AssertionError(f"imported {name} with no GPU worker")

    assert gpu.indices(["cpu", "cpu"]) == ()
    assert gpu.load((), logged.append, must_not_import) is None
    assert gpu.indices(["gpu:1", "cpu", "gpu:0", "gpu:1"]) == (0, 1)

    def missing(name: str) -> Any:
        raise ImportError(f"No module named {name!r}")

    assert gpu.load((0,), logged.append, missing) is None
    assert "pip install 'ringserve[gpu]'" in logged[-1]

    class NoDriver:
        class NVMLError(Exception):
            pass

        def nvmlInit(self) -> None:
            raise self.NVMLError("NVML Shared Library Not Found")

    assert gpu.load((0,), logged.append, lambda name: NoDriver()) is None
    assert "NVML does not load" in logged[-1]
    # The real nvidia-ml-py on this host: a handle only where a driver is there.
    if not os.path.exists("/dev/nvidiactl"):
        assert gpu.load((0,), logged.append) is None
        if importlib.util.find_spec("pynvml") is not None:
            assert "pynvml" in sys.modules  # it was tried, since a GPU was configured


def test_gpu_families_from_nvml_figures() -> None:
    """With NVML answering (a stand-in for the driver here), each GPU worker gets its
    device's utilisation and memory, labelled with the worker and the GPU index."""
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=37, memory=5),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(used=2**30, total=2**34),
    )
    nv = gpu.load((1,), print, lambda name: fake)
    assert nv is not None
    st = {
        "positions": [
            {
                "model": "m",
                "version": 1,
                "worker": 0,
                "device": "gpu:1",
                "up": 1,
                "threads": 3,
                "pids": [1],
                "cpu_user_seconds": 0.0,
                "cpu_system_seconds": 0.0,
                "voluntary_ctx_switches": 0,
                "involuntary_ctx_switches": 0,
                "busy_seconds": 0.0,
                "requests": 0,
                "restarts": 0,
            },
            {
                "model": "m",
                "version": 1,
                "worker": 1,
                "device": "cpu",
                "up": 1,
                "threads": 3,
                "pids": [2],
                "cpu_user_seconds": 0.0,
                "cpu_system_seconds": 0.0,
                "voluntary_ctx_switches": 0,
                "involuntary_ctx_switches": 0,
                "busy_seconds": 0.0,
                "requests": 0,
                "restarts": 0,
            },
        ],
        "gpus": nv.read(),
    }
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in families(st)
        for s in fam.samples
        if s.name.startswith("ringserve_gpu")
    }
    lab = (("gpu", "1"), ("model", "m"), ("version", "1"), ("worker", "0"))
    assert got == {
        ("ringserve_gpu_utilization_ratio", lab): 0.37,
        ("ringserve_gpu_memory_used_bytes", lab): 2**30,
        ("ringserve_gpu_memory_total_bytes", lab): 2**34,
    }
    assert not [
        f for f in families({"positions": st["positions"]}) if f.name.startswith("ringserve_gpu")
    ]
