"""Framing and message shapes of the wire protocol (protocol.md, version 1). Pure.

A frame is a 4-byte unsigned big-endian length L, then L bytes holding one msgpack
map. `FrameDecoder` is incremental (bytes in, bodies out) and never allocates a body
larger than `max_frame_bytes`; it reports an oversize length instead so the caller
can answer RESOURCE_EXHAUSTED and close.
"""

from __future__ import annotations

import mmap
import struct
from typing import Any

import msgpack
import msgspec

from .errors import INVALID_ARGUMENT, ProtocolError, clip

HEADER = struct.Struct(">I")
MAX_UINT64 = (1 << 64) - 1


class FrameTooLarge(Exception):
    """A frame header announced more than the limit `key` allows."""

    def __init__(self, length: int, limit: int, key: str = "max_frame_bytes") -> None:
        super().__init__(f"frame length {length} exceeds {key} {limit}")
        self.length = length
        self.limit = limit
        self.key = key


# A body larger than the scratch buffer gets its own buffer, grown as its bytes arrive:
# never more than twice what was received (or GROW_MIN), so a header that announces
# 256 MiB and sends nothing commits nothing. The buffer is an anonymous mapping that
# grows with mremap (mmap.resize), which moves pages instead of copying them, so a body
# is still read in place. A finished body's mapping is kept for the next large body
# (SPARE_BYTES in all, shared by every reader): memory already committed, whose pages
# are already faulted in, where a fresh buffer would fault every page again.
GROW_MIN = 256 * 1024
SPARE_BYTES = 64 << 20
_spares: list[mmap.mmap] = []


def _new_map(cap: int) -> mmap.mmap:
    return mmap.mmap(-1, cap, flags=mmap.MAP_PRIVATE)


def _take(cap: int) -> mmap.mmap:
    """A mapping of at least `cap` bytes: a spare if there is one."""
    if _spares:
        m = _spares.pop()
        if len(m) >= cap:
            return m
        try:
            m.resize(cap)
            return m
        except (BufferError, OSError, SystemError):
            m.close()
    return _new_map(cap)


def _recycle(m: mmap.mmap) -> None:
    """Keep a finished body's mapping as a spare, unless a view of it is still alive."""
    try:
        m.resize(len(m))  # refused while any buffer export of it exists
    except (BufferError, OSError, SystemError):
        return  # still viewed somewhere: leave it to the garbage collector
    if sum(map(len, _spares)) + len(m) <= SPARE_BYTES:
        _spares.append(m)
    else:
        m.close()


def _grow(body: mmap.mmap, filled: int, need: int) -> mmap.mmap:
    cap = min(need, max(2 * len(body), GROW_MIN))
    try:
        body.resize(cap)
        return body
    except (BufferError, OSError, SystemError):
        pass  # a view of it is still alive, or no mremap: copy instead
    new = _new_map(cap)
    new[:filled] = body[:filled]
    return new


# msgspec writes the same bytes as msgpack.packb(use_bin_type=True) (the smallest
# form of every int, float64, str8 for short strings, bin for bytes; tests/test_wire.py
# compares them) in a fifth of the time: a reply is packed once per request.
_encoder = msgspec.msgpack.Encoder()
_packb = _encoder.encode


def pack(obj: dict[str, Any]) -> bytes:
    body = _packb(obj)
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


def _encode(obj: Any, buf: bytearray, parts: list[bytes | memoryview]) -> None:
    if isinstance(obj, dict):
        n = len(obj)
        if n < 16:
            buf.append(0x80 | n)
        else:
            buf += b"\xde" + struct.pack(">H", n) if n < 65536 else b"\xdf" + struct.pack(">I", n)
        for k, v in obj.items():
            _encode(k, buf, parts)
            _encode(v, buf, parts)
    elif isinstance(obj, (list, tuple)) and any(isinstance(x, (dict, memoryview)) for x in obj):
        n = len(obj)
        if n < 16:
            buf.append(0x90 | n)
        else:
            buf += b"\xdc" + struct.pack(">H", n) if n < 65536 else b"\xdd" + struct.pack(">I", n)
        for v in obj:
            _encode(v, buf, parts)
    elif isinstance(obj, (bytes, bytearray, memoryview)) and _nbytes(obj) > INLINE_LIMIT:
        if isinstance(obj, memoryview) and (obj.format != "B" or obj.ndim != 1):
            obj = obj.cast("B") if obj.c_contiguous else memoryview(obj.tobytes())
        n = len(obj)
        # The same bin header msgpack itself would write, so both encoders agree.
        buf += b"\xc5" + struct.pack(">H", n) if n < 65536 else b"\xc6" + struct.pack(">I", n)
        parts.append(bytes(buf))
        buf.clear()
        parts.append(obj if isinstance(obj, (bytes, memoryview)) else bytes(obj))
    elif isinstance(obj, memoryview):
        buf += _packb(obj.tobytes())
    else:
        buf += _packb(obj)


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


class FrameDecoder:
    """Incremental frame splitter.

    Bodies that arrive whole inside one chunk are returned as views of that chunk (no
    copy); a body spread over several chunks is gathered into one buffer of exactly its
    length, allocated only once its length has been checked against the limit. A
    returned body is valid until the next call to `feed`.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._head = bytearray()
        self._body: mmap.mmap | None = None
        self._filled = 0
        self._need = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """Return the complete frame bodies; raise FrameTooLarge on an oversize length."""
        out: list[memoryview] = []
        mv = memoryview(data).cast("B")
        pos, end = 0, len(mv)
        while pos < end:
            body = self._body
            if body is not None:
                take = min(self._need - self._filled, end - pos)
                while self._filled + take > len(body):
                    body = self._body = _grow(body, self._filled, self._need)
                body[self._filled : self._filled + take] = mv[pos : pos + take]
                self._filled += take
                pos += take
                if self._filled == self._need:
                    out.append(memoryview(body))
                    self._body = None
                continue
            if self._head or end - pos < 4:
                need = 4 - len(self._head)
                self._head += mv[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._head) < 4:
                    break
                (length,) = HEADER.unpack(self._head)
                self._head.clear()
            else:
                (length,) = HEADER.unpack_from(mv, pos)
                pos += 4
            if length > self.max_frame_bytes:
                raise FrameTooLarge(length, self.max_frame_bytes)
            if end - pos >= length:
                out.append(mv[pos : pos + length])
                pos += length
            else:
                self._body = _new_map(min(length, max(2 * (end - pos), GROW_MIN)))
                self._filled, self._need = 0, length
        return out

    @property
    def buffered(self) -> int:
        return len(self._head) + (self._filled if self._body is not None else 0)


# A connection's own read buffer: frames up to this size are decoded from views of it.
# It is an anonymous mapping, not a bytearray: a bytearray of this size comes from the
# malloc heap once glibc's adaptive mmap threshold has risen past it (the first free of
# such a buffer raises it), is zero-filled at once, and connections that come and go
# leave their buffers' holes behind the heap's top, which glibc cannot give back. A
# mapping costs only the pages a connection's frames touch and is returned whole to the
# kernel when the connection goes.
SCRATCH = 256 * 1024


class FrameReader:
    """Frame splitting for a buffered protocol (asyncio.BufferedProtocol).

    The transport reads straight into our memory: small frames into a reused scratch
    buffer, and a large body, once its length is known and checked, straight into a
    buffer of exactly that size. Returned bodies are views, valid until the next
    `get_buffer`.
    """

    def __init__(
        self, max_frame_bytes: int, scratch: int = SCRATCH, limit_key: str = "max_frame_bytes"
    ) -> None:
        # The limit may change between reads (a smaller one until `auth`); `limit_key`
        # names it in the error.
        self.max_frame_bytes = max_frame_bytes
        self.limit_key = limit_key
        self._scratch = _new_map(scratch)
        self._sview = memoryview(self._scratch)
        self._start = 0
        self._end = 0
        self._body: mmap.mmap | None = None
        self._filled = 0
        self._need = 0
        self._done: mmap.mmap | None = None  # the last large body handed out
        # An oversize length, reported after the whole frames read before it.
        self.error: FrameTooLarge | None = None
        # At most this many bodies per call (None: all); `more` says some were held back
        # (read them with buffer_updated(0)). One, until `auth` has raised the limit.
        self.max_frames: int | None = None
        self.more = False

    def resize_scratch(self, size: int) -> None:
        """Swap the scratch buffer for one of `size` bytes, keeping unread data (a
        connection reads with a small one until `auth`). Bodies already returned stay
        valid: they hold the old buffer."""
        if self._body is not None:
            return  # only between large bodies; the next call will do
        n = self._end - self._start
        new = _new_map(max(size, n))
        new[:n] = self._sview[self._start : self._end]
        self._scratch, self._sview = new, memoryview(new)
        self._start, self._end = 0, n

    def in_scratch(self, body: memoryview) -> bool:
        """`body` is a view of the scratch buffer, which the next reads overwrite (a
        large body has a mapping of its own, which its views keep alive)."""
        return body.obj is self._scratch

    @property
    def partial(self) -> bool:
        """Part of a frame has been read and its end has not."""
        return self._body is not None or self._end > self._start

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        if self._done is not None:  # its consumer has had it for a whole turn: reuse
            _recycle(self._done)
            self._done = None
        if self._body is not None:
            if self._filled == len(self._body):
                self._body = _grow(self._body, self._filled, self._need)
            # Never past the frame's end: a spare may be larger than this body.
            return memoryview(self._body)[self._filled : self._need]
        if self._start:
            n = self._end - self._start
            self._sview[:n] = self._sview[self._start : self._end]
            self._start, self._end = 0, n
        return self._sview[self._end :]

    def buffer_updated(self, nbytes: int) -> list[memoryview]:
        """Account for `nbytes` read; return complete bodies. An oversize length sets
        `error` (the frames before it are still returned) and nothing more is read."""
        body = self._body
        if body is not None:
            self._filled += nbytes
            if self._filled < self._need:
                return []
            self._body = None
            self._done = body
            return [memoryview(body)[: self._need]]
        self._end += nbytes
        out: list[memoryview] = []
        sv, start, end = self._sview, self._start, self._end
        self.more = False
        while end - start >= 4:
            if self.max_frames is not None and len(out) >= self.max_frames:
                self.more = True
                break
            (length,) = HEADER.unpack_from(sv, start)
            if length > self.max_frame_bytes:
                self.error = FrameTooLarge(length, self.max_frame_bytes, self.limit_key)
                start = end
                break
            have = end - start - 4
            if have >= length:
                out.append(sv[start + 4 : start + 4 + length])
                start += 4 + length
                continue
            if 4 + length > len(sv):
                # Too big for scratch: give the body its own buffer, read into it directly,
                # sized by what has arrived so far (see GROW_MIN), not by the header.
                big = _take(min(length, max(2 * have, GROW_MIN)))
                big[:have] = sv[start + 4 : end]
                self._body, self._filled, self._need = big, have, length
                start = end = 0
            break
        if start == end:
            start = end = 0
        self._start, self._end = start, end
        return out


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
