"""The HTTP listeners against slowloris, and the open-file budget that counts them.

A real server with short `handshake_timeout_seconds` and `frame_timeout_seconds` and a
long `http_idle_timeout_seconds`, so only the first two can close these connections.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ringserve.runtime.launch import ServerProcess, free_port

from conftest import models_toml
from httpclient import RawHttp, get

SOFT_NOFILE = 200
MAX_CONNECTIONS = 20

# Start the server with a low soft open-file limit, so that the limit it raises itself
# to is visible in /proc/<pid>/limits.
_LOW_NOFILE = (
    "import os, resource, sys\n"
    "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({SOFT_NOFILE}, hard))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'ringserve', *sys.argv[1:]])\n"
)


class LowNofileServer(ServerProcess):
    def argv(self) -> list[str]:
        return [sys.executable, "-c", _LOW_NOFILE, *super().argv()[3:]]


class Srv:
    def __init__(self, proc: ServerProcess, http: int, metrics: int) -> None:
        self.proc, self.http, self.metrics = proc, http, metrics


@pytest.fixture(scope="module")
def srv(model_root: Path) -> Iterator[Srv]:
    http, metrics = free_port(), free_port()
    proc = LowNofileServer(
        models_toml(model_root, ["linear"]),
        f'http = "127.0.0.1:{http}"\nmetrics = "127.0.0.1:{metrics}"\n'
        "handshake_timeout_seconds = 0.6\nframe_timeout_seconds = 1.2\n"
        f"http_idle_timeout_seconds = 60\nmax_connections = {MAX_CONNECTIONS}\n"
        "ring_bytes = 1048576",
    )
    proc.start()
    deadline = time.monotonic() + 60
    while True:  # the HTTP listeners are up once /healthz answers
        try:
            if requests.get(f"http://127.0.0.1:{http}/healthz", timeout=2).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "no /healthz within 60 s"
        time.sleep(0.02)
    yield Srv(proc, http, metrics)
    assert proc.stop() == 0


@pytest.mark.parametrize("listener", ["http", "metrics"])
def test_no_first_request_within_handshake_timeout(srv: Srv, listener: str) -> None:
    port = getattr(srv, listener)
    for first in (b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"):  # silent, then half a request
        with RawHttp(port) as h:
            t0 = time.monotonic()
            h.send(first)
            status, _, body = h.response()
            took = time.monotonic() - t0
            assert status == 408 and b"server.handshake_timeout_seconds" in body, body
            assert 0.5 < took < 10, took
            assert h.closed_within(5)


def test_request_dribbled_past_frame_timeout(srv: Srv) -> None:
    with RawHttp(srv.http) as h:
        h.send(get("/healthz"))  # the handshake is done: only frame_timeout applies now
        assert h.response()[0] == 200
        t0 = time.monotonic()
        h.send(b"GET /healthz HTTP/1.1\r\n")
        h.sock.settimeout(0.15)
        got = b""
        while not got and time.monotonic() - t0 < 10:  # a header byte every 0.15 s
            try:
                h.send(b"X")
                got = h.sock.recv(1 << 16)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        took = time.monotonic() - t0
        assert b" 408 " in got and b"server.frame_timeout_seconds" in got, got
        assert 1.1 < took < 5, took  # the bytes kept coming; the request never ended


def test_keepalive_past_handshake_timeout_is_served(srv: Srv) -> None:
    """The handshake limit is on the first request only: a client that pauses between
    requests longer than it is still served."""
    with RawHttp(srv.http) as h:
        h.send(get("/healthz"))
        assert h.response()[0] == 200
        assert not h.closed_within(1.5)  # past both limits, with no request begun
        h.send(get("/healthz"))
        assert h.response()[0] == 200


def test_open_file_budget_counts_every_listener(srv: Srv) -> None:
    """TCP, Unix, HTTP and metrics each have max_connections places."""
    assert srv.proc.proc is not None
    limits = Path(f"/proc/{srv.proc.proc.pid}/limits").read_text()
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
    soft = int(line.split()[3])
    assert soft >= 4 * MAX_CONNECTIONS + 256, line
