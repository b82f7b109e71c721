"""Writes the corpus of nasty frames replayed by tests/test_fuzz.py (run from the
repository root: `python tests/corpus/generate.py`). Each entry: the bytes sent on a
fresh connection to the test suite's shared server (max_frame_bytes 8 MiB, no token)
and the error it must get, stored gzip-compressed. Found by perf/fuzz.py and by the
reports in issue 11."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import msgpack

HERE = Path(__file__).parent
X = {"dtype": "float32", "shape": [1, 16], "data": bytes(64)}


def frame(msg: object) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True, datetime=False)
    return struct.pack(">I", len(body)) + body


def infer(**fields: object) -> bytes:
    return frame({"id": 1, "op": "infer", "model": "linear", "inputs": {"x": X}, **fields})


def nested(depth: int) -> bytes:
    inner = b"\x91" * depth + b"\xc0"  # [[[...[nil]...]]]
    body = b"\x83" + msgpack.packb("id") + msgpack.packb(1) + msgpack.packb("op")
    body += msgpack.packb("health") + msgpack.packb("x") + inner
    return struct.pack(">I", len(body)) + body


def tensor(shape: object, dtype: str = "float32", data: object = b"") -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data": data}


CORPUS: dict[str, tuple[bytes, dict[str, object]]] = {
    "rank-150000.bin": (
        infer(inputs={"x": tensor([1000] * 150_000)}),
        {"code": "INVALID_ARGUMENT", "words": ["inputs.x.shape", "rank at most 32"]},
    ),
    "rank-33.bin": (
        infer(inputs={"x": tensor([1] * 33)}),
        {"code": "INVALID_ARGUMENT", "words": ["rank at most 32", "rank 33"]},
    ),
    "dims-2pow62-rank32.bin": (
        infer(inputs={"x": tensor([1 << 62] * 32, "float64")}),
        {"code": "INVALID_ARGUMENT", "words": ["inputs.x"]},
    ),
    "strings-huge-count.bin": (
        frame(
            {
                "id": 1,
                "op": "infer",
                "model": "strings",
                "inputs": {"s": tensor([1 << 62, 1 << 62], "string", [])},
            }
        ),
        {"code": "INVALID_ARGUMENT", "words": ["inputs.s"]},
    ),
    "model-name-64k.bin": (
        infer(model="m" * 65536),
        {"code": "NOT_FOUND", "words": ["field 'model'", "... (65536 bytes)"]},
    ),
    "op-100k.bin": (
        frame({"id": 1, "op": "o" * 100_000}),
        {"code": "INVALID_ARGUMENT", "words": ["field 'op'", "(100000 bytes)"]},
    ),
    "input-name-100k.bin": (
        frame({"id": 1, "op": "infer", "model": "linear", "inputs": {"x" * 100_000: X}}),
        {"code": "INVALID_ARGUMENT", "words": ["field 'inputs'"]},
    ),
    "timeout-nan.bin": (
        infer(timeout_ms=float("nan")),
        {"code": "INVALID_ARGUMENT", "words": ["timeout_ms", "nan"]},
    ),
    "timeout-inf.bin": (
        infer(timeout_ms=float("inf")),
        {"code": "INVALID_ARGUMENT", "words": ["timeout_ms", "inf"]},
    ),
    "timeout-1e300.bin": (
        infer(timeout_ms=1e300),
        {"code": "INVALID_ARGUMENT", "words": ["timeout_ms"]},
    ),
    "header-4GiB.bin": (
        b"\xff\xff\xff\xff" + b"\x00" * 16,
        {"code": "RESOURCE_EXHAUSTED", "words": ["max_frame_bytes"], "closes": True},
    ),
    "timestamp-ext.bin": (
        frame({"id": 1, "op": "health", "t": msgpack.Timestamp(1, 0)}),
        {"code": "INVALID_ARGUMENT", "words": ["timestamp"]},
    ),
    "nesting-100k.bin": (
        nested(100_000),
        {"code": "INVALID_ARGUMENT", "words": ["msgpack"]},
    ),
    "empty-arrays-300k.bin": (
        frame({"id": 1, "op": "health", "x": [[]] * 300_000}),
        {"code": "INVALID_ARGUMENT", "words": ["65536"]},
    ),
    "empty-maps-300k.bin": (
        frame({"id": 1, "op": "health", "x": [{}] * 300_000}),
        {"code": "INVALID_ARGUMENT", "words": ["65536"]},
    ),
    "map-header-4G.bin": (
        struct.pack(">I", 5) + b"\xdf\xff\xff\xff\xff",
        {"code": "INVALID_ARGUMENT", "words": ["msgpack"]},
    ),
    "id-negative.bin": (
        frame({"id": -1, "op": "health"}),
        {"code": "INVALID_ARGUMENT", "words": ["field 'id'"]},
    ),
    "shape-bools.bin": (
        infer(inputs={"x": tensor([True, 16], data=bytes(64))}),
        {"code": "INVALID_ARGUMENT", "words": ["inputs.x.shape"]},
    ),
}


def main() -> None:
    index = {}
    for name, (data, want) in CORPUS.items():
        # gzip: the frames are repetitive, and a corpus should not weigh megabytes.
        (HERE / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        index[name] = want
    (HERE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
