"""Blocking client. One socket; `infer` waits for its reply, `infer_many` pipelines."""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import msgpack
import numpy as np

from ringserve.ipc import wire

from .common import infer_request, parse_address, result
from .common import outputs as outputs_of
from .errors import ConnectionClosed
from .shm import SharedRegion


class Client:
    def __init__(
        self, address: str, timeout: float | None = 60.0, token: str | None = None
    ) -> None:
        kind, addr = parse_address(address)
        fam = socket.AF_UNIX if kind == "unix" else socket.AF_INET
        if kind == "tcp" and ":" in addr[0]:
            fam = socket.AF_INET6
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        if kind == "tcp":
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._dec = wire.FrameDecoder(1 << 31)
        self._ready: dict[int | None, dict[str, Any]] = {}
        self.regions: dict[str, SharedRegion] = {}
        self._next = 0
        # A first frame at once: the server closes a connection that has sent no
        # complete frame within server.handshake_timeout_seconds, and a client may
        # well connect long before its first request.
        if token is not None:
            self.call("auth", token=token)
        else:
            self.call("health")

    def __enter__(self) -> Client:
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
                raise ConnectionClosed("connection closed by the server")
            for body in self._dec.feed(data):
                msg = msgpack.unpackb(body, raw=False)
                self._ready[msg.get("id")] = msg

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return result(self.recv(self.send({"op": op, **fields})))

    # ---- ops -----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.call("health")

    def models(self) -> list[dict[str, Any]]:
        return list(self.call("models")["models"])

    def metadata(self, model: str, version: int | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"model": model}
        if version is not None:
            f["version"] = version
        return self.call("metadata", **f)

    def stats(self) -> dict[str, Any]:
        return self.call("stats")

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
        return outputs_of(self.recv(self.send(req)), self.regions)

    def infer_many(
        self, model: str, batch: Iterable[dict[str, Any]], **kw: Any
    ) -> list[dict[str, np.ndarray[Any, Any]] | Exception]:
        """Pipeline: send all, then read all; replies matched by id, errors returned."""
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
