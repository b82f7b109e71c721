"""Dynamic batching, deadlines and backpressure on a real server."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest

from ringserve.client import Client
from ringserve.ipc.tensors import to_wire
from ringserve.runtime.launch import ServerProcess

from conftest import models_toml
from models import ALL_DTYPES
from rawclient import Raw

BATCH = """[models.batching]
max_batch_size = 8
batch_timeout_us = 20000
allowed_batch_sizes = [2, 4, 8]
max_queue = 64
"""


@pytest.fixture(scope="module")
def batched(model_root: Path) -> Iterator[ServerProcess]:
    toml = models_toml(
        model_root,
        ["alltypes", "linear", "slow"],
        {"alltypes": BATCH, "linear": BATCH, "slow": BATCH.replace("64", "3")},
    )
    # A second, unbatched copy of alltypes to compare against.
    toml += f'\n[[models]]\nname = "plain"\nbase_path = "{model_root / "alltypes"}"\n'
    srv = ServerProcess(toml, "ring_bytes = 4194304\nmax_inflight_per_connection = 16")
    srv.start()
    yield srv
    assert srv.stop() == 0


def alltypes_inputs(seed: int, rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in ALL_DTYPES:
        if name == "string":
            items = [f"s{seed}-{i}".encode() * (i % 3) for i in range(rows * 2)]
            out[name] = np.array(items, dtype=object).reshape(rows, 2)
        elif name == "bool":
            out[name] = rng.integers(0, 2, (rows, 2)).astype(bool)
        elif name.startswith("float"):
            out[name] = rng.standard_normal((rows, 2)).astype(name)
        else:
            info = np.iinfo(name)
            out[name] = rng.integers(info.min, info.max, (rows, 2), dtype=name, endpoint=True)
    return out


def test_batched_replies_equal_unbatched_for_every_dtype(batched: ServerProcess) -> None:
    reqs = [alltypes_inputs(i, 1 + i % 3) for i in range(24)]
    with Client(batched.unix_url) as c:
        before = c.stats()["models"]["alltypes"]["batches"]
        got = c.infer_many("alltypes", reqs)
        want = c.infer_many("plain", reqs)
        st = c.stats()["models"]["alltypes"]
    for g, w, r in zip(got, want, reqs, strict=True):
        assert isinstance(g, dict) and isinstance(w, dict), (g, w)
        assert g.keys() == w.keys()
        for k in w:
            assert g[k].dtype == w[k].dtype and g[k].shape == w[k].shape, k
            np.testing.assert_array_equal(g[k], w[k])
        np.testing.assert_array_equal(g["int64_out"], r["int64"])
        assert list(g["string_out"].ravel()) == list(r["string"].ravel())
    # Batching really happened: fewer batches than requests, sizes above one row.
    assert st["batches"] - before < len(reqs)
    assert any(int(k) > 3 for k in st["batch_sizes"]), st["batch_sizes"]


def test_padding_to_allowed_sizes(batched: ServerProcess) -> None:
    x = np.random.default_rng(9).standard_normal((3, 16)).astype(np.float32)
    with Client(batched.unix_url) as c:
        st0 = c.stats()["models"]["linear"]
        y = c.infer("linear", {"x": x})["y"]  # 3 rows alone -> padded to 4
        st = c.stats()["models"]["linear"]
    assert y.shape == (3, 4)
    # allowed_batch_sizes = [2, 4, 8]: one batch of 3 request rows, padded with
    # exactly one zero row to 4 (batch_sizes counts the request rows of each batch).
    assert st["batches"] - st0["batches"] == 1, st
    sizes0 = st0["batch_sizes"]
    grew = {k: n - sizes0.get(k, 0) for k, n in st["batch_sizes"].items()}
    assert {k: n for k, n in grew.items() if n} == {"3": 1}, (st0, st)
    assert st["padding_rows"] - st0["padding_rows"] == 1, st


def test_too_large_for_max_batch_size_is_refused(batched: ServerProcess) -> None:
    with Client(batched.unix_url) as c:
        with pytest.raises(Exception) as ei:
            c.infer("linear", {"x": np.zeros((9, 16), np.float32)})
    assert getattr(ei.value, "code", "") == "INVALID_ARGUMENT"
    assert "max_batch_size" in str(ei.value) and "9" in str(ei.value)


def test_batching_never_holds_a_request_on_an_idle_model(batched: ServerProcess) -> None:
    """Batching is work-conserving: with nothing of the model running, a lone request
    goes at once instead of waiting batch_timeout_us (20 ms here) for company."""
    x = np.zeros((1, 16), np.float32)
    with Client(batched.unix_url) as c:
        for _ in range(3):
            c.infer_many("linear", [{"x": x}] * 8)  # full batches first
        took = []
        for _ in range(5):
            t0 = time.perf_counter()
            c.infer("linear", {"x": x})
            took.append(time.perf_counter() - t0)
    assert sorted(took)[2] < 0.015, took


def slow(n: int) -> dict:
    return {
        "x": to_wire(np.ones((1, 4), np.float32)),
        "n": to_wire(np.array(n, np.int32)),
    }


def worker_requests(srv: ServerProcess, model: str) -> int:
    with Client(srv.unix_url) as c:
        return sum(w["requests"] for w in c.stats()["workers"] if w["model"] == model)


def test_expired_while_queued_is_never_computed(batched: ServerProcess) -> None:
    with Client(batched.unix_url) as c:
        st0 = c.stats()["models"]["slow"]
        w0 = worker_requests(batched, "slow")
        busy = c.send({"op": "infer", "model": "slow", "inputs": slow(200_000)})
        late = c.send({"op": "infer", "model": "slow", "inputs": slow(1), "timeout_ms": 5})
        r = c.recv(late)
        assert r["ok"] is False and r["error"]["code"] == "DEADLINE_EXCEEDED"
        assert "not computed" in r["error"]["message"] or "handed" in r["error"]["message"]
        # The expired request left the queue: it no longer counts against max_queue.
        assert c.stats()["models"]["slow"]["queue_depth"] == 0
        assert c.recv(busy)["ok"] is True
        st = c.stats()["models"]["slow"]
    assert st["expired"] - st0["expired"] == 1
    # Only the busy request reached the worker (slow's scalar input is never batched).
    assert worker_requests(batched, "slow") - w0 == 1


def test_queue_bound_answers_at_once(batched: ServerProcess) -> None:
    with Client(batched.unix_url) as c:
        st0 = c.stats()["models"]["slow"]["rejected"]
        ids = [c.send({"op": "infer", "model": "slow", "inputs": slow(50_000)}) for _ in range(8)]
        replies = [c.recv(i) for i in ids]
        st = c.stats()["models"]["slow"]
    codes = [r["error"]["code"] if not r["ok"] else "OK" for r in replies]
    assert codes.count("RESOURCE_EXHAUSTED") >= 3, codes
    assert st["rejected"] - st0 >= 3
    assert st["queue_depth"] == 0


def test_disconnect_cancels_queued(batched: ServerProcess) -> None:
    with Client(batched.unix_url) as c0:
        before = c0.stats()["models"]["slow"]["cancelled"]
    with Raw(batched.unix_url) as raw:
        for i in range(3):
            raw.send({"id": i, "op": "infer", "model": "slow", "inputs": slow(100_000)})
        with Client(batched.unix_url) as c:
            deadline = time.monotonic() + 30
            while c.stats()["models"]["slow"]["queue_depth"] < 1:
                assert time.monotonic() < deadline
    with Client(batched.unix_url) as c:
        deadline = time.monotonic() + 30
        while c.stats()["models"]["slow"]["cancelled"] <= before:
            assert time.monotonic() < deadline, "queued requests were not cancelled"
        assert c.stats()["models"]["slow"]["queue_depth"] == 0
        assert c.infer("linear", {"x": np.zeros((1, 16), np.float32)})["y"].shape == (1, 4)


def _fill_until_blocked(sock: socket.socket, frame: bytes, limit_s: float = 20.0) -> int:
    """Send frames without reading replies until the server stops reading; bytes sent."""
    sock.setblocking(False)
    sent = 0
    view = memoryview(frame)
    deadline = time.monotonic() + limit_s
    stalled_since = None
    while time.monotonic() < deadline:
        try:
            n = sock.send(view[sent % len(frame) :])
            sent += n
            stalled_since = None
        except BlockingIOError:
            stalled_since = stalled_since or time.monotonic()
            if time.monotonic() - stalled_since > 1.0:
                return sent
    raise AssertionError(f"the server kept reading: {sent} bytes accepted")


def test_backpressure_on_a_client_that_does_not_read(batched: ServerProcess) -> None:
    """Replies of about 1 MB each, never read: the server stops reading instead of
    buffering them."""
    plain_inputs = {k: to_wire(v) for k, v in alltypes_inputs(2, 8000).items()}
    body = msgpack.packb({"id": 1, "op": "infer", "model": "plain", "inputs": plain_inputs})
    frame = struct.pack(">I", len(body)) + body
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(batched.unix)
    try:
        sent = _fill_until_blocked(s, frame)
        assert len(frame) > 500_000
        # Far less than unbounded: at most the in-flight limit (16) plus socket buffers.
        assert sent < 40 * len(frame), (sent, len(frame))
        with Client(batched.unix_url) as other:  # everyone else is still served
            assert other.infer("linear", {"x": np.zeros((1, 16), np.float32)})["y"].shape
    finally:
        s.close()


def test_zero_row_requests_in_a_batch(batched: ServerProcess) -> None:
    """Empty requests batched with others: each gets its own (empty or full) reply."""
    x = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    with Client(batched.unix_url) as c:
        want = c.infer("linear", {"x": x})["y"]
        ids = [
            c.send({"op": "infer", "model": "linear", "inputs": {"x": to_wire(a)}})
            for a in (np.zeros((0, 16), np.float32), x, np.zeros((0, 16), np.float32))
        ]
        replies = [c.recv(i) for i in ids]
    assert all(r["ok"] for r in replies), replies
    shapes = [r["outputs"]["y"]["shape"] for r in replies]
    assert shapes == [[0, 4], [2, 4], [0, 4]]
    got = np.frombuffer(replies[1]["outputs"]["y"]["data"], np.float32).reshape(2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6)
