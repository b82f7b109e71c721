"""Hostile frames against a real server: hypothesis strategies and the checks on replies.

Shared by tests/test_fuzz.py (brief, derandomized, in CI) and perf/fuzz.py (as long as
asked). A case is a list of frames sent on one fresh connection; the server must answer
every frame with a well-formed reply, or answer a documented closing error and close;
another connection must keep being served; the server's memory must stay bounded.
"""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from hypothesis import strategies as st

from ringserve.ipc import errors as E
from ringserve.ipc import framereader, wire

OPS = ["health", "models", "metadata", "infer", "stats", "auth", "shm_register", "shm_unregister"]
MODELS = ["linear", "ints", "strings"]
DTYPES = ["bool", "int8", "int32", "int64", "uint8", "uint64", "float16", "float32", "string"]
# Replies that end a connection, by design (docs/protocol.md, docs/security.md).
CLOSING = {E.RESOURCE_EXHAUSTED, E.UNAUTHENTICATED, E.DEADLINE_EXCEEDED}
MESSAGE_MAX = 4096  # no error message is longer: client values in them are clipped

# ---- strategies -------------------------------------------------------------------------

ints = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([-(1 << 63), (1 << 63) - 1, (1 << 64) - 1, 1 << 32, 1 << 62]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
texts = st.one_of(st.text(max_size=12), st.sampled_from(["x", "y", "", "serving_default"]))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts, st.binary(max_size=24))


def values(depth: int = 2) -> st.SearchStrategy[Any]:
    if depth == 0:
        return scalars
    inner = values(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(texts, ints), inner, max_size=4),
    )


shapes = st.one_of(
    st.lists(st.integers(0, 5), max_size=4),
    st.lists(ints, max_size=6),
    st.integers(30, 40).map(lambda n: [1] * n),  # around the rank limit
    st.integers(1000, 5000).map(lambda n: [1 << 40] * n),  # a huge rank of huge dims
    values(1),
)


@st.composite
def tensors(draw: st.DrawFn) -> Any:
    t: dict[Any, Any] = {}
    if draw(st.booleans()):
        t["dtype"] = draw(st.one_of(st.sampled_from(DTYPES), texts, scalars))
    shape = draw(shapes)
    if draw(st.integers(0, 9)):
        t["shape"] = shape
    n = 1
    if (
        isinstance(shape, list)
        and len(shape) <= 8
        and all(isinstance(d, int) and 0 <= d < 100 for d in shape)
    ):
        for d in shape:
            n *= d
    kind = draw(st.integers(0, 5))
    if kind == 0:  # the right number of bytes for a 4-byte dtype
        t["data"] = bytes(4 * n) if n < 10_000 else b""
    elif kind == 1:
        t["data"] = draw(st.binary(max_size=64))
    elif kind == 2:
        t["data"] = draw(st.lists(st.binary(max_size=8), max_size=8))
    elif kind == 3:
        t["shm"] = draw(values(1))
    elif kind == 4:
        t["data"] = draw(values(1))
    if draw(st.integers(0, 7)) == 0:
        t[draw(texts)] = draw(scalars)
    return t if draw(st.integers(0, 15)) else draw(values(1))


@st.composite
def requests(draw: st.DrawFn, rid: int) -> dict[Any, Any]:
    msg: dict[Any, Any] = {}
    r = draw(st.integers(0, 11))
    if r:
        msg["id"] = rid
    elif draw(st.booleans()):
        msg["id"] = draw(scalars)
    if draw(st.integers(0, 11)):
        msg["op"] = draw(st.sampled_from(OPS)) if draw(st.integers(0, 5)) else draw(scalars)
    if draw(st.integers(0, 3)):
        msg["model"] = draw(st.sampled_from(MODELS)) if draw(st.booleans()) else draw(scalars)
    if draw(st.integers(0, 3)):
        names = ["x", "a", "b", "s"] if draw(st.booleans()) else []
        msg["inputs"] = draw(
            st.one_of(
                st.fixed_dictionaries({}, optional={k: tensors() for k in names}),
                st.dictionaries(texts, tensors(), max_size=3),
                values(1),
            )
        )
    for key in (
        "version",
        "signature",
        "outputs",
        "timeout_ms",
        "output_shm",
        "token",
        "name",
        "key",
        "size",
    ):
        if draw(st.integers(0, 7)) == 0:
            msg[key] = draw(st.one_of(values(2), floats))
    if draw(st.integers(0, 7)) == 0:
        msg[draw(texts)] = draw(values(2))
    return msg


@dataclass
class Frame:
    """What one frame is and what it may be answered with."""

    data: bytes
    closes: bool = False  # a header past max_frame_bytes: answered, then closed
    note: str = ""


@st.composite
def frames(draw: st.DrawFn, rid: int, max_frame: int) -> Frame:
    kind = draw(st.integers(0, 19))
    if kind == 0:  # raw garbage as a body
        body = draw(st.binary(max_size=200))
        return Frame(wire.HEADER.pack(len(body)) + body, note="garbage body")
    if kind == 1:  # a header past the limit: never allocated, answered, closed
        n = draw(st.integers(max_frame + 1, (1 << 32) - 1))
        return Frame(wire.HEADER.pack(n) + draw(st.binary(max_size=16)), True, "oversize")
    if kind == 2:  # a valid map with an extension type or a timestamp
        ext = draw(st.sampled_from([msgpack.ExtType(5, b"x"), msgpack.Timestamp(1, 2)]))
        body = msgpack.packb({"id": rid, "op": "health", "x": ext}, datetime=False)
        return Frame(wire.HEADER.pack(len(body)) + body, note="ext")
    if kind == 3:  # a non-map top level
        body = msgpack.packb(draw(values(2)), use_bin_type=draw(st.booleans()))
        return Frame(wire.HEADER.pack(len(body)) + body, note="not a map")
    msg = draw(requests(rid))
    body = msgpack.packb(msg, use_bin_type=True)
    if len(body) > max_frame:
        return Frame(wire.HEADER.pack(len(body)) + body, True, "oversize map")
    return Frame(wire.HEADER.pack(len(body)) + body, note="map")


def cases(max_frame: int) -> st.SearchStrategy[list[Frame]]:
    return st.integers(1, 4).flatmap(
        lambda n: st.tuples(*(frames(1000 + i, max_frame) for i in range(n))).map(list)
    )


# ---- running a case ---------------------------------------------------------------------


class Violation(AssertionError):
    pass


def check_reply(reply: Any) -> tuple[Any, bool, str | None]:
    """A well-formed reply (protocol.md): (id, ok, error code)."""
    if not isinstance(reply, dict) or "id" not in reply or not isinstance(reply.get("ok"), bool):
        raise Violation(f"malformed reply {reply!r:.300}")
    rid = reply["id"]
    if rid is not None and not (isinstance(rid, int) and 0 <= rid < 1 << 64):
        raise Violation(f"reply id {rid!r:.100}")
    if reply["ok"]:
        return rid, True, None
    e = reply.get("error")
    if not isinstance(e, dict) or e.get("code") not in E.CODES:
        raise Violation(f"bad error {e!r:.300}")
    msg = e.get("message")
    if not isinstance(msg, str) or len(msg) > MESSAGE_MAX:
        raise Violation(f"error message of {len(str(msg))} chars: {str(msg)[:300]!r}")
    if e["code"] == E.INTERNAL:
        raise Violation(f"INTERNAL: {msg[:500]}")
    return rid, False, e["code"]


@dataclass
class Outcome:
    replies: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False


def run_case(
    address: str, case: list[Frame], timeout: float = 20.0, oversize: str = E.RESOURCE_EXHAUSTED
) -> Outcome:
    """Send a case on a fresh connection; check every reply; return them. `oversize` is
    the code a header past the limit gets (UNAUTHENTICATED before `auth`)."""
    if address.startswith("unix://"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address[len("unix://") :])
    else:
        host, port = address[len("tcp://") :].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
    out = Outcome()
    dec = framereader.FrameDecoder(1 << 30)
    # Everything after a closing frame is never read by the server.
    sent: list[Frame] = []
    for f in case:
        sent.append(f)
        if f.closes:
            break
    try:
        sock.sendall(b"".join(f.data for f in sent))
        want = len(sent)
        deadline = time.monotonic() + timeout
        while len(out.replies) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Violation(
                    f"{len(out.replies)} replies of {want} within {timeout} s: "
                    f"{[f.note for f in sent]}"
                )
            sock.settimeout(left)
            try:
                data = sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                out.closed = True
                break
            for body in dec.feed(data):
                out.replies.append(msgpack.unpackb(body, raw=False))
    finally:
        sock.close()
    codes = [check_reply(r)[2] for r in out.replies]
    if len(out.replies) > len(sent):
        raise Violation(f"{len(out.replies)} replies to {len(sent)} frames")
    if out.closed and len(out.replies) < len(sent):
        # Only a documented closing error may end the connection early.
        if not codes or codes[-1] not in CLOSING:
            raise Violation(f"closed after {codes} for {[f.note for f in sent]}")
    if sent[-1].closes and codes[-1] != oversize:
        raise Violation(f"oversize frame answered {codes[-1]}")
    return out


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def frame_bytes(msg: Any) -> bytes:
    body = msgpack.packb(msg, use_bin_type=True)
    return struct.pack(">I", len(body)) + body
