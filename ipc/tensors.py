"""Tensors on the wire and in shared memory: the dtype table, checks, numpy views.

Wire form (protocol.md): {"dtype": str, "shape": [int], "data": bin} in C order,
little-endian; for dtype "string", "data" is an array of prod(shape) bin items.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import INVALID_ARGUMENT, ProtocolError, clip

# Code numbers are used in ring records; never renumber.
DTYPE_CODES: dict[str, int] = {
    "bool": 1,
    "int8": 2,
    "int16": 3,
    "int32": 4,
    "int64": 5,
    "uint8": 6,
    "uint16": 7,
    "uint32": 8,
    "uint64": 9,
    "float16": 10,
    "float32": 11,
    "float64": 12,
    "string": 13,
}
CODE_DTYPES: dict[int, str] = {v: k for k, v in DTYPE_CODES.items()}
NUMPY: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<") for name in DTYPE_CODES if name != "string"
}
STRING = "string"


def itemsize(dtype: str) -> int:
    return NUMPY[dtype].itemsize


# dtype.name is a Python-level property that costs microseconds; dtype.str is a C one.
_BY_STR: dict[str, str] = {dt.str: name for name, dt in NUMPY.items()}


def dtype_name(dt: np.dtype[Any]) -> str:
    """Protocol name of a numpy dtype; object/bytes/str arrays are `string`."""
    known = _BY_STR.get(dt.str)
    if known is not None:
        return known
    if dt.kind in "OSU":
        return STRING
    name = dt.name
    if name not in NUMPY:
        raise ProtocolError(
            INVALID_ARGUMENT, f"dtype: expected one of {sorted(DTYPE_CODES)}, received {name}"
        )
    return name


def byte_view(c: Any) -> Any:
    """The bytes of a buffer of any shape, flat, without a copy where the layout allows
    (a copy only for a non-contiguous array; an empty (3, 0) array included)."""
    if isinstance(c, (bytes, bytearray)):
        return c
    if isinstance(c, np.ndarray):
        if c.flags.c_contiguous and c.size:
            return c.data.cast("B")
        return np.ascontiguousarray(c).reshape(-1).view(np.uint8).data
    m = memoryview(c)
    return m.cast("B") if m.nbytes else memoryview(b"")


def count(shape: list[int] | tuple[int, ...]) -> int:
    return math.prod(shape)


# The highest rank read from anyone (a client, a worker's ring, a server's reply) before
# any product of dimensions is taken: 150,000 dimensions once cost the loop 14 s in
# big-integer products. TensorFlow itself stops at 254; 32 is well above any model's.
# `server.max_tensor_rank` may lower it for clients, never raise it.
MAX_RANK = 32
# Each dimension fits in a signed 64-bit integer (numpy's and TensorFlow's shapes).
MAX_DIM = (1 << 63) - 1


def check_shape(field: str, shape: Any, max_rank: int = MAX_RANK) -> list[int]:
    """A shape read from another process: a list of at most `max_rank` non-negative
    64-bit integers. The rank is checked first, so nothing is computed on a long list."""
    if not isinstance(shape, (list, tuple)):
        raise ProtocolError(
            INVALID_ARGUMENT,
            f"{field}: expected a list of non-negative integers, received {clip(shape)}",
        )
    if len(shape) > max_rank:
        raise ProtocolError(
            INVALID_ARGUMENT,
            f"{field}: expected rank at most {max_rank} (max_tensor_rank), "
            f"received rank {len(shape)}",
        )
    for d in shape:
        if type(d) is not int or not 0 <= d <= MAX_DIM:
            raise ProtocolError(
                INVALID_ARGUMENT,
                f"{field}: expected a list of non-negative integers, received {clip(shape)}",
            )
    return shape if isinstance(shape, list) else list(shape)


def check_wire_tensor(field: str, t: Any, max_rank: int = MAX_RANK) -> tuple[str, list[int], Any]:
    """Validate the envelope of a wire tensor; return (dtype, shape, data-or-shm).

    `field` names the tensor in messages (e.g. "inputs.x").
    """
    if not isinstance(t, dict):
        raise ProtocolError(
            INVALID_ARGUMENT, f"{field}: expected a tensor map, received {type(t).__name__}"
        )
    dtype = t.get("dtype")
    if not isinstance(dtype, str) or dtype not in DTYPE_CODES:
        raise ProtocolError(
            INVALID_ARGUMENT,
            f"{field}.dtype: expected one of {sorted(DTYPE_CODES)}, received {clip(dtype)}",
        )
    shape = check_shape(f"{field}.shape", t.get("shape"), max_rank)
    extra = set(t) - {"dtype", "shape", "data", "shm"}
    if extra:
        raise ProtocolError(
            INVALID_ARGUMENT,
            f"{field}: unexpected keys {clip(sorted(map(str, extra)))}; "
            "expected dtype, shape and data or shm",
        )
    if "shm" in t:
        if "data" in t:
            raise ProtocolError(INVALID_ARGUMENT, f"{field}: expected data or shm, received both")
        return dtype, shape, t["shm"]
    data = t.get("data")
    n = count(shape)
    if dtype == STRING:
        if not isinstance(data, list) or not all(isinstance(x, bytes) for x in data):
            # A bin decodes as bytes, or as a view of the frame on the typed path: the
            # client sent the same either way, so the message names it the same.
            got = "bytes" if isinstance(data, memoryview) else type(data).__name__
            raise ProtocolError(
                INVALID_ARGUMENT,
                f"{field}.data: expected an array of bin items for dtype string, received {got}",
            )
        if len(data) != n:
            raise ProtocolError(
                INVALID_ARGUMENT,
                f"{field}.data: expected {n} items for shape {clip(shape)}, received {len(data)}",
            )
        return dtype, shape, data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(
            INVALID_ARGUMENT, f"{field}.data: expected bin, received {type(data).__name__}"
        )
    want = n * itemsize(dtype)
    if len(data) != want:
        raise ProtocolError(
            INVALID_ARGUMENT,
            f"{field}.data: expected {clip(want)} bytes ({clip(n)} x {dtype} "
            f"for shape {clip(shape)}), "
            f"received {len(data)}",
        )
    return dtype, shape, data


def to_wire(arr: Any) -> dict[str, Any]:
    """Encode an array-like as a wire tensor. Numeric data is sent as raw bytes."""
    a = np.asarray(arr)
    dtype = dtype_name(a.dtype)
    shape = list(a.shape)
    if dtype == STRING:
        items = [x if isinstance(x, bytes) else str(x).encode() for x in a.reshape(-1).tolist()]
        return {"dtype": dtype, "shape": shape, "data": items}
    a = np.ascontiguousarray(a, dtype=NUMPY[dtype])
    return {"dtype": dtype, "shape": shape, "data": a.reshape(-1).data.cast("B")}


def from_wire(t: dict[str, Any]) -> np.ndarray[Any, Any]:
    dtype, shape, data = check_wire_tensor("tensor", t)
    if dtype == STRING:
        out = np.empty(count(shape), dtype=object)
        out[:] = data
        return out.reshape(shape)
    return np.frombuffer(data, dtype=NUMPY[dtype]).reshape(shape)


def shape_matches(want: list[int], got: list[int]) -> bool:
    """`want` uses -1 for unknown dims; an unknown rank is None upstream."""
    return len(want) == len(got) and all(w == -1 or w == g for w, g in zip(want, got, strict=True))
