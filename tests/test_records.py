"""Pure-logic tests of ring record payloads (ipc/records.py): tensors in, tensors out."""

from __future__ import annotations

import functools
import mmap
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ringserve.ipc import layout as L
from ringserve.ipc import records
from ringserve.ipc.ring import RecordTooLarge, Ring, RingCorrupt
from ringserve.ipc.tensors import DTYPE_CODES, NUMPY, STRING

NUMERIC = sorted(NUMPY)
CAP = 1 << 20

SETTINGS = settings(max_examples=150, deadline=None)


class Pair:
    """A producer and a consumer Ring over one anonymous mmap."""

    def __init__(self, cap: int = CAP) -> None:
        self.m = mmap.mmap(-1, L.segment_size(cap))
        self.prod = Ring(self.m, create=True, capacity=cap)
        self.cons = Ring(self.m)
        self.base = np.frombuffer(self.m, dtype=np.uint8).ctypes.data

    def roundtrip(
        self, head: list[Any], tensors: list[records.TensorSpec]
    ) -> tuple[list[Any], dict[str, np.ndarray[Any, Any]]]:
        """Write one record, read it back, release it; results are copied out."""
        while (left := self.cons.peek()) is not None:  # after a failed example
            left.payload.release()
            self.cons.release()
        seq = records.write(self.prod, L.KIND_REQUEST, head, tensors)
        if seq is None:  # only padding stood in the way
            assert self.cons.peek() is None
            seq = records.write(self.prod, L.KIND_REQUEST, head, tensors)
        assert seq is not None
        rec = self.cons.peek()
        assert rec is not None and rec.seq == seq and rec.kind == L.KIND_REQUEST
        got_head, arrays = records.read(rec.payload)
        out = {k: a.copy() for k, a in arrays.items()}
        del arrays
        rec.payload.release()
        self.cons.release()
        return got_head, out

    def close(self) -> None:
        self.prod.close()
        self.cons.close()
        self.m.close()  # raises BufferError if a view of the ring was left behind


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair()
    yield p
    p.close()


@functools.cache
def shared_pair() -> Pair:
    """One ring reused across hypothesis examples (cheap, and it wraps around)."""
    return Pair(64 * 1024)


def same(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    """Equal dtype, shape and bytes (NaN payloads included)."""
    if a.dtype == object or b.dtype == object:
        return a.shape == b.shape and a.dtype == b.dtype and a.tolist() == b.tolist()
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def string_array(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out.reshape(shape)


shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)
strings = st.binary(max_size=20) | st.sampled_from([b"", b"\x00", b"a\x00b", b"\x00" * 9])


@st.composite
def tensors_st(draw: st.DrawFn, dtype: str | None = None) -> tuple[str, np.ndarray[Any, Any]]:
    dtype = dtype or draw(st.sampled_from(sorted(DTYPE_CODES)))
    shape = draw(shapes)
    if dtype == STRING:
        n = int(np.prod(shape))
        return dtype, string_array(draw(st.lists(strings, min_size=n, max_size=n)), shape)
    return dtype, draw(hnp.arrays(NUMPY[dtype], shape))


def spec(name: str, dtype: str, a: np.ndarray[Any, Any]) -> records.TensorSpec:
    if dtype == STRING:
        return (name, dtype, list(a.shape), list(a.reshape(-1)))
    # An empty multi-dim ndarray chunk trips a bug (test_zero_size_numpy_chunk_multi_dim):
    # pass those flattened so the round trips still cover zero-size tensors.
    return (name, dtype, list(a.shape), [a if a.size else a.reshape(-1)])


# ---- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", sorted(DTYPE_CODES))
@given(data=st.data())
@settings(max_examples=50, deadline=None)
def test_roundtrip_every_dtype(dtype: str, data: st.DataObject) -> None:
    _, a = data.draw(tensors_st(dtype))
    head = data.draw(st.lists(st.integers(0, 1 << 63) | st.text(max_size=5), max_size=3))
    got_head, out = shared_pair().roundtrip(head, [spec("t", dtype, a)])
    assert got_head == head
    assert list(out) == ["t"]
    assert same(out["t"], a)


@given(st.lists(tensors_st(), max_size=6))
@SETTINGS
def test_roundtrip_many_tensors_in_one_record(
    items: list[tuple[str, np.ndarray[Any, Any]]],
) -> None:
    tensors = [spec(f"t{i}", d, a) for i, (d, a) in enumerate(items)]
    head, out = shared_pair().roundtrip([7, "sig", ["a", "b"]], tensors)
    assert head == [7, "sig", ["a", "b"]]
    assert list(out) == [f"t{i}" for i in range(len(items))]
    for i, (_, a) in enumerate(items):
        assert same(out[f"t{i}"], a)


@pytest.mark.parametrize("dtype", sorted(DTYPE_CODES))
@pytest.mark.parametrize("shape", [[], [0], [3, 0], [0, 5, 2], [1], [1, 1, 1]])
def test_scalars_and_zero_size(pair: Pair, dtype: str, shape: list[int]) -> None:
    n = int(np.prod(shape))
    if dtype == STRING:
        a = string_array([b"\x00x"] * n, tuple(shape))
    else:
        a = np.arange(n).astype(NUMPY[dtype]).reshape(shape)
    # numeric chunks given as bytes: the way the frontend passes wire data
    t = (
        ("z", dtype, shape, list(a.reshape(-1)))
        if dtype == STRING
        else ("z", dtype, shape, [a.tobytes()])
    )
    head, out = pair.roundtrip([], [t, ("after", "int32", [2], [b"\x01\x00\x00\x00" * 2])])
    assert head == []
    assert out["z"].shape == tuple(shape)
    assert same(out["z"], a)
    assert out["after"].tolist() == [1, 1]


@pytest.mark.parametrize("shape", [(3, 0), (0, 4), (2, 0, 2)])
def test_zero_size_numpy_chunk_multi_dim(shape: tuple[int, ...]) -> None:
    a = np.zeros(shape, dtype=np.float32)
    _, out = Pair(4096).roundtrip([], [("z", "float32", list(shape), [a])])
    assert same(out["z"], a)


def test_strings_with_empty_items_and_nuls(pair: Pair) -> None:
    items = [b"", b"\x00", b"", b"abc\x00\x00", b"\xff" * 100, b""]
    a = string_array(items, (2, 3))
    _, out = pair.roundtrip([1], [("s", STRING, [2, 3], items)])
    assert out["s"].dtype == object and out["s"].shape == (2, 3)
    assert out["s"].reshape(-1).tolist() == items
    assert all(type(x) is bytes for x in out["s"].reshape(-1))
    assert same(out["s"], a)


def test_string_scalar(pair: Pair) -> None:
    _, out = pair.roundtrip([], [("s", STRING, [], [b"\x00only\x00"])])
    assert out["s"].shape == ()
    assert out["s"][()] == b"\x00only\x00"


@given(
    dtype=st.sampled_from(NUMERIC),
    rows=st.lists(st.integers(0, 5), min_size=1, max_size=6),
    inner=st.lists(st.integers(1, 4), max_size=2),
    data=st.data(),
)
@SETTINGS
def test_multi_chunk_batch_equals_concatenation(
    dtype: str, rows: list[int], inner: list[int], data: st.DataObject
) -> None:
    """A batch gathered from several requests' chunks reads back as their concatenation,
    whatever buffer type each chunk is."""
    parts = [data.draw(hnp.arrays(NUMPY[dtype], (r, *inner))) for r in rows]
    kinds = data.draw(st.lists(st.sampled_from(["ndarray", "bytes", "bytearray", "memoryview"])))

    def as_chunk(i: int, a: np.ndarray[Any, Any]) -> Any:
        kind = kinds[i % len(kinds)] if kinds else "ndarray"
        if kind == "bytes":
            return a.tobytes()
        if kind == "bytearray":
            return bytearray(a.tobytes())
        if kind == "memoryview":
            return memoryview(a.tobytes())
        return a.reshape(-1)  # 1-d: see test_zero_size_numpy_chunk_multi_dim

    chunks = [as_chunk(i, a) for i, a in enumerate(parts)]
    batch = np.concatenate(parts)
    _, out = shared_pair().roundtrip([], [("x", dtype, list(batch.shape), chunks)])
    assert same(out["x"], batch)


@given(st.lists(st.lists(strings, max_size=5), min_size=1, max_size=5))
@SETTINGS
def test_multi_chunk_strings(requests: list[list[bytes]]) -> None:
    """For strings the chunks are the items: a batch is the requests' items in order."""
    items = [x for r in requests for x in r]
    _, out = shared_pair().roundtrip([], [("s", STRING, [len(items)], items)])
    assert out["s"].tolist() == items


def test_read_returns_views_of_the_ring(pair: Pair) -> None:
    a = np.arange(100, dtype=np.int64)
    assert records.write(pair.prod, L.KIND_RESPONSE, [], [("a", "int64", [100], [a])])
    rec = pair.cons.peek()
    assert rec is not None
    _, out = records.read(rec.payload)
    lo, hi = pair.base + L.DATA_OFFSET, pair.base + L.DATA_OFFSET + CAP
    assert lo <= out["a"].ctypes.data < hi  # no copy
    assert same(out["a"], a)
    del out
    rec.payload.release()
    pair.cons.release()


def first_block(mlen: int) -> int:
    """Payload offset of the first tensor block: 64-byte aligned in the ring, since a
    payload starts RECORD_HEADER bytes into a 64-byte aligned record."""
    return L.align(L.RECORD_HEADER + 4 + mlen) - L.RECORD_HEADER


def _block_offsets(pair: Pair, tensors: list[records.TensorSpec]) -> list[int]:
    """Offsets, within the ring's data area, of each tensor block of one record."""
    assert records.write(pair.prod, L.KIND_REQUEST, [1, "x"], tensors) is not None
    rec = pair.cons.peek()
    assert rec is not None
    payload_at = np.frombuffer(rec.payload, dtype=np.uint8).ctypes.data - pair.base
    _, out = records.read(rec.payload)
    (mlen,) = struct.unpack_from("<I", rec.payload, 0)
    table = msgpack.unpackb(rec.payload[4 : 4 + mlen])[-1]
    offsets = [payload_at + first_block(mlen) + e[3] - L.DATA_OFFSET for e in table]
    for (name, dtype, *_), off in zip(tensors, offsets, strict=True):
        if dtype != STRING and out[name].size:
            assert out[name].ctypes.data - pair.base - L.DATA_OFFSET == off
    del out
    rec.payload.release()
    pair.cons.release()
    return offsets


MIXED: list[records.TensorSpec] = [
    ("a", "float32", [3], [np.ones(3, np.float32)]),
    ("b", "int8", [5], [b"\x01" * 5]),
    ("s", STRING, [2], [b"x", b""]),
    ("c", "float64", [2, 2], [np.ones((2, 2))]),
    ("d", "uint16", [1], [b"\x00\x01"]),
]


def test_tensor_data_is_64_byte_aligned_in_the_ring(pair: Pair) -> None:
    for _ in range(3):
        offs = _block_offsets(pair, MIXED)
        assert [o % L.ALIGN for o in offs] == [0] * len(offs)


# ---- sizes ---------------------------------------------------------------------------


def test_payload_size_matches_write(pair: Pair) -> None:
    meta, total, sizes = records.payload_size([1, "sig"], MIXED)
    assert sizes == [12, 5, 8 * 3 + 1, 32, 2]
    assert total == first_block(len(meta)) + sum(L.align(n) for n in sizes)
    assert msgpack.unpackb(meta)[:2] == [1, "sig"]
    before = pair.prod.words[L.W_HEAD]
    assert records.write(pair.prod, L.KIND_REQUEST, [1, "sig"], MIXED) is not None
    assert pair.prod.words[L.W_HEAD] - before == L.record_size(total)


def test_too_large_and_full() -> None:
    p = Pair(4096)
    big = [("x", "uint8", [5000], [bytes(5000)])]
    with pytest.raises(RecordTooLarge):
        records.write(p.prod, L.KIND_REQUEST, [], big)
    half = [("x", "uint8", [2500], [bytes(2500)])]
    assert records.write(p.prod, L.KIND_REQUEST, [], half) is not None
    assert records.write(p.prod, L.KIND_REQUEST, [], half) is None  # full: no room now
    rec = p.cons.peek()
    assert rec is not None
    rec.payload.release()
    p.cons.release()
    assert records.write(p.prod, L.KIND_REQUEST, [], half) is not None
    p.close()


# ---- corrupt payloads ----------------------------------------------------------------


def payload_of(meta: Any, body: bytes = b"", pad_to: int | None = None) -> memoryview:
    """A payload laid out as records.write does: `body` at the first block. `pad_to`
    counts from the first block (the block area's size)."""
    mb = msgpack.packb(meta, use_bin_type=True)
    p = struct.pack("<I", len(mb)) + mb
    p += bytes(first_block(len(mb)) - len(p)) + body
    if pad_to is not None:
        p += bytes(first_block(len(mb)) + pad_to - len(p))
    return memoryview(p)


def good_payload() -> bytes:
    p = Pair(4096)
    tensors: list[records.TensorSpec] = [
        ("a", "int32", [2], [b"\x01\x00\x00\x00\x02\x00\x00\x00"]),
        ("s", STRING, [2], [b"ab", b""]),
    ]
    assert records.write(p.prod, L.KIND_REQUEST, [5], tensors) is not None
    rec = p.cons.peek()
    assert rec is not None
    out = bytes(rec.payload)
    rec.payload.release()
    p.close()
    return out


GOOD = good_payload()


def test_good_payload_reads() -> None:
    head, out = records.read(memoryview(GOOD))
    assert head == [5]
    assert out["a"].tolist() == [1, 2] and out["s"].tolist() == [b"ab", b""]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x01\x00",
        b"\x00\x00\x00",
        struct.pack("<I", 100) + b"\x90",  # meta longer than the payload
        struct.pack("<I", 0xFFFFFFFF),
        struct.pack("<I", 1) + b"\xc1",  # never-used msgpack byte
        struct.pack("<I", 2) + b"\x92\x01",  # truncated array
        struct.pack("<I", 1) + b"\x90",  # empty list: no table
        struct.pack("<I", 1) + b"\x05",  # not a list at all
        struct.pack("<I", 3) + b"\xa2\xff\xfe",  # invalid UTF-8 str
    ],
)
def test_corrupt_meta(payload: bytes) -> None:
    with pytest.raises(RingCorrupt):
        records.read(memoryview(payload))


@pytest.mark.parametrize(
    "entry",
    [
        ["x", 99, [1], 0, 4],  # unknown dtype code
        ["x", 0, [1], 0, 4],
        ["x", 4, [1], -64, 4],  # negative offset
        ["x", 4, [1], 0, -4],  # negative size
        ["x", 4, [1], 64, 4],  # past the end
        ["x", 4, [100], 0, 400],  # past the end
        ["x", 4, [2], 0, 4],  # 4 bytes cannot hold 2 int32
        ["x", 4, [1], 0, 8],  # nor 8 one
        ["x", 4, [-1], 0, 4],  # negative element count
        ["s", 13, [3], 0, 16],  # offsets table (32 bytes) overruns the 16-byte block
        ["s", 13, [1], 0, 15],
    ],
)
def test_corrupt_table_extent(entry: list[Any]) -> None:
    p = payload_of([1, [entry]], pad_to=64)
    with pytest.raises(RingCorrupt):
        records.read(p)


@pytest.mark.parametrize(
    "offsets, total",
    [
        ([1, 2], 2),  # does not start at 0
        ([0, 5], 4),  # runs past the block
        ([0, 3, 2, 4], 4),  # decreasing
        ([0, 1 << 63], 4),
        ([0, 2, 1 << 62, 4], 4),
    ],
)
def test_corrupt_string_offsets(offsets: list[int], total: int) -> None:
    n = len(offsets) - 1
    block = struct.pack(f"<{n + 1}Q", *offsets) + b"x" * total
    p = payload_of([[["s", 13, [n], 0, len(block)]]], block)
    with pytest.raises(RingCorrupt, match="string"):
        records.read(p)


META_END = first_block(struct.unpack_from("<I", GOOD, 0)[0])


@given(
    st.one_of(st.integers(0, 3), st.integers(META_END, len(GOOD) - 1)),
    st.integers(1, 255),
)
@settings(max_examples=200, deadline=None)
def test_corrupt_length_or_block_is_detected_or_harmless(pos: int, xor: int) -> None:
    """Flip bits in the meta length or in the tensor blocks of a good payload: read either
    raises RingCorrupt or returns arrays that lie inside the payload, never another
    exception. (Flips inside the msgpack meta: test_structurally_wrong_meta_...)"""
    buf = bytearray(GOOD)
    buf[pos] ^= xor
    try:
        _, out = records.read(memoryview(buf))
    except RingCorrupt:
        return
    lo = np.frombuffer(buf, np.uint8).ctypes.data
    for a in out.values():
        if a.dtype != object and a.size:
            assert lo <= a.ctypes.data and a.ctypes.data + a.nbytes <= lo + len(buf)
        if a.dtype == object:
            assert sum(len(x) for x in a.reshape(-1)) <= len(buf)


@pytest.mark.parametrize(
    "meta",
    [
        [[["x", 4, [1], 0]]],  # 4 fields
        [[None]],  # entry not a list
        [5, 6],  # table not a list
        [[["x", 4, "ab", 0, 4]]],  # shape not a list
        [[["x", 4, [1], "0", 4]]],  # offset not an int
        [[["x", 4, [-2, -2], 0, 16]]],  # shape with negative dims and a valid count
        [[["s", 13, [-1], 0, 8]]],  # string shape with a negative count
        [[["x", 6, [0, 2**64 - 1], 0, 0]]],  # zero elements, a dim numpy cannot hold
        [[["x", 6, [0] * 65, 0, 0]]],  # more dims than numpy allows
        [[["s", 13, [0, 2**63], 0, 8]]],
    ],
)
def test_structurally_wrong_meta_raises_ring_corrupt(meta: list[Any]) -> None:
    with pytest.raises(RingCorrupt):
        records.read(payload_of(meta, pad_to=64))
