"""asyncio client: many concurrent requests on one connection, matched by id."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import numpy as np

from ringserve.ipc import wire

from .common import infer_request, outputs, parse_address, result
from .errors import ConnectionClosed


class AsyncClient:
    def __init__(self, address: str, token: str | None = None) -> None:
        self.address = address
        self.token = token
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> AsyncClient:
        kind, addr = parse_address(self.address)
        if kind == "unix":
            self._reader, self._writer = await asyncio.open_unix_connection(addr, limit=1 << 24)
        else:
            self._reader, self._writer = await asyncio.open_connection(*addr, limit=1 << 24)
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        # A first frame at once (see Client.__init__: server.handshake_timeout_seconds).
        if self.token is not None:
            await self.call("auth", token=self.token)
        else:
            await self.call("health")
        return self

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _read_loop(self) -> None:
        assert self._reader is not None
        dec = wire.FrameDecoder(1 << 31)
        try:
            while True:
                data = await self._reader.read(1 << 20)
                if not data:
                    break
                for body in dec.feed(data):
                    msg: dict[str, Any] = msgpack.unpackb(body, raw=False)
                    rid: Any = msg.get("id")
                    if rid is None and not msg.get("ok", True):
                        # About the connection itself (a limit): every waiter gets it.
                        for w in self._waiters.values():
                            if not w.done():
                                w.set_result(msg)
                        self._waiters.clear()
                        continue
                    fut = self._waiters.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        finally:
            for fut in self._waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed("connection closed by the server"))
            self._waiters.clear()

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._writer is not None, "call connect() first"
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        self._writer.write(wire.pack({"id": rid, **msg}))
        await self._writer.drain()
        return await fut

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return result(await self.request({"op": op, **fields}))

    async def health(self) -> dict[str, Any]:
        return await self.call("health")

    async def models(self) -> list[dict[str, Any]]:
        return list((await self.call("models"))["models"])

    async def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"model": model}
        if version is not None:
            f["version"] = version
        return await self.call("metadata", **f)

    async def stats(self) -> dict[str, Any]:
        return await self.call("stats")

    async def infer(
        self,
        model: str,
        inputs: dict[str, Any],
        *,
        version: int | None = None,
        signature: str | None = None,
        outputs: list[str] | None = None,
        timeout_ms: float | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        req = infer_request(model, inputs, version, signature, outputs, timeout_ms)
        return _outputs(await self.request(req))


def _outputs(reply: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    return outputs(reply)
