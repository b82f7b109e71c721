"""Reading frames (protocol.md: a 4-byte unsigned big-endian length L, then L bytes of
one msgpack map) from a byte stream, without copying and without trusting the length.

`FrameDecoder` is incremental (bytes in, bodies out), for clients and tools reading a
socket. `FrameReader` serves an asyncio.BufferedProtocol (the frontend): the transport
reads straight into its buffers. Neither trusts a length: a body's buffer grows with
the bytes that arrive, and a length past the limit is reported (FrameTooLarge) so the
caller can answer RESOURCE_EXHAUSTED and close. What a body holds is `wire`'s.
"""

from __future__ import annotations

import mmap

from .wire import HEADER


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
