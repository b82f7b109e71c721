"""Message codecs of the wire protocol (protocol.md, version 1). Pure.

A frame is a 4-byte unsigned big-endian length L, then L bytes holding one msgpack
map. This module packs messages into frames and decodes and checks a frame's body;
splitting a byte stream into bodies is `framereader`'s.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import msgspec

from .errors import INVALID_ARGUMENT, ProtocolError, clip

HEADER = struct.Struct(">I")
MAX_UINT64 = (1 << 64) - 1


# msgspec writes the same bytes as msgpack.packb(use_bin_type=True) (the smallest
# form of every int, float64, str8 for short strings, bin for bytes; tests/test_wire.py
# compares them) in a fifth of the time: a reply is packed once per request.
_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode


def pack(obj: dict[str, Any]) -> bytes:
    body = encode(obj)
    return HEADER.pack(len(body)) + body


def pack_parts(obj: dict[str, Any]) -> list[bytes | memoryview]:
    """Like `pack`, but a large `bytes`/`memoryview` value is returned as its own part.

    Lets a sender hand tensor bytes straight to writev/sendmsg instead of copying them
    into one msgpack buffer first.
    """
    parts: list[bytes | memoryview] = []
    buf = bytearray()
    _encode(obj, buf, parts)
    parts.append(bytes(buf))
    total = sum(len(p) for p in parts)
    return [HEADER.pack(total), *parts]


# Bytes values up to this size are packed into the frame (copied at once); larger
# ones are sent by reference, so they must stay valid until written.
INLINE_LIMIT = 4096


def _sized(n: int, fix: int, tag16: bytes, tag32: bytes) -> bytes:
    if n < 16:
        return bytes((fix | n,))
    return tag16 + n.to_bytes(2, "big") if n < 65536 else tag32 + n.to_bytes(4, "big")


def map_header(n: int) -> bytes:
    """The msgpack header of a map of `n` pairs, as msgpack and msgspec write it."""
    return _sized(n, 0x80, b"\xde", b"\xdf")


def array_header(n: int) -> bytes:
    return _sized(n, 0x90, b"\xdc", b"\xdd")


def bin_header(n: int) -> bytes:
    if n < 256:
        return b"\xc4" + bytes((n,))
    return b"\xc5" + n.to_bytes(2, "big") if n < 65536 else b"\xc6" + n.to_bytes(4, "big")


def _encode(obj: Any, buf: bytearray, parts: list[bytes | memoryview]) -> None:
    if isinstance(obj, dict):
        buf += map_header(len(obj))
        for k, v in obj.items():
            _encode(k, buf, parts)
            _encode(v, buf, parts)
    elif isinstance(obj, (list, tuple)) and any(isinstance(x, (dict, memoryview)) for x in obj):
        buf += array_header(len(obj))
        for v in obj:
            _encode(v, buf, parts)
    elif isinstance(obj, (bytes, bytearray, memoryview)) and _nbytes(obj) > INLINE_LIMIT:
        if isinstance(obj, memoryview) and (obj.format != "B" or obj.ndim != 1):
            obj = obj.cast("B") if obj.c_contiguous else memoryview(obj.tobytes())
        n = len(obj)
        buf += bin_header(n)  # the one msgpack itself writes, so both encoders agree
        parts.append(bytes(buf))
        buf.clear()
        parts.append(obj if isinstance(obj, (bytes, memoryview)) else bytes(obj))
    elif isinstance(obj, memoryview):
        buf += encode(obj.tobytes())
    else:
        buf += encode(obj)


def _nbytes(obj: bytes | bytearray | memoryview) -> int:
    return obj.nbytes if isinstance(obj, memoryview) else len(obj)


# A one-byte msgpack array or map decodes into a 56-64 byte Python object: a 256 MiB
# frame of empty arrays would become 16 GB of lists (and minutes of garbage collection).
# A request holds a handful of containers (a map per tensor, a shape); a frame past
# BUDGET_FROM bytes may hold at most MAX_CONTAINERS of them. Smaller frames are decoded
# without the count (it doubles the decode time of a small request), their worst case
# being a few MiB.
MAX_CONTAINERS = 65536
BUDGET_FROM = 64 * 1024


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_CONTAINERS

    def __call__(self, obj: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise ProtocolError(
                INVALID_ARGUMENT,
                f"frame body: expected at most {MAX_CONTAINERS} msgpack arrays and maps "
                "in one frame, received more",
            )
        return obj


def unpack_body(body: bytes | memoryview) -> Any:
    """Decode one frame body. Raises ProtocolError(INVALID_ARGUMENT) on any bad msgpack."""
    try:
        if len(body) > BUDGET_FROM:
            budget = _Budget()
            msg = msgpack.unpackb(
                body,
                raw=False,
                strict_map_key=False,
                ext_hook=_no_ext,
                list_hook=budget,
                object_hook=budget,
            )
        else:
            msg = msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=_no_ext)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(
            INVALID_ARGUMENT, f"frame body is not valid msgpack: {clip(str(exc))}"
        ) from None
    _reject_timestamps(msg)
    return msg


# msgpack decodes its timestamp extension (type -1) itself, without calling ext_hook,
# so the decoded message is walked for one. The walk looks at containers only: it costs
# about a microsecond for a request, where scanning the body's bytes for the encodings
# of a timestamp took 8 us on a 3 KiB tensor.
_SCALARS = frozenset((bytes, str, int, float, bool, type(None)))


def _reject_timestamps(obj: Any) -> None:
    stack = [obj]
    pop, push = stack.pop, stack.append
    while stack:
        o = pop()
        if type(o) is dict:
            for k, v in o.items():
                if type(k) not in _SCALARS:
                    push(k)
                if type(v) not in _SCALARS:
                    push(v)
        elif type(o) is list:
            if not _SCALARS.issuperset(map(type, o)):  # C speed for long string lists
                stack.extend(v for v in o if type(v) not in _SCALARS)
        elif isinstance(o, msgpack.Timestamp):
            raise ProtocolError(
                INVALID_ARGUMENT,
                "msgpack extension types are not accepted (received a timestamp, type -1)",
            )


def _no_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(
        INVALID_ARGUMENT, f"msgpack extension types are not accepted (received ext type {code})"
    )


def request_id(msg: Any) -> int | None:
    """The `id` of a decoded request if it is a valid uint64, else None."""
    if isinstance(msg, dict):
        rid = msg.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= MAX_UINT64:
            return rid
    return None


def check_request(msg: Any) -> tuple[int, str]:
    """Validate the envelope of a request; return (id, op)."""
    if not isinstance(msg, dict):
        raise ProtocolError(
            INVALID_ARGUMENT, f"frame body: expected a msgpack map, received {type(msg).__name__}"
        )
    rid = request_id(msg)
    if rid is None:
        got = msg.get("id", "<absent>")
        raise ProtocolError(
            INVALID_ARGUMENT,
            f"field 'id': expected an unsigned 64-bit integer, received {clip(got)}",
        )
    op = msg.get("op")
    if not isinstance(op, str):
        got = msg.get("op", "<absent>")
        raise ProtocolError(
            INVALID_ARGUMENT, f"field 'op': expected a string, received {clip(got)}"
        )
    return rid, op


def ok(rid: int | None, **fields: Any) -> dict[str, Any]:
    return {"id": rid, "ok": True, **fields}


def error(rid: int | None, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"code": code, "message": message}}
