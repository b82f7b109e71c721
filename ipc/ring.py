"""Single-producer single-consumer ring of variable-size records in shared memory.

Pure memory operations: no waiting, no syscalls. Waiting lives in `wake.py`, so the
same ring serves a blocking worker and an event-loop frontend. A record too large for
the ring raises `RecordTooLarge`; a full ring returns None from `try_reserve` and the
caller decides how long to wait.
"""

from __future__ import annotations

import mmap

from . import layout as L

# Module constants: attribute lookups on `L` cost more than the arithmetic they feed.
_HDR = L.RECORD_HEADER
_PACK = L.RECORD.pack_into
_UNPACK = L.RECORD.unpack_from
_COMMIT = L.commit_word
_W_HEAD, _W_HEAD_SEQ, _W_TAIL, _W_TAIL_SEQ = L.W_HEAD, L.W_HEAD_SEQ, L.W_TAIL, L.W_TAIL_SEQ


class RingError(Exception):
    pass


class RingCorrupt(RingError):
    """A header read from shared memory failed validation; the peer is not trusted."""


class RecordTooLarge(RingError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"record of {size} bytes exceeds the ring's limit of {limit} bytes")
        self.size = size
        self.limit = limit


class Record:
    # A plain class, not a dataclass: mypyc's dataclass support cannot resolve a
    # `memoryview` field (ringserve/native.py compiles this module).
    __slots__ = ("kind", "payload", "seq")

    def __init__(self, kind: int, seq: int, payload: memoryview) -> None:
        self.kind = kind
        self.seq = seq
        self.payload = payload


class Ring:
    """One side of a ring over `buf` (an mmap or any writable buffer).

    `create=True` initialises the header (the owner does this once); otherwise the
    header is validated against the buffer's size.
    """

    def __init__(
        self,
        buf: memoryview | bytearray | mmap.mmap,
        *,
        create: bool = False,
        capacity: int = 0,
        rewind_min: int = L.REWIND_MIN,
    ):
        mv = memoryview(buf).cast("B")
        if create:
            if capacity <= 0 or capacity % L.ALIGN:
                raise ValueError(f"capacity must be a positive multiple of {L.ALIGN}")
            if len(mv) < L.segment_size(capacity):
                raise ValueError("buffer smaller than the segment")
            mv[: L.DATA_OFFSET] = bytes(L.DATA_OFFSET)
        self._words = mv[: L.HEADER_WORDS * 8].cast("Q")
        w = self._words
        if create:
            w[L.W_CAPACITY] = capacity
            w[L.W_VERSION] = L.LAYOUT_VERSION
            w[L.W_MAGIC] = L.MAGIC
        if w[L.W_MAGIC] != L.MAGIC or w[L.W_VERSION] != L.LAYOUT_VERSION:
            raise RingCorrupt("ring header: bad magic or layout version")
        cap = w[L.W_CAPACITY]
        if cap <= 0 or cap % L.ALIGN or L.segment_size(cap) > len(mv):
            raise RingCorrupt(f"ring header: capacity {cap} does not fit a {len(mv)}-byte segment")
        self.capacity = cap
        self.max_payload = L.max_payload(cap)
        self._data = mv[L.DATA_OFFSET : L.DATA_OFFSET + cap]
        # Each side caches the word it alone writes.
        self._head = w[L.W_HEAD]
        self._head_seq = w[L.W_HEAD_SEQ]
        self._tail = w[L.W_TAIL]
        self._tail_seq = w[L.W_TAIL_SEQ]
        self.rewind_min = rewind_min
        self._pending = (0, 0, 0)  # producer: (pos, length, size) of a reservation
        self._peeked = 0  # consumer: size of the record returned by peek

    # ---- producer -------------------------------------------------------------------
    def try_reserve(self, length: int) -> memoryview | None:
        """A writable view for a payload of `length` bytes, or None if the ring is full."""
        size = L.record_size(length)
        cap = self.capacity
        if size > cap:
            raise RecordTooLarge(length, self.max_payload)
        head = self._head
        tail = self._words[_W_TAIL]
        free = cap - (head - tail)
        pos = head % cap
        room = cap - pos
        if size > room or (head == tail and self.rewind_min <= size and 2 * size <= pos):
            # Never split a record: pad to the end and start again at 0. An empty ring
            # also starts a large record again at 0, in memory still in cache (a lap-old
            # region copies at half the speed), when the room before the pad holds two
            # such records: the next one must not wait for the consumer to pass it.
            if free < room:
                return None
            self._publish(pos, L.KIND_PAD, room - _HDR, room)
            free -= room
            pos = 0
        if free < size:
            return None
        self._pending = (pos, length, size)
        start = pos + _HDR
        return self._data[start : start + length]

    def commit(self, kind: int, length: int | None = None) -> int:
        """Publish the reserved record (optionally shortened to `length`); return its seq."""
        pos, reserved, size = self._pending
        if size == 0:
            raise RingError("commit without a reservation")
        if length is not None:
            if length > reserved:
                raise RingError("commit longer than the reservation")
            size = L.record_size(length)
        else:
            length = reserved
        self._pending = (0, 0, 0)
        return self._publish(pos, kind, length, size)

    def _publish(self, pos: int, kind: int, length: int, size: int) -> int:
        seq = self._head_seq + 1
        _PACK(self._data, pos, seq, kind, _COMMIT(seq, kind, length), length, 0)
        head = self._head + size
        self._head = head
        self._head_seq = seq
        w = self._words
        w[_W_HEAD_SEQ] = seq
        w[_W_HEAD] = head  # the publishing store: last
        return seq

    def free_bytes(self) -> int:
        return self.capacity - (self._head - self._words[_W_TAIL])

    # ---- consumer -------------------------------------------------------------------
    def readable(self) -> bool:
        return self._words[_W_HEAD] != self._tail

    def peek(self) -> Record | None:
        """The oldest unreleased record, validated, or None when the ring is empty."""
        w = self._words
        cap = self.capacity
        while True:
            head = w[_W_HEAD]
            tail = self._tail
            if head == tail:
                return None
            avail = head - tail
            if avail > cap or avail % L.ALIGN:
                raise RingCorrupt(f"ring: head {head} and tail {tail} are inconsistent")
            pos = tail % cap
            seq, kind, commit, length, _ = _UNPACK(self._data, pos)
            size = L.record_size(length)
            if seq != self._tail_seq + 1 or commit != _COMMIT(seq, kind, length):
                raise RingCorrupt(
                    f"ring: record at {pos} has seq {seq} (expected {self._tail_seq + 1}) "
                    "or a bad commit word"
                )
            if size > avail or pos + size > cap:
                raise RingCorrupt(f"ring: record at {pos} of {length} bytes overruns the ring")
            if kind == L.KIND_PAD:
                self._advance(seq, size)
                continue
            self._peeked = size
            start = pos + _HDR
            return Record(kind, seq, self._data[start : start + length])

    def release(self) -> None:
        """Free the record returned by the last `peek`."""
        size = self._peeked
        if not size:
            raise RingError("release without a peeked record")
        self._peeked = 0
        self._advance(self._tail_seq + 1, size)

    def _advance(self, seq: int, size: int) -> None:
        tail = self._tail + size
        self._tail = tail
        self._tail_seq = seq
        w = self._words
        w[_W_TAIL_SEQ] = seq
        w[_W_TAIL] = tail

    # ---- shared words ---------------------------------------------------------------
    @property
    def words(self) -> memoryview:
        return self._words

    def close(self) -> None:
        """Drop the views so the underlying mmap can be closed."""
        self._data.release()
        self._words.release()
