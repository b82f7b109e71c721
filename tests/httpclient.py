"""Raw HTTP/1.1 over a socket, for tests that must send what a library never would
(pipelined requests, malformed lines, oversized headers), and `curl`."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time


def curl(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("curl")
    assert exe, "curl is not installed: apt-get install curl (.ci/run installs it)"
    return subprocess.run(
        [exe, "-sS", "--max-time", str(timeout), *args],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )


class RawHttp:
    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(1 << 16)
        if not data:
            return False
        self.buf += data
        return True

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        """Read one response: (status, headers lowercased, body); `head`: no body."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a full response: {self.buf[:200]!r}")
        top, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = top.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = 0 if head else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed inside a body")
        body, self.buf = self.buf[:n], self.buf[n:]
        if status == 100:
            return self.response()
        return status, headers, body

    def closed_within(self, seconds: float) -> bool:
        """True once the server closes its side (a read returns b"") within `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                if not self.sock.recv(1 << 16):
                    return True
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def get(path: str, host: str = "127.0.0.1") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
