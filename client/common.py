"""Pieces shared by the sync and asyncio clients: addresses, requests, replies."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import numpy as np

from ringserve.ipc.tensors import from_wire, to_wire

from .errors import from_reply


def parse_address(url: str) -> tuple[str, Any]:
    """("tcp", (host, port)) or ("unix", path) from tcp://host:port or unix:///path."""
    if url.startswith("unix://"):
        return "unix", url[len("unix://") :]
    u = urlparse(url if "://" in url else f"tcp://{url}")
    if u.scheme != "tcp" or u.hostname is None or u.port is None:
        raise ValueError(f"address: expected tcp://host:port or unix:///path, received {url!r}")
    return "tcp", (u.hostname, u.port)


def _tensor(v: Any) -> dict[str, Any]:
    """Arrays go inline; a `ShmTensor` goes as a reference to its region."""
    return v.to_wire() if hasattr(v, "to_wire") else to_wire(v)


def infer_request(
    model: str,
    inputs: dict[str, Any],
    version: int | None,
    signature: str | None,
    outputs: list[str] | None,
    timeout_ms: float | None,
    output_shm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "op": "infer",
        "model": model,
        "inputs": {
            k: v.to_wire() if hasattr(v, "to_wire") else to_wire(v) for k, v in inputs.items()
        },
    }
    if version is not None:
        msg["version"] = version
    if signature is not None:
        msg["signature"] = signature
    if outputs is not None:
        msg["outputs"] = list(outputs)
    if timeout_ms is not None:
        msg["timeout_ms"] = timeout_ms
    if output_shm is not None:
        msg["output_shm"] = output_shm
    return msg


def result(reply: dict[str, Any]) -> dict[str, Any]:
    """The success fields of a reply, or raise its error as an exception."""
    if not reply.get("ok"):
        raise from_reply(reply.get("error") or {})
    return reply


def outputs(
    reply: dict[str, Any], regions: dict[str, Any] | None = None
) -> dict[str, np.ndarray[Any, Any]]:
    """Decode outputs; those written to shared memory are returned as views of it."""
    out = {}
    for k, t in result(reply)["outputs"].items():
        if "shm" in t and regions is not None:
            out[k] = regions[t["shm"]["region"]].read(t)
        else:
            out[k] = from_wire(t)
    return out
