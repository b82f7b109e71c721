"""A drain seen over HTTP: /readyz turns 503 at SIGTERM, predicts are served through
drain_delay_seconds, then answered 503 "stopping" with Connection: close."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import requests

from ringserve.runtime.launch import ServerProcess, free_port

from conftest import models_toml
from httpclient import RawHttp

BODY = json.dumps({"instances": [[0.5] * 16]}).encode()
PREDICT = b"POST /v1/models/linear:predict HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (
    len(BODY),
    BODY,
)


def test_rest_during_a_drain(model_root: Path) -> None:
    port = free_port()
    srv = ServerProcess(
        models_toml(model_root, ["linear"]),
        f'http = "127.0.0.1:{port}"\ndrain_delay_seconds = 3\nring_bytes = 1048576',
    )
    srv.start()
    try:
        with RawHttp(port) as h:
            h.send(PREDICT)
            assert h.response()[0] == 200
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            # Readiness goes first: a balancer stops sending while requests still run.
            while requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code != 503:
                assert time.monotonic() - t0 < 10, "/readyz still 200 after SIGTERM"
                time.sleep(0.01)
            statuses = []
            told = False
            while time.monotonic() - t0 < 30:
                h.send(PREDICT)
                status, headers, body = h.response()
                statuses.append(status)
                told = headers.get("connection") == "close"
                if status != 200:
                    assert status == 503 and "stopping" in json.loads(body)["error"], body
                    assert told
                    break
                if told:
                    # Accepted before the drain began, answered after: the client is
                    # told to reconnect with that reply, and nothing more is read.
                    break
                time.sleep(0.02)
            assert statuses[0] == 200 and told, statuses
            assert h.closed_within(10)
    finally:
        assert srv.stop() == 0
