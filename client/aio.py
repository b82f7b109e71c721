"""asyncio client: many concurrent requests on one connection, matched by id.

Several addresses (or one load balancer's): a request answered `UNAVAILABLE`, or
whose connection closed before its reply, is sent again on a fresh connection to the
next address, within a bounded budget (client/retry.py); `retries=0` turns it off.
The concurrent requests of a connection that closes move together: the first to
notice opens the next connection, the others use it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Self

import msgpack
import numpy as np

from ringserve.ipc import framereader, wire

from .common import infer_request, outputs, parse_address, result
from .errors import ConnectionClosed
from .retry import Addresses, RetryPolicy, retryable


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = False
        # Replaced after a failure: takes no new requests, closes once its last
        # outstanding reply is in (a server still answering them is not cut off).
        self.retired = False
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        dec = framereader.FrameDecoder(1 << 31)
        try:
            while True:
                data = await self.reader.read(1 << 20)
                if not data:
                    break
                for body in dec.feed(data):
                    msg: dict[str, Any] = msgpack.unpackb(body, raw=False)
                    rid: Any = msg.get("id")
                    if rid is None and not msg.get("ok", True):
                        # About the connection itself (a limit): every waiter gets it.
                        for w in self.waiters.values():
                            if not w.done():
                                w.set_result(msg)
                        self.waiters.clear()
                        continue
                    fut = self.waiters.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
                if self.retired and not self.waiters:
                    break
        except OSError:
            pass
        finally:
            self.closed = True
            for fut in self.waiters.values():
                if not fut.done():
                    fut.set_exception(ConnectionClosed("connection closed by the server"))
            self.waiters.clear()
            self.writer.close()  # our side too, so the server need not wait for it

    def retire(self) -> None:
        self.retired = True
        if not self.waiters:
            self.closed = True
            self.writer.close()

    async def close(self) -> None:
        self.closed = True
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass


class AsyncClient:
    """`address`: "tcp://host:port" or "unix:///path", a list of them, or a
    comma-separated string. `retries`, `retry_timeout`, `backoff`, `max_backoff`:
    see client/retry.py; `client.retries` counts the retries made so far."""

    def __init__(
        self,
        address: str | Sequence[str],
        token: str | None = None,
        *,
        retries: int = 3,
        retry_timeout: float = 30.0,
        backoff: float = 0.05,
        max_backoff: float = 1.0,
    ) -> None:
        self.addresses = Addresses(address)
        self.policy = RetryPolicy(retries, retry_timeout, backoff, max_backoff)
        self.retries = 0  # requests sent again after a failure (a counter)
        self.token = token
        self._conn: _Connection | None = None
        self._retired: set[_Connection] = set()
        self._next = 0
        self._lock: asyncio.Lock | None = None

    @property
    def address(self) -> str:
        """The address of the current connection."""
        return self.addresses.current

    async def connect(self) -> Self:
        """Connect to the current address, else to each of the others once."""
        err: BaseException | None = None
        for _ in self.addresses.all:
            try:
                self._conn = await self._open(self.addresses.current)
                return self
            except OSError as exc:
                err = exc
                self.addresses.advance()
        assert err is not None
        raise err

    async def _open(self, address: str) -> _Connection:
        kind, addr = parse_address(address)
        if kind == "unix":
            r, w = await asyncio.open_unix_connection(addr, limit=1 << 24)
        else:
            r, w = await asyncio.open_connection(*addr, limit=1 << 24)
        conn = _Connection(r, w)
        # A first frame at once (see Client: server.handshake_timeout_seconds).
        first = {"op": "auth", "token": self.token} if self.token is not None else {"op": "health"}
        try:
            result(await self._send(conn, first))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _current(self) -> _Connection:
        """The live connection, or a new one to the current address."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = self._conn
            if conn is not None and not conn.closed and not conn.retired:
                return conn
            self._conn = await self._open(self.addresses.current)
            return self._conn

    async def __aenter__(self) -> Self:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for conn in [*self._retired, *([self._conn] if self._conn is not None else [])]:
            await conn.close()
        self._retired.clear()

    async def _send(self, conn: _Connection, msg: dict[str, Any]) -> dict[str, Any]:
        if conn.closed:
            raise ConnectionClosed("connection closed by the server")
        self._next += 1
        rid = self._next
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        conn.waiters[rid] = fut
        try:
            conn.writer.write(wire.pack({"id": rid, **msg}))
            await conn.writer.drain()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a transport closing
            conn.waiters.pop(rid, None)
            raise ConnectionClosed(f"connection lost while sending: {exc}") from exc
        return await fut

    async def request(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One attempt on the current connection; the reply, success or not."""
        assert self._conn is not None, "call connect() first"
        return await self._send(await self._current(), msg)

    async def _retrying(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self._conn is not None, "call connect() first"
        started = time.monotonic()
        attempt = 0
        while True:
            conn: _Connection | None = None
            try:
                conn = await self._current()
                reply = await self._send(conn, msg)
                result(reply)  # raises the reply's error, to decide on a retry
                return reply
            except Exception as exc:
                attempt += 1
                if not retryable(exc) or not self.policy.allows(attempt, started):
                    raise
                if conn is None:  # could not connect: try the next address
                    self.addresses.advance()
                elif not conn.retired:  # the first request to see it fail moves everyone
                    conn.retire()
                    self._retired = {c for c in self._retired if not c.closed} | {conn}
                    self.addresses.advance()
                self.retries += 1
                await asyncio.sleep(self.policy.delay(attempt, exc))

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return result(await self._retrying({"op": op, **fields}))

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
        return _outputs(await self._retrying(req))


def _outputs(reply: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    return outputs(reply)
