"""TF Serving warm-up records: assets.extra/tf_serving_warmup_requests, read by hand.

The file is a TFRecord file of `tensorflow.serving.PredictionLog` protos. Reading it
needs neither tensorflow_serving nor generated protobuf classes: the TFRecord framing
and the few messages involved are decoded here from the wire format.

TFRecord record: u64 length (LE), u32 masked crc32c of those 8 bytes, `length` bytes
of data, u32 masked crc32c of the data.

    PredictionLog   { 6: predict_log PredictLog }          (other kinds are skipped)
    PredictLog      { 1: request PredictRequest }
    PredictRequest  { 1: model_spec ModelSpec, 2: map<string, TensorProto> inputs }
    ModelSpec       { 1: name, 3: signature_name }
    TensorProto     { 1: dtype, 2: tensor_shape TensorShapeProto, 4: tensor_content,
                      5: float_val, 6: double_val, 7: int_val, 8: string_val,
                      10: int64_val, 11: bool_val, 13: half_val,
                      16: uint32_val, 17: uint64_val }
    TensorShapeProto{ 2: repeated Dim { 1: size }, 3: unknown_rank }
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# DataType enum -> numpy dtype (little-endian, as tensor_content is written on x86/arm).
DTYPES: dict[int, str] = {
    1: "<f4",
    2: "<f8",
    3: "<i4",
    4: "u1",
    5: "<i2",
    6: "i1",
    7: "O",
    9: "<i8",
    10: "?",
    17: "<u2",
    19: "<f2",
    22: "<u4",
    23: "<u8",
}
STRING = 7

# Which repeated field holds the values of each dtype when tensor_content is empty.
_VAL_FIELD: dict[int, int] = {
    1: 5,  # float_val
    2: 6,  # double_val
    3: 7,  # int_val
    4: 7,
    5: 7,
    6: 7,
    17: 7,
    7: 8,  # string_val
    9: 10,  # int64_val
    10: 11,  # bool_val
    19: 13,  # half_val (bit patterns in int32)
    22: 16,  # uint32_val
    23: 17,  # uint64_val
}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WarmupFileError(ValueError):
    """The file is not a readable TFRecord of PredictionLog protos."""


# ---- crc32c (Castagnoli), as TFRecord uses it ---------------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def _crc32c_py(data: bytes) -> int:
    crc = 0xFFFFFFFF
    t = _TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fast_crc32c() -> Any:
    for mod, fn in (("google_crc32c", "value"), ("crc32c", "crc32c")):
        try:
            m = __import__(mod)
            return getattr(m, fn)
        except (ImportError, AttributeError):
            continue
    return None


crc32c = _fast_crc32c() or _crc32c_py


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str | Path, check_crc: bool = True) -> Iterator[bytes]:
    """The data of every record of a TFRecord file (uncompressed)."""
    with open(path, "rb") as f:
        n = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise WarmupFileError(f"{path}: record {n}: truncated header")
            (length,), (len_crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if check_crc and masked_crc(head[:8]) != len_crc:
                raise WarmupFileError(f"{path}: record {n}: length crc mismatch")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise WarmupFileError(f"{path}: record {n}: truncated data")
            if check_crc and masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise WarmupFileError(f"{path}: record {n}: data crc mismatch")
            yield data
            n += 1


# ---- protobuf wire format -----------------------------------------------------------


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise WarmupFileError("protobuf: truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WarmupFileError("protobuf: varint too long")


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of every field; LEN values are bytes."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        val: Any
        if wt == _VARINT:
            val, pos = _varint(buf, pos)
        elif wt == _I64:
            val, pos = buf[pos : pos + 8], pos + 8
        elif wt == _LEN:
            n, pos = _varint(buf, pos)
            val, pos = buf[pos : pos + n], pos + n
        elif wt == _I32:
            val, pos = buf[pos : pos + 4], pos + 4
        else:
            raise WarmupFileError(f"protobuf: field {num}: unsupported wire type {wt}")
        if pos > end:
            raise WarmupFileError(f"protobuf: field {num}: truncated")
        yield num, wt, val


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _packed_varints(buf: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        v, pos = _varint(buf, pos)
        out.append(v)
    return out


def _repeated(wt: int, val: Any, fixed: str | None) -> list[Any]:
    """Values of one occurrence of a repeated scalar field, packed or not.

    `fixed` is the struct code of a fixed-width field (f, d), None for varints."""
    if fixed is not None:
        size = struct.calcsize(fixed)
        if wt == _LEN:
            return list(struct.unpack(f"<{len(val) // size}{fixed}", val))
        return [struct.unpack(f"<{fixed}", val)[0]]
    if wt == _LEN:
        return _packed_varints(val)
    return [val]


def _shape(buf: bytes) -> list[int] | None:
    dims: list[int] = []
    for num, _, val in fields(buf):
        if num == 2:
            size = 0
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    size = _signed64(v2)
            dims.append(size)
        elif num == 3 and val:
            return None  # unknown rank
    return dims


def tensor(buf: bytes) -> np.ndarray[Any, Any]:
    """A TensorProto as a numpy array (strings as an object array of bytes)."""
    dtype = 0
    shape: list[int] | None = []
    content: Any = b""
    vals: dict[int, list[Any]] = {}
    for num, wt, val in fields(buf):
        if num == 1:
            dtype = val
        elif num == 2:
            shape = _shape(val)
        elif num == 4:
            content = val  # a view: copied once, by numpy below
        elif num == 8:
            vals.setdefault(8, []).append(bytes(val))
        elif num in (5, 6):
            vals.setdefault(num, []).extend(_repeated(wt, val, "f" if num == 5 else "d"))
        elif num in (7, 10, 11, 13, 16, 17):
            vals.setdefault(num, []).extend(_repeated(wt, val, None))
    if dtype not in DTYPES:
        raise WarmupFileError(f"TensorProto: unsupported dtype enum {dtype}")
    if shape is None or any(d < 0 for d in shape):
        raise WarmupFileError(f"TensorProto: a warm-up input needs a known shape, got {shape}")
    np_dtype = np.dtype(DTYPES[dtype])
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if content and dtype != STRING:
        if len(content) != count * np_dtype.itemsize:
            raise WarmupFileError(
                f"TensorProto: tensor_content has {len(content)} bytes, expected "
                f"{count * np_dtype.itemsize} for shape {shape} of {np_dtype}"
            )
        return np.frombuffer(content, np_dtype).astype(np_dtype.newbyteorder("=")).reshape(shape)
    raw = vals.get(_VAL_FIELD[dtype], [])
    if dtype == STRING:
        a = np.empty(len(raw), dtype=object)
        a[:] = raw
    elif dtype == 19:
        a = np.array([v & 0xFFFF for v in raw], dtype=np.uint16).view(np.float16)
    elif dtype in (3, 5, 6, 9):  # signed varints are sign-extended to 64 bits
        a = np.array([_signed64(v) for v in raw], dtype=np.int64).astype(np_dtype)
    elif dtype == 10:
        a = np.array([bool(v) for v in raw], dtype=bool)
    else:
        a = np.array(raw, dtype=np.float64 if dtype in (1, 2) else np.uint64).astype(np_dtype)
    a = a.astype(np_dtype.newbyteorder("=")) if dtype != STRING else a
    if a.size == count:
        return a.reshape(shape)
    if a.size > count:
        raise WarmupFileError(f"TensorProto: {a.size} values for shape {shape} ({count} elements)")
    # As TensorFlow's MakeNdarray: fewer values than elements repeat the last one
    # (none at all: zeros).
    if dtype == STRING:
        fill: Any = raw[-1] if raw else b""
        out = np.empty(count, dtype=object)
        out[:] = [*raw, *([fill] * (count - len(raw)))]
        return out.reshape(shape)
    out = np.zeros(count, dtype=a.dtype)
    out[: a.size] = a
    if a.size:
        out[a.size :] = a[-1]
    return out.reshape(shape)


def predict_request(buf: bytes) -> tuple[str | None, dict[str, np.ndarray[Any, Any]]]:
    signature: str | None = None
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    for num, _, val in fields(buf):
        if num == 1:  # model_spec
            for n2, _, v2 in fields(val):
                if n2 == 3:
                    signature = bytes(v2).decode() or None
        elif num == 2:  # one map entry: {1: key, 2: value}
            key, value = "", b""
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    key = bytes(v2).decode()
                elif n2 == 2:
                    value = v2
            inputs[key] = tensor(value)
    return signature, inputs


def read_predict_requests(
    path: str | Path,
) -> Iterator[tuple[str | None, dict[str, np.ndarray[Any, Any]]]]:
    """(signature name or None for the default, inputs) of every predict log."""
    for i, rec in enumerate(read_records(path)):
        try:
            for num, _, val in fields(memoryview(rec)):
                if num != 6:  # classify, regress, multi-inference, session-run logs
                    continue
                for n2, _, v2 in fields(val):
                    if n2 == 1:
                        yield predict_request(v2)
        except WarmupFileError as exc:
            raise WarmupFileError(f"{path}: record {i}: {exc}") from None
