"""A plain echo of ringserve frames: the load generator's ceiling, measured in the same run.

It decodes each frame, marks it `"ok": true` and encodes it back: the work of a frame
on both sides without any serving. Pointed at it with the same request frames (and
the same set-up messages: `auth` and `shm_register` are echoed as successes), the
generator shows how many requests a second it can drive and what latency it adds by
itself. A point served near the echo's figures is limited by the generator, not the
server.

    python -m ringserve.bench.echo --unix /tmp/echo.sock     # prints {"port": N} when ready
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

import msgpack

from ringserve.ipc import framereader, wire

from .loops import run_async
from .target import Target, parse_target

MAX_FRAME = 1 << 30
READY_TIMEOUT_S = 30.0


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t: asyncio.Transport = transport  # type: ignore[assignment]
        self.dec = framereader.FrameDecoder(MAX_FRAME)

    def data_received(self, data: bytes) -> None:
        out = []
        for body in self.dec.feed(data):
            msg = msgpack.unpackb(body, raw=False)
            if isinstance(msg, dict):
                msg["ok"] = True
            out.append(wire.pack(msg))
        if out:
            self.t.write(b"".join(out))


async def serve(unix: str) -> None:
    loop = asyncio.get_running_loop()
    us = await loop.create_unix_server(_Echo, unix)
    ts = await loop.create_server(_Echo, "127.0.0.1", 0)
    port = ts.sockets[0].getsockname()[1]
    stop: asyncio.Future[None] = loop.create_future()

    def on_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    # Closing our stdin (the parent died or is done) stops us too.
    loop.add_reader(0, on_stop)
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    await stop
    us.close()
    ts.close()


class EchoServer:
    """The echo server as a child process, on a Unix socket and a loopback TCP port."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="ringserve-echo-")
        self.path = str(Path(self._tmp.name) / "echo.sock")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ringserve.bench.echo", "--unix", self.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            line = self._ready_line()
            self.port = int(json.loads(line)["port"])
        except BaseException:
            self.close()
            raise

    def _ready_line(self) -> bytes:
        import selectors

        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(READY_TIMEOUT_S):
                raise TimeoutError(f"echo server not ready within {READY_TIMEOUT_S}s")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"echo server exited with code {self.proc.wait()}")
        return line

    def target(self, kind: str) -> Target:
        if kind == "unix":
            return parse_target(f"unix://{self.path}")
        return parse_target(f"tcp://127.0.0.1:{self.port}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        p = self.proc
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in (p.stdin, p.stdout):
            if f is not None:
                f.close()
        self._tmp.cleanup()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringserve.bench.echo", description=__doc__)
    p.add_argument("--unix", required=True, help="Unix socket path to listen on")
    args = p.parse_args(argv)
    if os.path.exists(args.unix):
        os.unlink(args.unix)
    run_async(serve(args.unix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
