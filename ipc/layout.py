"""Byte layout of a ring segment. No I/O.

    segment (one POSIX shared-memory object per ring)
    +-------------------------------+ 0
    | ring header, u64 words        |   magic, layout version, capacity
    |   word  8 (byte  64): head    |   bytes published by the producer (monotonic)
    |   word  9           : head_seq|   records published
    |   word 16 (byte 128): tail    |   bytes released by the consumer (monotonic)
    |   word 17           : tail_seq|
    |   word 24 (byte 192): beat_ns |   consumer heartbeat (CLOCK_MONOTONIC ns)
    |   word 25           : busy_id |   request id the consumer is computing, 0 = none
    |   word 26           : sleeping|   1 while the consumer may sleep: ring its eventfd
    +-------------------------------+ 4096 (DATA_OFFSET, page aligned)
    | data area, `capacity` bytes   |   records, each starting on a 64-byte boundary
    +-------------------------------+

    record
    +--------+--------+--------+--------+----------------------------+
    | seq u64| kind u32 commit u32| length u64| reserved u64 | payload (length bytes) |
    +--------+--------+--------+--------+----------------------------+
    padded to a multiple of 64 bytes. `commit` is a function of (seq, kind, length): a
    header that was not written whole, or is stale, fails the check.

Head and tail live on separate cache lines so producer and consumer do not share one.
The producer writes a record, then stores `head` last; the consumer reads `head`, then
the record. On x86-64 (TSO) aligned 8-byte stores are atomic and seen in order.
"""

from __future__ import annotations

import struct

MAGIC = 0x31474E4952535252  # "RRSRING1" little-endian
LAYOUT_VERSION = 1
DATA_OFFSET = 4096
ALIGN = 64

W_MAGIC = 0
W_VERSION = 1
W_CAPACITY = 2
W_HEAD = 8
W_HEAD_SEQ = 9
W_TAIL = 16
W_TAIL_SEQ = 17
W_BEAT = 24
W_BUSY = 25
W_SLEEPING = 26
HEADER_WORDS = 32

# Annotated: mypyc type-checks ring.py and layout.py together and needs the types.
RECORD: struct.Struct = struct.Struct("<QIIQQ")  # seq, kind, commit, length, reserved
RECORD_HEADER: int = RECORD.size  # 32

# A record of at least this many bytes (header included) written into an empty ring
# starts again at offset 0, behind a pad, when the space before its position holds two
# of it: memory still in cache. 64 KiB-1 MiB round trips took 17-35% less time so.
REWIND_MIN = 64 * 1024

KIND_PAD = 0
KIND_REQUEST = 1
KIND_RESPONSE = 2
KIND_STOP = 3
KIND_TEST = 9


def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def record_size(length: int) -> int:
    return align(RECORD_HEADER + length)


def commit_word(seq: int, kind: int, length: int) -> int:
    return ((seq * 0x9E3779B1) ^ (length * 0x85EBCA77) ^ (kind << 24) ^ 0x5EED) & 0xFFFFFFFF


def segment_size(capacity: int) -> int:
    return DATA_OFFSET + capacity


def max_payload(capacity: int) -> int:
    """The largest payload a ring of `capacity` can ever hold."""
    return capacity - RECORD_HEADER
