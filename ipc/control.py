"""Control messages between a worker and the supervisor over an inherited pipe.

Small length-prefixed msgpack maps (the wire framing): `attached`, `ready`, `failed`.
Tensor traffic never goes here; it goes through the rings.
"""

from __future__ import annotations

import os
from typing import Any

import msgpack

from .framereader import FrameDecoder
from .wire import HEADER


def send(fd: int, msg: dict[str, Any]) -> None:
    body = msgpack.packb(msg, use_bin_type=True)
    data = HEADER.pack(len(body)) + body
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Reader:
    def __init__(self, limit: int = 16 * 1024 * 1024) -> None:
        self._dec = FrameDecoder(limit)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        out = []
        for body in self._dec.feed(data):
            msg = msgpack.unpackb(body, raw=False)
            if isinstance(msg, dict):
                out.append(msg)
        return out
