"""A batch's `ok` replies, each packed from pieces into the frame `wire.pack` writes for
its reply map, without building the map.

Every reply split from one batch names the same model and version, and the same
outputs with the same dtypes and row shapes: only the request id, its rows and their
bytes differ. So the pieces they share are encoded once, by the encoder `wire.pack`
uses, and kept for the next batch of the same layout (frontend/replies.py); a
request's frame is the join of those pieces with its id, its first dimension and a
slice of each output. tests/test_batchreplies.py holds every frame to `wire.pack`'s
bytes for the same map.
"""

from __future__ import annotations

from collections.abc import Sequence

from .wire import HEADER, array_header, bin_header, encode, map_header

# The keys of an ok reply and of a wire tensor, in the order the maps are written
# (frontend/replies.py builds the same maps in the same order).
_ID = b"\x85" + encode("id")
_DATA = encode("data")


# One output of the batch: (name, protocol dtype, row shape, bytes per row).
Layout = tuple[str, str, Sequence[int], int]


class BatchReplies:
    """The reply pieces of one model, version and output layout; each frame joins them
    with a request's id and rows and the batch's outputs, as flat byte views."""

    __slots__ = ("_cut", "_head", "_outs", "_rows", "_size")

    def __init__(self, model: str, version: int, outputs: Sequence[Layout]) -> None:
        self._head = (
            encode("ok")
            + encode(True)
            + encode("model")
            + encode(model)
            + encode("version")
            + encode(version)
            + encode("outputs")
            + map_header(len(outputs))
        )
        # Per output: what precedes its first dimension, what follows it up to the
        # data's bin header, and the bytes of one row.
        self._outs = [
            (
                encode(name)
                + map_header(3)
                + encode("dtype")
                + encode(dtype)
                + encode("shape")
                + array_header(1 + len(tail)),
                b"".join(encode(d) for d in tail) + _DATA,
                stride,
            )
            for name, dtype, tail, stride in outputs
        ]
        # For the last number of rows seen (the requests of a batch mostly hold the
        # same): per output, every byte before its data, the bytes of a row and of
        # the data; and the size of a frame's body but the id.
        self._rows = -1
        self._cut: list[tuple[bytes, int, int]] = []
        self._size = 0

    def _cut_for(self, rows: int) -> None:
        first = encode(rows)
        self._cut = [
            (before + first + after + bin_header(rows * stride), stride, rows * stride)
            for before, after, stride in self._outs
        ]
        self._size = len(_ID) + len(self._head) + sum(len(c[0]) + c[2] for c in self._cut)
        self._rows = rows

    def frame(self, cid: int, start: int, rows: int, views: Sequence[memoryview]) -> bytes:
        """The frame of the ok reply to request `cid`, which holds `rows` rows of the
        batch from row `start`; `views` are the outputs' bytes, in layout order."""
        if rows != self._rows:
            self._cut_for(rows)
        rid = encode(cid)
        parts: list[bytes | memoryview] = [HEADER.pack(self._size + len(rid)), _ID, rid, self._head]
        cut = self._cut
        for i in range(len(cut)):
            before, stride, n = cut[i]
            at = start * stride
            parts.append(before)
            parts.append(views[i][at : at + n])
        return b"".join(parts)
