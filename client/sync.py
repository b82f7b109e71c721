"""Blocking client. One socket; `infer` waits for its reply, `infer_many` pipelines.

Several addresses (or one load balancer's): a request answered `UNAVAILABLE`, or
whose connection closed before its reply, is sent again on a fresh connection to the
next address, within a bounded budget (client/retry.py); `retries=0` turns it off.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any, Self

import msgpack
import numpy as np

from ringserve.ipc import framereader, wire

from .common import infer_request, parse_address, result
from .common import outputs as outputs_of
from .errors import ConnectionClosed
from .retry import Addresses, RetryPolicy, retryable
from .shm import SharedRegion


def _connect(address: str, timeout: float | None) -> socket.socket:
    kind, addr = parse_address(address)
    fam = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    if kind == "tcp" and ":" in addr[0]:
        fam = socket.AF_INET6
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(addr)
        if kind == "tcp":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class Client:
    """`address`: "tcp://host:port" or "unix:///path", a list of them, or a
    comma-separated string. `retries`, `retry_timeout`, `backoff`, `max_backoff`:
    see client/retry.py; `client.retries` counts the retries made so far."""

    def __init__(
        self,
        address: str | Sequence[str],
        timeout: float | None = 60.0,
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
        self.timeout = timeout
        self.token = token
        self.regions: dict[str, SharedRegion] = {}
        self._next = 0
        self.sock: socket.socket = self._open_any()

    @property
    def address(self) -> str:
        """The address of the current connection."""
        return self.addresses.current

    def _open_any(self) -> socket.socket:
        """Connect to the current address, else to each of the others once."""
        err: BaseException | None = None
        for _ in self.addresses.all:
            try:
                return self._open(self.addresses.current)
            except OSError as exc:
                err = exc
                self.addresses.advance()
        assert err is not None
        raise err

    def _open(self, address: str) -> socket.socket:
        sock = _connect(address, self.timeout)
        self.sock = sock
        self._dec = framereader.FrameDecoder(1 << 31)
        self._ready: dict[int | None, dict[str, Any]] = {}
        self._broken = False
        try:
            # A first frame at once: the server closes a connection that has sent no
            # complete frame within server.handshake_timeout_seconds, and a client may
            # well connect long before its first request.
            if self.token is not None:
                self.call("auth", token=self.token)
            else:
                self.call("health")
            for region in self.regions.values():  # regions belong to a connection
                self.call("shm_register", name=region.name, key=region.key, size=region.size)
        except BaseException:
            sock.close()
            raise
        return sock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # ---- raw -----------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> int:
        """Send a request (an `id` is added unless given); return its id."""
        if "id" not in msg:
            self._next += 1
            msg = {"id": self._next, **msg}
        self.sock.sendall(wire.pack(msg))
        return int(msg["id"])

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, rid: int | None = None) -> dict[str, Any]:
        """The reply with `id` rid (others are kept for later), or the next one."""
        while True:
            if rid in self._ready:
                return self._ready.pop(rid)
            if rid is None and self._ready:
                return self._ready.pop(next(iter(self._ready)))
            if None in self._ready:  # about the connection itself (a limit): it closes
                return self._ready.pop(None)
            data = self.sock.recv(1 << 20)
            if not data:
                self._broken = True
                raise ConnectionClosed("connection closed by the server")
            for body in self._dec.feed(data):
                msg = msgpack.unpackb(body, raw=False)
                self._ready[msg.get("id")] = msg

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return result(self.recv(self.send({"op": op, **fields})))

    # ---- failover ------------------------------------------------------------------
    def _retrying(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send `msg` and return its reply (success or not); retry what may be retried."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                if self._broken:
                    self.sock.close()
                    self._open(self.addresses.current)
                reply = self.recv(self.send(dict(msg)))
                result(reply)  # raises the reply's error, to decide on a retry
                return reply
            except BaseException as exc:
                attempt += 1
                if not retryable(exc) or not self.policy.allows(attempt, started):
                    if isinstance(exc, ConnectionClosed) or (
                        isinstance(exc, OSError) and not isinstance(exc, TimeoutError)
                    ):
                        self._broken = True
                    raise
                self._broken = True  # the next attempt takes a fresh connection
                self.addresses.advance()
                self.retries += 1
                time.sleep(self.policy.delay(attempt, exc))

    # ---- ops -----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._retrying({"op": "health"})

    def models(self) -> list[dict[str, Any]]:
        return list(self._retrying({"op": "models"})["models"])

    def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"op": "metadata", "model": model}
        if version is not None:
            f["version"] = version
        return self._retrying(f)

    def stats(self) -> dict[str, Any]:
        return self._retrying({"op": "stats"})

    def shm_register(self, region: SharedRegion) -> None:
        self.call("shm_register", name=region.name, key=region.key, size=region.size)
        self.regions[region.name] = region

    def shm_unregister(self, region: SharedRegion | str) -> None:
        name = region if isinstance(region, str) else region.name
        self.call("shm_unregister", name=name)
        self.regions.pop(name, None)

    def infer(
        self,
        model: str,
        inputs: dict[str, Any],
        *,
        version: int | None = None,
        signature: str | None = None,
        outputs: list[str] | None = None,
        timeout_ms: float | None = None,
        output_shm: dict[str, Any] | None = None,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Run a signature. Input values are arrays or `SharedRegion.tensor()` references;
        outputs named in `output_shm` come back as views of the client's region."""
        req = infer_request(model, inputs, version, signature, outputs, timeout_ms, output_shm)
        return outputs_of(self._retrying(req), self.regions)

    def infer_many(
        self, model: str, batch: Iterable[dict[str, Any]], **kw: Any
    ) -> list[dict[str, np.ndarray[Any, Any]] | Exception]:
        """Pipeline: send all, then read all; replies matched by id, errors returned
        (not retried: the caller sees each one and may send it again)."""
        ids = [
            self.send(
                infer_request(
                    model,
                    inputs,
                    kw.get("version"),
                    kw.get("signature"),
                    kw.get("outputs"),
                    kw.get("timeout_ms"),
                )
            )
            for inputs in batch
        ]
        out: list[dict[str, np.ndarray[Any, Any]] | Exception] = []
        for rid in ids:
            try:
                out.append(outputs_of(self.recv(rid), self.regions))
            except Exception as exc:
                out.append(exc)
        return out
