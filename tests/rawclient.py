"""A bare protocol client for tests that must send what the SDK never would."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import msgpack

from ringserve.ipc import framereader


class Raw:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if url.startswith("unix://"):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(url[len("unix://") :])
        else:
            host, port = url[len("tcp://") :].rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)))
        self.sock.settimeout(timeout)
        self.dec = framereader.FrameDecoder(1 << 30)
        self.pending: list[dict[str, Any]] = []

    def send(self, obj: Any) -> None:
        body = msgpack.packb(obj, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> dict[str, Any]:
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            self.pending += [msgpack.unpackb(b, raw=False) for b in self.dec.feed(data)]
        return self.pending.pop(0)

    def closed_by_peer(self, within: float = 10.0) -> bool:
        """True once the server has closed the connection (EOF), within a deadline."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
            if not data:
                return True
            self.pending += [msgpack.unpackb(b, raw=False) for b in self.dec.feed(data)]
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
