"""The HTTP layer on a real server: probes, metrics, keep-alive, pipelining, limits."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess, free_port

from conftest import models_toml
from httpclient import RawHttp, curl, get


class Srv:
    def __init__(self, proc: ServerProcess, http: int, metrics: int, late: Path) -> None:
        self.proc = proc
        self.http = http
        self.metrics = metrics
        self.late = late


@pytest.fixture(scope="module")
def srv(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    """`late` has no version at start, so the server is live but not ready."""
    late = tmp_path_factory.mktemp("late")
    http, metrics = free_port(), free_port()
    toml = (
        models_toml(model_root, ["linear"]) + f'\n[[models]]\nname = "late"\nbase_path = "{late}"\n'
    )
    proc = ServerProcess(
        toml,
        f'http = "127.0.0.1:{http}"\nmetrics = "127.0.0.1:{metrics}"\n'
        "http_idle_timeout_seconds = 1.5\nmax_frame_bytes = 65536\n"
        "version_poll_seconds = 0.2\nring_bytes = 1048576\nmax_inflight_per_connection = 8\n"
        "max_connections = 6",
        wait_ready=False,
    )
    proc.start()
    deadline = time.monotonic() + 120
    while True:  # the HTTP listener is up once /healthz answers
        try:
            if requests.get(f"http://127.0.0.1:{http}/healthz", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "no /healthz within 120 s"
        assert proc.proc is not None and proc.proc.poll() is None, "server exited"
        time.sleep(0.02)
    yield Srv(proc, http, metrics, late)
    assert proc.stop() == 0


def _ready_op(srv: Srv) -> bool:
    with Client(srv.proc.unix_url) as c:
        return bool(c.health()["ready"])


def test_readyz_follows_health_op(srv: Srv, model_root: Path) -> None:
    for port in (srv.http, srv.metrics):
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 503
    assert not _ready_op(srv)
    # Give `late` a version: the server becomes ready, and /readyz with it.
    shutil.copytree(model_root / "linear" / "1", srv.late / "1")
    deadline = time.monotonic() + 120
    while requests.get(f"http://127.0.0.1:{srv.http}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "/readyz never turned 200"
        time.sleep(0.05)
    assert _ready_op(srv)
    assert requests.get(f"http://127.0.0.1:{srv.metrics}/readyz", timeout=10).status_code == 200
    r = curl("-i", f"http://127.0.0.1:{srv.metrics}/readyz")
    assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200"), r.stdout + r.stderr


def test_metrics_paths_with_curl(srv: Srv) -> None:
    for port in (srv.http, srv.metrics):
        for path in ("/metrics", "/monitoring/prometheus/metrics"):
            r = curl("-f", f"http://127.0.0.1:{port}{path}")
            assert r.returncode == 0, r.stderr
            assert "# TYPE ringserve_" in r.stdout and "# HELP ringserve_" in r.stdout
    r = curl("-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{srv.metrics}/nope")
    assert r.stdout == "404"
    r = curl("-s", "-X", "POST", "-w", " %{http_code}", f"http://127.0.0.1:{srv.metrics}/healthz")
    assert r.stdout.endswith(" 405") and '"error"' in r.stdout


def test_keep_alive_and_pipelining(srv: Srv) -> None:
    with RawHttp(srv.metrics) as h:
        h.send(get("/healthz") + get("/nope") + get("/metrics") + get("/healthz"))
        statuses = [h.response()[0] for _ in range(4)]
        assert statuses == [200, 404, 200, 200]
        h.send(get("/healthz"))  # still open after all that
        assert h.response()[0] == 200
        h.send(b"HEAD /healthz HTTP/1.1\r\n\r\n")
        status, headers, body = h.response(head=True)
        assert status == 200 and headers["content-length"] == "3"
        h.send(get("/healthz"))  # nothing of the HEAD's body came before this reply
        status, _, body = h.response()
        assert status == 200 and body == b"ok\n"
    with RawHttp(srv.metrics) as h:  # HTTP/1.0 closes after its reply
        h.send(b"GET /healthz HTTP/1.0\r\n\r\n")
        assert h.response()[0] == 200
        assert h.closed_within(5)


def test_malformed_request_closes_only_its_connection(srv: Srv) -> None:
    with RawHttp(srv.http) as good, RawHttp(srv.http) as bad:
        good.send(get("/healthz"))
        assert good.response()[0] == 200
        bad.send(b"GARBAGE\x00 / HTTP/9\r\n\r\n")
        status, _, body = bad.response()
        assert status == 400 and b"malformed" in body
        assert bad.closed_within(5)
        good.send(get("/healthz"))
        assert good.response()[0] == 200


def test_bounds(srv: Srv) -> None:
    with RawHttp(srv.http) as h:  # body over max_frame_bytes, refused from its header
        h.send(b"POST /v1/models/linear:predict HTTP/1.1\r\nContent-Length: 65537\r\n\r\n")
        status, _, body = h.response()
        assert status == 413 and b"max_frame_bytes (65536)" in body
        assert h.closed_within(5)
    with RawHttp(srv.http) as h:  # chunked: counted as it comes
        h.send(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"8000\r\n" + b"x" * 0x8000 + b"\r\n"
        try:
            for _ in range(3):
                h.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert h.response()[0] == 413
    with RawHttp(srv.http) as h:
        h.send(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
        assert h.response()[0] == 431
        assert h.closed_within(5)


def test_idle_timeout(srv: Srv) -> None:
    with RawHttp(srv.http) as h:  # idle between requests
        h.send(get("/healthz"))
        assert h.response()[0] == 200
        assert h.closed_within(10)
    with RawHttp(srv.http) as h:  # a request that never ends (slowloris)
        t0 = time.monotonic()
        h.send(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(20):  # a byte at a time keeps the socket busy, not the request
            h.send(b"X")
            if time.monotonic() - t0 > 1.0:
                break
            time.sleep(0.1)
        status, _, _ = h.response()
        assert status == 408
        assert h.closed_within(10)


def test_connection_cap(srv: Srv) -> None:
    held = [RawHttp(srv.metrics) for _ in range(6)]
    try:
        for h in held:  # each is open and counted once it has an answer
            h.send(get("/healthz"))
            assert h.response()[0] == 200
        with RawHttp(srv.metrics) as extra:
            status, _, body = extra.response()
            assert status == 503 and b"max_connections" in body
            assert extra.closed_within(5)
        with RawHttp(srv.http) as other:  # each listener has its own places
            other.send(get("/healthz"))
            assert other.response()[0] == 200
    finally:
        for h in held:
            h.close()
    deadline = time.monotonic() + 30
    while True:  # the places come back once the server sees the closes
        with RawHttp(srv.metrics) as h:
            try:
                h.send(get("/healthz"))
                if h.response()[0] == 200:
                    break
            except (ConnectionError, OSError):
                pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
