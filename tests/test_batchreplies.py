"""ipc/batchreplies.py: a batch's ok replies packed from pieces are, byte for byte, the
frames `wire.pack` writes for the reply maps frontend/replies.py would build, at every
size where msgpack changes its header (fixstr/str8, fixint/uint8-64, bin8/16/32,
fixarray/array16, fixmap/map16)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ringserve.ipc import wire
from ringserve.ipc.batchreplies import BatchReplies
from ringserve.ipc.tensors import byte_view
from ringserve.ipc.wire import array_header, bin_header, map_header

names = st.text(min_size=0, max_size=300)
ints = st.one_of(
    st.integers(0, 300), st.sampled_from([127, 128, 255, 256, 65535, 65536, 2**32, 2**64 - 1])
)
dims = st.one_of(st.integers(0, 20), st.sampled_from([255, 256, 65536, 2**40]))


@st.composite
def batches(draw: st.DrawFn) -> dict[str, Any]:
    n_out = draw(st.sampled_from([1, 2, 3, 17]))
    outs = []
    for i in range(n_out):
        tail = draw(st.lists(st.integers(0, 5), max_size=3))
        dtype = draw(st.sampled_from(["float32", "int64", "uint8"]))
        outs.append((f"{draw(names)}{i}", dtype, tail))
    rows = draw(st.lists(st.integers(1, 40), min_size=1, max_size=6))
    return {
        "model": draw(names),
        "version": draw(ints),
        "outs": outs,
        "rows": rows,
        "cids": draw(st.lists(ints, min_size=len(rows), max_size=len(rows))),
    }


@settings(max_examples=200, deadline=None)
@given(batches())
def test_frames_equal_wire_pack_of_the_reply_map(b: dict[str, Any]) -> None:
    """Two batches of the same layout through one BatchReplies (the frontend keeps it
    for the next batch): each frame is the map's, with that batch's bytes."""
    total = sum(b["rows"])
    layout = []
    for name, dtype, tail in b["outs"]:
        stride = np.zeros((total, *tail), dtype).strides[0]
        layout.append((name, dtype, tail, stride))
    frames = BatchReplies(b["model"], b["version"], layout)
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        arrays = {n: rng.integers(0, 255, size=(total, *t)).astype(d) for n, d, t, _ in layout}
        views = [byte_view(arrays[name]) for name, _, _, _ in layout]
        start = 0
        for cid, rows in zip(b["cids"], b["rows"], strict=True):
            want = wire.pack(
                {
                    "id": cid,
                    "ok": True,
                    "model": b["model"],
                    "version": b["version"],
                    "outputs": {
                        name: {
                            "dtype": dtype,
                            "shape": [rows, *tail],
                            "data": byte_view(arrays[name])[
                                start * stride : (start + rows) * stride
                            ],
                        }
                        for (name, dtype, tail, stride) in layout
                    },
                }
            )
            assert frames.frame(cid, start, rows, views) == want
            start += rows


def test_bin_header_at_every_size_boundary() -> None:
    for n in (0, 1, 255, 256, 65535, 65536, 70000):
        assert bin_header(n) + b"x" * n == wire.encode(b"x" * n)


def test_array_and_map_headers_at_every_size_boundary() -> None:
    for n in (0, 15, 16, 65535, 65536):
        assert array_header(n) == wire.encode([0] * n)[: len(array_header(n))]
        assert wire.encode([0] * n) == array_header(n) + b"\x00" * n
        m = {str(i): 0 for i in range(n)}
        assert wire.encode(m).startswith(map_header(n))
        assert len(wire.encode(m)) == len(map_header(n)) + sum(len(wire.encode(k)) + 1 for k in m)
