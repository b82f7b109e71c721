"""Where the load goes: a loopback TCP address or a Unix socket, and blocking set-up calls.

Load only ever targets this host unless the caller allows otherwise: a load generator
pointed at a production address by mistake is an outage.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

import msgpack

from ringserve.ipc import framereader, wire


@dataclass(frozen=True)
class Target:
    kind: str  # "unix" | "tcp"
    address: Any  # path, or (host, port)
    url: str


def parse_target(url: str, allow_remote: bool = False) -> Target:
    """tcp://host:port (a loopback host unless `allow_remote`), unix:///path, or a path."""
    if url.startswith("/"):
        url = "unix://" + url
    if url.startswith("unix://"):
        path = url[len("unix://") :]
        if not path:
            raise ValueError(f"address {url!r}: empty socket path")
        return Target("unix", path, url)
    if "://" not in url:
        url = "tcp://" + url
    if not url.startswith("tcp://"):
        raise ValueError(f"address: expected tcp://host:port or unix:///path, received {url!r}")
    host, sep, port = url[len("tcp://") :].rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"address {url!r}: expected tcp://host:port")
    if not allow_remote:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        addrs = {i[4][0] for i in infos}
        if not addrs or not all(ipaddress.ip_address(a).is_loopback for a in addrs):
            raise ValueError(
                f"address {url!r}: only loopback addresses are loaded unless allowed "
                f"(--allow-remote); {host} is {sorted(addrs)}"
            )
    return Target("tcp", (host, int(port)), url)


def call(
    target: Target, op: str, token: str | None = None, timeout: float = 10.0, **fields: Any
) -> dict[str, Any]:
    """One request over a fresh blocking socket; the reply map, `ok` or not."""
    fam = socket.AF_UNIX if target.kind == "unix" else socket.AF_INET
    if target.kind == "tcp" and ":" in target.address[0]:
        fam = socket.AF_INET6
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(target.address)
        dec = framereader.FrameDecoder(1 << 30)
        msgs = ([{"id": 1, "op": "auth", "token": token}] if token else []) + [
            {"id": 2, "op": op, **fields}
        ]
        reply: dict[str, Any] = {}
        for m in msgs:
            s.sendall(wire.pack(m))
            while True:
                data = s.recv(1 << 20)
                if not data:
                    raise ConnectionError(f"{target.url}: connection closed during {m['op']}")
                bodies = dec.feed(data)
                if bodies:
                    reply = msgpack.unpackb(bodies[0], raw=False)
                    break
            if m["op"] == "auth" and not reply.get("ok"):
                raise ConnectionError(f"auth refused: {reply.get('error')}")
        return reply


def call_ok(target: Target, op: str, token: str | None = None, **fields: Any) -> dict[str, Any]:
    """`call`, raising RuntimeError with the server's error when the reply is not ok."""
    r = call(target, op, token=token, **fields)
    if not r.get("ok"):
        err = r.get("error") or {}
        raise RuntimeError(f"{op}: {err.get('code')}: {err.get('message')}")
    return r
