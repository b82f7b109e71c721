"""Every error case protocol.md names: the right code, a message naming the field,
the expected and the received value, and the connection (and server) keep serving."""

from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest

from ringserve.client import (
    Client,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from ringserve.runtime.launch import ServerProcess

from rawclient import Raw

X = {"dtype": "float32", "shape": [1, 16], "data": bytes(64)}


def infer(raw: Raw, rid: int, **fields: object) -> dict:
    raw.send({"id": rid, "op": "infer", "model": "linear", "inputs": {"x": X}, **fields})
    return raw.recv()


def still_serves(raw: Raw) -> None:
    r = infer(raw, 999)
    assert r["ok"] is True and r["id"] == 999, r


def err(reply: dict, code: str, *words: str) -> str:
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == code, reply
    msg = reply["error"]["message"]
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def test_frame_too_large_closes_without_allocating(server: ServerProcess) -> None:
    with Raw(server.tcp_url) as raw:
        raw.send_bytes(struct.pack(">I", 8 * 1024 * 1024 + 1))  # max_frame_bytes + 1
        r = raw.recv()
        assert r["id"] is None
        err(r, "RESOURCE_EXHAUSTED", "8388608")
        assert raw.closed_by_peer()
    with Raw(server.tcp_url) as raw:
        still_serves(raw)


@pytest.mark.parametrize(
    "body, rid",
    [
        (msgpack.packb([1, 2, 3]), None),
        (b"\xc1", None),  # never-used msgpack byte
        (msgpack.packb({"op": "health"}), None),
        (msgpack.packb({"id": -1, "op": "health"}), None),
        (msgpack.packb({"id": "7", "op": "health"}), None),
        (msgpack.packb({"id": 7}), 7),
        (msgpack.packb({"id": 8, "op": 5}), 8),
        (msgpack.packb({"id": 9, "op": "nope"}), 9),
        (msgpack.packb({"id": 10, "op": "health", "x": msgpack.ExtType(1, b"a")}), None),
    ],
)
def test_bad_envelope_keeps_connection(server: ServerProcess, body: bytes, rid: int) -> None:
    with Raw(server.unix_url) as raw:
        raw.send_bytes(struct.pack(">I", len(body)) + body)
        r = raw.recv()
        assert r["id"] == rid
        err(r, "INVALID_ARGUMENT")
        still_serves(raw)


def test_unknown_op_names_expected(server: ServerProcess) -> None:
    with Raw(server.unix_url) as raw:
        raw.send({"id": 3, "op": "predict"})
        err(raw.recv(), "INVALID_ARGUMENT", "'op'", "infer", "predict")


@pytest.mark.parametrize(
    "fields, code, words",
    [
        ({"model": "nosuch"}, "NOT_FOUND", ["'model'", "linear", "nosuch"]),
        ({"version": 42}, "NOT_FOUND", ["'version'", "[1]", "42"]),
        ({"version": "1"}, "INVALID_ARGUMENT", ["'version'", "integer", "'1'"]),
        ({"signature": "nosuch"}, "NOT_FOUND", ["'signature'", "serving_default", "nosuch"]),
        ({"inputs": {}}, "INVALID_ARGUMENT", ["'inputs'", "missing", "x"]),
        ({"inputs": {"x": X, "z": X}}, "INVALID_ARGUMENT", ["'inputs'", "unknown", "z"]),
        (
            {"inputs": {"x": {**X, "dtype": "float64", "data": bytes(128)}}},
            "INVALID_ARGUMENT",
            ["inputs.x.dtype", "float32", "float64"],
        ),
        (
            {"inputs": {"x": {**X, "shape": [1, 15], "data": bytes(60)}}},
            "INVALID_ARGUMENT",
            ["inputs.x.shape", "[-1, 16]", "[1, 15]"],
        ),
        (
            {"inputs": {"x": {**X, "shape": [16]}}},
            "INVALID_ARGUMENT",
            ["inputs.x.shape", "[16]"],
        ),
        (
            {"inputs": {"x": {**X, "data": bytes(63)}}},
            "INVALID_ARGUMENT",
            ["inputs.x.data", "64", "63"],
        ),
        (
            {"inputs": {"x": {**X, "dtype": "complex64"}}},
            "INVALID_ARGUMENT",
            ["inputs.x.dtype", "complex64"],
        ),
        (
            {"inputs": {"x": {**X, "data": [b"a"]}}},
            "INVALID_ARGUMENT",
            ["inputs.x.data", "bin", "list"],
        ),
        ({"inputs": {"x": {"dtype": "float32"}}}, "INVALID_ARGUMENT", ["inputs.x.shape"]),
        ({"inputs": [1]}, "INVALID_ARGUMENT", ["'inputs'", "map", "list"]),
        ({"outputs": ["nope"]}, "INVALID_ARGUMENT", ["'outputs'", "y", "nope"]),
        ({"timeout_ms": -5}, "INVALID_ARGUMENT", ["'timeout_ms'", "-5"]),
    ],
)
def test_infer_errors(server: ServerProcess, fields: dict, code: str, words: list[str]) -> None:
    with Raw(server.tcp_url) as raw:
        err(infer(raw, 5, **fields), code, *words)
        still_serves(raw)


def test_string_input_errors(server: ServerProcess) -> None:
    with Raw(server.unix_url) as raw:
        raw.send(
            {
                "id": 1,
                "op": "infer",
                "model": "strings",
                "inputs": {"s": {"dtype": "string", "shape": [3], "data": [b"a", b"b"]}},
            }
        )
        err(raw.recv(), "INVALID_ARGUMENT", "inputs.s.data", "3", "2")


def test_sdk_raises_one_class_per_code(server: ServerProcess) -> None:
    with Client(server.unix_url) as c:
        with pytest.raises(NotFound):
            c.infer("nosuch", {"x": np.zeros((1, 16), np.float32)})
        with pytest.raises(InvalidArgument) as ei:
            c.infer("linear", {"x": np.zeros((1, 16), np.float64)})
        assert ei.value.code == "INVALID_ARGUMENT" and "inputs.x.dtype" in str(ei.value)
        with pytest.raises(NotFound):
            c.metadata("linear", version=9)


def slow_inputs(n: int) -> dict[str, np.ndarray]:
    return {"x": np.ones((1, 4), np.float32), "n": np.array(n, np.int32)}


def test_deadline_while_running_and_queued(server: ServerProcess) -> None:
    with Client(server.unix_url) as c:
        # Occupy the worker, then send requests whose deadlines pass meanwhile.
        busy = c.send({"op": "infer", "model": "slow", "inputs": _wire(slow_inputs(300_000))})
        short = [
            c.send(
                {
                    "op": "infer",
                    "model": "slow",
                    "inputs": _wire(slow_inputs(1)),
                    "timeout_ms": 20,
                }
            )
            for _ in range(3)
        ]
        for rid in short:
            r = c.recv(rid)
            err(r, "DEADLINE_EXCEEDED", "timeout_ms")
        assert c.recv(busy)["ok"] is True
        with pytest.raises(DeadlineExceeded):
            c.infer("slow", slow_inputs(300_000), timeout_ms=30)
        # The server is still fine afterwards.
        assert c.infer("slow", slow_inputs(2))["y"].shape == (1, 4)


def test_queue_full_is_resource_exhausted(server: ServerProcess) -> None:
    # slow has max_queue = 4 and worker_inflight = 2: the 7th waiting request overflows.
    with Client(server.unix_url) as c:
        ids = [
            c.send({"op": "infer", "model": "slow", "inputs": _wire(slow_inputs(30_000))})
            for _ in range(10)
        ]
        replies = [c.recv(i) for i in ids]
    codes = [r["error"]["code"] if not r["ok"] else "OK" for r in replies]
    assert "RESOURCE_EXHAUSTED" in codes and codes.count("OK") >= 5, codes
    for r in replies:
        if not r["ok"]:
            err(r, "RESOURCE_EXHAUSTED", "max_queue 4")
    from ringserve.client.errors import from_reply

    rejected = next(r for r in replies if not r["ok"])
    assert isinstance(from_reply(rejected["error"]), ResourceExhausted)


def _wire(inputs: dict[str, np.ndarray]) -> dict:
    from ringserve.ipc.tensors import to_wire

    return {k: to_wire(v) for k, v in inputs.items()}


def test_wrap_pad_never_strands_a_request(model_root) -> None:
    """A record that needs the ring to wrap, sent to an idle worker, still runs."""
    from conftest import models_toml

    srv = ServerProcess(models_toml(model_root, ["linear"]), "ring_bytes = 65536")
    with srv, Client(srv.unix_url) as c:
        rng = np.random.default_rng(0)
        for rows in (600, 780, 500, 900, 300, 950):  # 38-61 KB records in a 64 KiB ring
            x = rng.standard_normal((rows, 16)).astype(np.float32)
            assert c.infer("linear", {"x": x}, timeout_ms=20_000)["y"].shape == (rows, 4)
