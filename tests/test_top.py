"""`ringserve top` against a running server: plain text when stdout is not a terminal,
figures that follow the traffic sent meanwhile."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import numpy as np

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess


def traffic_until(srv: ServerProcess, stop: threading.Event) -> None:
    with Client(srv.unix_url) as c:
        while not stop.is_set():
            c.infer_many("linear", [{"x": np.ones((1, 16), np.float32)}] * 4)


def top(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "ringserve", "top", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_top_once_under_load(metrics_server: ServerProcess) -> None:
    stop = threading.Event()
    t = threading.Thread(target=traffic_until, args=(metrics_server, stop))
    t.start()
    try:
        text = top(metrics_server.unix_url, "--once", "--interval", "0.5")
    finally:
        stop.set()
        t.join(30)
    assert "\x1b[" not in text  # not a terminal: no screen control
    lines = text.splitlines()
    assert lines[0].startswith("ringserve top")
    header = next(ln.split() for ln in lines if ln.startswith("MODEL"))
    row = next(ln.split() for ln in lines if ln.startswith("linear "))
    m = dict(zip(header, row, strict=True))
    assert m["VERSION"] == "1"
    assert float(m["REQ/S"]) > 0
    assert float(m["P50_MS"]) > 0 and float(m["P99_MS"]) >= float(m["P50_MS"])
    assert float(m["BATCH"]) >= 1
    header = next(ln.split() for ln in lines if ln.startswith("WORKER"))
    row = next(ln.split() for ln in lines if ln.startswith("linear/1/w0"))
    w = dict(zip(header, row, strict=True))
    assert w["STATE"] == "up" and w["DEVICE"] == "gpu:0"
    assert float(w["CPU%"]) > 0 and 0 < float(w["BUSY%"]) <= 100
    assert int(w["THREADS"]) >= 1 and int(w["RESTARTS"]) >= 0
    assert any(ln.startswith("frontend") for ln in lines)
    assert not any(ln.startswith("gpu ") for ln in lines)  # no NVML here: no GPU line


def test_top_iterations_idle(metrics_server: ServerProcess) -> None:
    t0 = time.monotonic()
    text = top(metrics_server.unix_url, "--iterations", "2", "--interval", "0.3")
    assert time.monotonic() - t0 >= 0.6
    blocks = ["ringserve top" + b for b in text.split("ringserve top")[1:]]
    assert len(blocks) == 2 and all(b.startswith("ringserve top") for b in blocks)
    row = next(ln.split() for ln in blocks[1].splitlines() if ln.startswith("linear "))
    assert row[2] == "0.0"  # nothing sent meanwhile: 0 requests/s
    assert row[4] == "-"  # and no latency to show


def test_top_unreachable_server() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ringserve", "top", "unix:///nonexistent/ringserve.sock", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "cannot reach" in out.stderr and "/nonexistent/ringserve.sock" in out.stderr
