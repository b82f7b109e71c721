"""A real Prometheus (the Debian binary) scrapes a running ringserve; its HTTP API
answers rate() and histogram_quantile() over our families with sane figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess, free_port

from faults import wait_until
from promtext import get, samples, scrape

MV = {"model": "linear", "version": "1"}


class Prometheus:
    def __init__(self, base: str) -> None:
        self.base = base

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, expr: str) -> float | None:
        """The single value of an instant query, or None when it has no result."""
        res = self.query(expr)
        assert len(res) <= 1, f"{expr}: expected one series, got {res}"
        return float(res[0]["value"][1]) if res else None


@pytest.fixture
def prometheus(metrics_server: ServerProcess, tmp_path: Path) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the prometheus binary is missing: apt-get install prometheus "
            "(.ci/run installs it); this test scrapes ringserve with a real Prometheus"
        )
    target = f"127.0.0.1:{metrics_server.metrics_port}"  # type: ignore[attr-defined]
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: ringserve\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}")
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(
                    f"prometheus exited {proc.returncode}: "
                    + (tmp_path / "prometheus.log").read_text()[-2000:]
                )
            try:
                with urllib.request.urlopen(f"{prom.base}/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_until(ready, 30, "prometheus to be ready", step=0.1)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_prometheus_scrapes_rates_and_quantiles(
    metrics_server: ServerProcess, prometheus: Prometheus
) -> None:
    wait_until(
        lambda: prometheus.value('up{job="ringserve"}') == 1.0,
        30,
        "a first successful scrape",
        step=0.2,
    )
    # About three seconds of steady traffic, so several scrapes see the counters grow.
    sent = 0
    worst = 0.0
    with Client(metrics_server.unix_url) as c:
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            c.infer("linear", {"x": np.ones((2, 16), np.float32)})
            worst = max(worst, time.perf_counter() - t0)
            sent += 1
            time.sleep(0.002)
    final = get(
        samples(scrape(metrics_server.metrics_port)[1]),  # type: ignore[attr-defined]
        "ringserve_requests_total",
        **MV,
        code="OK",
    )
    ok = 'ringserve_requests_total{model="linear",version="1",code="OK"}'
    wait_until(lambda: prometheus.value(ok) == final, 30, "a scrape after the traffic", step=0.2)

    rate = prometheus.value(f"rate({ok}[20s])")
    assert rate is not None and rate > 0
    increase = prometheus.value(f"increase({ok}[20s])")
    assert increase is not None and 0.5 * sent <= increase <= 2.0 * sent, (increase, sent)

    q = (
        "histogram_quantile({}, sum by (le) "
        '(rate(ringserve_request_duration_seconds_bucket{{model="linear"}}[20s])))'
    )
    p50 = prometheus.value(q.format(0.5))
    p99 = prometheus.value(q.format(0.99))
    assert p50 is not None and p99 is not None
    # A bucket's upper bound is at most 2.5 times its lower one (1-2-5 steps), and the
    # server's time is within what the client measured.
    assert 1e-5 <= p50 <= p99 <= 2.5 * worst, (p50, p99, worst)
    qd = prometheus.value(q.replace("request_duration", "queue_duration").format(0.5))
    assert qd is not None and 0 <= qd <= p99 * 2.5

    cores = prometheus.value(
        'sum(rate(ringserve_worker_cpu_seconds_total{model="linear",worker="0"}[20s]))'
    )
    busy = prometheus.value('rate(ringserve_worker_busy_seconds_total{model="linear"}[20s])')
    assert cores is not None and 0 < cores <= 4.0
    assert busy is not None and 0 < busy <= 1.0
    assert prometheus.value('ringserve_worker_up{model="linear",worker="0"}') == 1.0
