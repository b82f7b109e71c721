"""The payload of a ring record: a small msgpack head, then 64-byte aligned tensors.

    payload
    +----------+----------------------------+-----+------------------------------+
    | mlen u32 | meta (msgpack, mlen bytes) | pad | tensor blocks, 64-aligned    |
    +----------+----------------------------+-----+------------------------------+
    meta = [*head, table]; table = [[name, dtype_code, shape, offset, nbytes], ...]
    offsets are relative to the first tensor block, which starts where the ring
    address is 64-byte aligned: the payload itself starts RECORD_HEADER (32) bytes
    into a 64-aligned record, so the block starts at align(32 + 4 + mlen) - 32.

A numeric block is the elements in C order, little-endian. A string block is
u64 offsets[n + 1] (relative to the end of the offsets array) then the bytes.

A tensor is written from a list of chunks so a batch is gathered straight into the
ring, one copy per request, and read back as numpy views of the ring: no copies.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from .fdslice import FdSlice
from .layout import RECORD_HEADER, align
from .ring import Ring, RingCorrupt
from .tensors import CODE_DTYPES, DTYPE_CODES, MAX_RANK, NUMPY, STRING, byte_view, count

U32 = struct.Struct("<I")
# msgspec, as ipc/wire.py: the bytes msgpack writes, read back the same, in less time
# (a record's meta is packed and read once a batch on each side). A length a worker
# writes is checked against the bytes that follow before anything is allocated.
_packb = msgspec.msgpack.Encoder().encode
_unpackb = msgspec.msgpack.Decoder().decode
Buffer = bytes | bytearray | memoryview

# (name, dtype, shape, chunks): numeric chunks are buffers (or FdSlices of a client
# region) whose bytes are concatenated; string chunks are the items (bytes) themselves.
TensorSpec = tuple[str, str, Sequence[int], Sequence[Any]]


def _first_block(mlen: int) -> int:
    """Payload offset of the first tensor block: 64-byte aligned in the ring."""
    return align(RECORD_HEADER + 4 + mlen) - RECORD_HEADER


def _chunk_nbytes(c: Any) -> int:
    return len(c) if isinstance(c, (bytes, bytearray)) else c.nbytes  # type: ignore[no-any-return]


def payload_size(head: list[Any], tensors: Sequence[TensorSpec]) -> tuple[bytes, int, list[int]]:
    """(meta bytes, total payload size, block sizes) for `write`."""
    table = []
    off = 0
    sizes = []
    codes = DTYPE_CODES
    for name, dtype, shape, chunks in tensors:
        if dtype == STRING:
            n = 8 * (len(chunks) + 1) + sum(map(len, chunks))
        elif len(chunks) == 1:
            n = _chunk_nbytes(chunks[0])
        else:
            n = sum(map(_chunk_nbytes, chunks))
        sizes.append(n)
        table.append([name, codes[dtype], list(shape), off, n])
        off = align(off + n)
    meta = _packb([*head, table])
    return meta, _first_block(len(meta)) + off, sizes


def write(ring: Ring, kind: int, head: list[Any], tensors: Sequence[TensorSpec]) -> int | None:
    """Write one record; return its seq, or None if the ring has no room now.

    Raises ring.RecordTooLarge when it could never fit.
    """
    meta, total, sizes = payload_size(head, tensors)
    view = ring.try_reserve(total)
    if view is None:
        return None
    mlen = len(meta)
    U32.pack_into(view, 0, mlen)
    view[4 : 4 + mlen] = meta
    pos = _first_block(mlen)
    for (_, dtype, _, chunks), size in zip(tensors, sizes, strict=True):
        if dtype == STRING:
            _write_strings(view, pos, chunks)
        else:
            p = pos
            for c in chunks:
                tc = type(c)
                if tc is bytes or (tc is memoryview and c.format == "B" and c.ndim == 1):
                    # Flat bytes (a request's data as decoded): copied as they are.
                    n = len(c)
                    view[p : p + n] = c
                    p += n
                    continue
                n = _chunk_nbytes(c)
                if n:
                    if tc is FdSlice:
                        # A client region: copied by pread (a truncate is a short read,
                        # which the caller reports, never SIGBUS); checked after commit.
                        c.read_into(view[p : p + n])
                    else:
                        view[p : p + n] = byte_view(c)
                    p += n
        pos += align(size)
    view.release()
    return ring.commit(kind)


def _write_strings(view: memoryview, pos: int, items: Sequence[bytes]) -> None:
    n = len(items)
    offs = np.zeros(n + 1, dtype="<u8")
    if n:
        np.cumsum([len(x) for x in items], out=offs[1:])
    base = pos + 8 * (n + 1)
    view[pos:base] = offs.tobytes()
    for x, o in zip(items, offs[:-1].tolist(), strict=True):
        view[base + o : base + o + len(x)] = x


def read(payload: memoryview) -> tuple[list[Any], dict[str, np.ndarray[Any, Any]]]:
    """Decode a record payload into (head, {name: array}); arrays view the ring.

    Every length and offset is checked against the payload before use.
    """
    size = len(payload)
    if size < 4:
        raise RingCorrupt("record payload shorter than its meta length")
    (mlen,) = U32.unpack_from(payload, 0)
    if 4 + mlen > size:
        raise RingCorrupt(f"record meta of {mlen} bytes overruns a {size}-byte payload")
    try:
        meta = _unpackb(payload[4 : 4 + mlen])
        *head, table = meta
    except Exception as exc:
        raise RingCorrupt(f"record meta is not valid: {exc}") from None
    if type(table) is not list:
        raise RingCorrupt("record tensor table is not a list")
    base = _first_block(mlen)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for entry in table:
        # Exact type checks: the decoder yields exactly these, and bool is not a size.
        if type(entry) is not list or len(entry) != 5:
            raise RingCorrupt(f"record tensor entry {entry!r} is malformed")
        name, code, shape, off, nbytes = entry
        if type(shape) is list and len(shape) > MAX_RANK:  # before any product of it
            raise RingCorrupt(f"record tensor: rank {len(shape)} exceeds MAX_RANK {MAX_RANK}")
        if (
            type(name) is not str
            or type(shape) is not list
            or type(off) is not int
            or type(nbytes) is not int
            or type(code) is not int
            or not all(type(d) is int and d >= 0 for d in shape)
        ):
            raise RingCorrupt(f"record tensor entry {entry!r} is malformed")
        dtype = CODE_DTYPES.get(code)
        if dtype is None or off < 0 or nbytes < 0 or base + off + nbytes > size:
            raise RingCorrupt(f"record tensor {name!r}: bad dtype or extent")
        n = shape[0] if len(shape) == 1 else count(shape)
        try:
            if dtype == STRING:
                a = _read_strings(payload, base + off, nbytes, n)
                if len(shape) != 1:
                    a = a.reshape(shape)
            else:
                dt = NUMPY[dtype]
                if n * dt.itemsize != nbytes:
                    raise RingCorrupt(f"record tensor {name!r}: {nbytes} bytes for shape {shape}")
                # One call, its arguments by position: numpy parses keywords slowly, and
                # this runs for every output of every batch.
                a = np.ndarray(shape, dt, payload, base + off)
        except ValueError:  # a zero-size shape numpy cannot hold: too many dims, or huge
            raise RingCorrupt(f"record tensor {name!r}: shape {shape} is not valid") from None
        out[name] = a
    return head, out


def _read_strings(payload: memoryview, pos: int, nbytes: int, n: int) -> np.ndarray[Any, Any]:
    table = 8 * (n + 1)
    if table > nbytes:
        raise RingCorrupt("string tensor: offsets overrun the block")
    offs = np.frombuffer(payload, dtype="<u8", count=n + 1, offset=pos).tolist()
    data = pos + table
    limit = nbytes - table
    if offs[0] != 0 or offs[-1] > limit or any(a > b for a, b in itertools.pairwise(offs)):
        raise RingCorrupt("string tensor: offsets out of order or out of bounds")
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = bytes(payload[data + offs[i] : data + offs[i + 1]])
    return out
