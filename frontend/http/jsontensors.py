"""JSON values <-> numpy arrays, with TF Serving's REST conventions.

In: a (nested) list or a scalar becomes an array of the signature's dtype; strings
are UTF-8 text or {"b64": "..."} for arbitrary bytes. The shape is read off the
first elements and its rank and element count are checked before numpy allocates
anything; a ragged list or a value of the wrong kind is refused naming the input.
Out: arrays go straight to orjson (numpy serialisation in C); string outputs are
text, or {"b64": ...} when the output's name ends in `_bytes` (TF Serving's rule).
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from ringserve.ipc.errors import INVALID_ARGUMENT, ProtocolError
from ringserve.ipc.tensors import NUMPY, STRING, byte_view


def _bad(field: str, expected: str, value: Any) -> ProtocolError:
    text = repr(value)
    if len(text) > 80:
        text = text[:80] + "..."
    return ProtocolError(INVALID_ARGUMENT, f"{field}: expected {expected}, received {text}")


def is_b64(v: Any) -> bool:
    return type(v) is dict and len(v) == 1 and "b64" in v


def shape_of(value: Any, field: str, max_elements: int, max_rank: int) -> list[int]:
    """The shape the first elements imply; numpy checks the rest is not ragged."""
    shape: list[int] = []
    x = value
    while type(x) is list:
        shape.append(len(x))
        if len(shape) > max_rank:
            raise _bad(
                f"{field}.shape",
                f"a rank of at most {max_rank} (max_tensor_rank)",
                f"rank {len(shape)}+",
            )
        if not x:
            break
        x = x[0]
    n = math.prod(shape)
    if n > max_elements:
        raise _bad(f"{field}", f"at most {max_elements} elements", f"shape {shape}")
    return shape


def to_array(
    value: Any, dtype: str, field: str, max_elements: int, max_rank: int
) -> np.ndarray[Any, Any]:
    shape = shape_of(value, field, max_elements, max_rank)
    if dtype == STRING:
        flat: list[bytes] = []
        _strings(value, flat, field, len(shape))
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        try:
            return out.reshape(shape)
        except ValueError:
            raise _bad(field, f"a rectangular list of shape {shape}", value) from None
    try:
        a = np.array(value, dtype=NUMPY[dtype])
    except (ValueError, TypeError, OverflowError):
        raise _bad(field, f"a rectangular list of {dtype} of shape {shape}", value) from None
    if list(a.shape) != shape:
        raise _bad(field, f"a rectangular list of shape {shape}", value)
    return a


def _strings(x: Any, out: list[bytes], field: str, depth: int) -> None:
    if type(x) is list:
        if depth <= 0:  # deeper than the first elements said: ragged
            raise _bad(field, "a rectangular list of strings", x)
        for y in x:
            _strings(y, out, field, depth - 1)
    elif type(x) is str:
        out.append(x.encode())
    elif is_b64(x) and type(x["b64"]) is str:
        try:
            out.append(base64.b64decode(x["b64"], validate=True))
        except (binascii.Error, ValueError):
            raise _bad(field, "valid base64 in b64", x["b64"]) from None
    else:
        raise _bad(field, 'strings or {"b64": "..."} for a string input', x)


def to_wire(a: np.ndarray[Any, Any], dtype: str) -> dict[str, Any]:
    """The wire form the dispatcher checks (ipc/tensors.py), without a copy."""
    if dtype == STRING:
        return {"dtype": STRING, "shape": list(a.shape), "data": a.reshape(-1).tolist()}
    return {"dtype": dtype, "shape": list(a.shape), "data": byte_view(a)}


def from_wire(name: str, t: dict[str, Any]) -> Any:
    """An output as orjson can write it: an array, or nested lists for strings."""
    dtype = t["dtype"]
    shape = t["shape"]
    if dtype == STRING:
        if name.endswith("_bytes"):
            items: list[Any] = [{"b64": base64.b64encode(b).decode()} for b in t["data"]]
        else:
            items = [b.decode("utf-8", "replace") for b in t["data"]]
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
        return arr.reshape(shape).tolist()
    a = np.frombuffer(t["data"], dtype=NUMPY[dtype]).reshape(shape)
    if dtype == "float16":
        a = a.astype(np.float32)  # orjson writes no float16
    return a
