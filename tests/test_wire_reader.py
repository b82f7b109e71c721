"""FrameReader (the frontend's buffered-protocol framing) against a random stream."""

from __future__ import annotations

import os
import random
import struct

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from ringserve.ipc import framereader, wire


def feed(reader: framereader.FrameReader, stream: bytes, cuts: list[int]) -> list[object]:
    out: list[object] = []
    pos = 0
    i = 0
    while pos < len(stream):
        buf = reader.get_buffer(-1)
        assert len(buf) > 0
        n = min(len(buf), max(1, cuts[i % len(cuts)]), len(stream) - pos)
        i += 1
        buf[:n] = stream[pos : pos + n]
        pos += n
        out += [msgpack.unpackb(b) for b in reader.buffer_updated(n)]
    return out


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=40),
    cuts=st.lists(st.integers(1, 4000), min_size=1, max_size=10),
    scratch=st.sampled_from([64, 1024, 8192]),
)
def test_any_split_any_scratch(sizes: list[int], cuts: list[int], scratch: int) -> None:
    rnd = random.Random(sum(sizes))
    msgs = [{"id": i, "d": rnd.randbytes(n)} for i, n in enumerate(sizes)]
    stream = b"".join(wire.pack(m) for m in msgs)
    assert feed(framereader.FrameReader(1 << 20, scratch=scratch), stream, cuts) == msgs


def test_oversize_is_refused_from_the_header() -> None:
    r = framereader.FrameReader(100)
    buf = r.get_buffer(-1)
    ok = wire.pack({"id": 1})
    buf[: len(ok) + 4] = ok + struct.pack(">I", 101)
    bodies = r.buffer_updated(len(ok) + 4)
    assert [msgpack.unpackb(b) for b in bodies] == [{"id": 1}]  # earlier frames still count
    assert isinstance(r.error, framereader.FrameTooLarge) and r.error.length == 101


def test_large_body_is_read_in_place() -> None:
    r = framereader.FrameReader(1 << 24, scratch=1024)
    body = msgpack.packb({"id": 1, "d": os.urandom(100_000)})
    stream = struct.pack(">I", len(body)) + body
    got = feed(r, stream, [700])
    assert got == [msgpack.unpackb(body)]


def test_announced_length_is_not_allocated_before_it_arrives() -> None:
    """A header announcing 200 MB with one byte behind it costs the bytes received."""
    framereader._spares.clear()  # no mapping kept from an earlier large body
    r = framereader.FrameReader(1 << 28, scratch=1024)
    buf = r.get_buffer(-1)
    buf[:5] = struct.pack(">I", 200_000_000) + b"x"
    assert r.buffer_updated(5) == []
    assert r.partial
    assert len(r.get_buffer(-1)) <= framereader.GROW_MIN
    # As bytes arrive the buffer grows, never past twice what was received.
    received = 1
    for _ in range(6):
        buf = r.get_buffer(-1)
        buf[:] = b"y" * len(buf)
        received += len(buf)
        assert r.buffer_updated(len(buf)) == []
        assert len(r.get_buffer(-1)) + received <= max(2 * received, framereader.GROW_MIN)


def test_limit_can_change_between_frames() -> None:
    """A connection reads with a small limit until `auth`, then with the full one."""
    r = framereader.FrameReader(1 << 20, limit_key="max_frame_bytes_before_auth")
    r.max_frame_bytes = 64
    buf = r.get_buffer(-1)
    buf[:4] = struct.pack(">I", 65)
    assert r.buffer_updated(4) == []
    assert isinstance(r.error, framereader.FrameTooLarge)
    assert r.error.key == "max_frame_bytes_before_auth" and "64" in str(r.error)


def test_max_frames_holds_the_rest_back() -> None:
    r = framereader.FrameReader(1 << 20)
    r.max_frames = 1
    stream = wire.pack({"id": 1}) + wire.pack({"id": 2}) + wire.pack({"id": 3})
    buf = r.get_buffer(-1)
    buf[: len(stream)] = stream
    assert [msgpack.unpackb(b) for b in r.buffer_updated(len(stream))] == [{"id": 1}]
    assert r.more and r.partial
    r.max_frames = None
    got = [msgpack.unpackb(b) for b in r.buffer_updated(0)]
    assert got == [{"id": 2}, {"id": 3}] and not r.more and not r.partial


def test_large_bodies_reuse_a_mapping_once_released() -> None:
    framereader._spares.clear()
    r = framereader.FrameReader(1 << 24, scratch=1024)
    stream = b"".join(wire.pack({"id": i, "d": bytes([i]) * 300_000}) for i in range(3))
    got = feed(r, stream, [70_000])
    assert [m["id"] for m in got] == [0, 1, 2]  # type: ignore[index]
    r.get_buffer(-1)
    assert len(framereader._spares) == 1  # the last body's mapping, kept for the next
    # A body still viewed is never reused.
    r2 = framereader.FrameReader(1 << 24, scratch=1024)
    body = msgpack.packb({"d": b"z" * 300_000})
    out: list[memoryview] = []
    pos, data = 0, struct.pack(">I", len(body)) + body
    while pos < len(data):
        buf = r2.get_buffer(-1)
        n = min(len(buf), 50_000, len(data) - pos)
        buf[:n] = data[pos : pos + n]
        del buf
        pos += n
        out += r2.buffer_updated(n)
    held = out[0]
    r2.get_buffer(-1)
    feed(r2, wire.pack({"d": b"q" * 300_000}), [50_000])
    assert bytes(held) == body  # untouched by the next body


def test_scratch_swap_keeps_unread_frames_and_returned_bodies() -> None:
    """Until `auth` a connection reads with a tiny buffer; the swap after it keeps the
    frames pipelined behind the auth and the body just handed out."""
    r = framereader.FrameReader(64, scratch=68)
    r.max_frames = 1
    stream = wire.pack({"id": 1}) + wire.pack({"id": 2, "d": b"x" * 30})
    buf = r.get_buffer(-1)
    buf[: len(stream)] = stream
    del buf
    (first,) = r.buffer_updated(len(stream))
    r.max_frame_bytes, r.max_frames = 1 << 20, None
    r.resize_scratch(4096)
    assert msgpack.unpackb(first) == {"id": 1}
    rest = r.buffer_updated(0)
    assert [msgpack.unpackb(b) for b in rest] == [{"id": 2, "d": b"x" * 30}]
    big = wire.pack({"id": 3, "d": b"y" * 3000})
    assert [m["id"] for m in feed(r, big, [500])] == [3]  # type: ignore[index]
