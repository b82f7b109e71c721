"""One client connection: framing, op dispatch, pipelining, flow control.

Flow control in both directions, as in uvicorn/aiohttp: reading pauses when the
connection has `max_inflight_per_connection` requests outstanding, and when the
transport's write buffer passes its high-water mark (the client is not reading its
replies); it resumes below half the in-flight limit and on `resume_writing`.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import struct
import time
from typing import TYPE_CHECKING, Any

from ringserve.ipc import errors as E
from ringserve.ipc import framereader, wire
from ringserve.ipc.errors import ProtocolError, clip
from ringserve.ipc.requests import InferRequest, decode_infer

from .drain import ANSWERED_WHILE_DRAINING, STOPPING_MESSAGE
from .listened import Place
from .regions import Regions

if TYPE_CHECKING:
    from .server import Frontend


def peer_uid(transport: asyncio.BaseTransport) -> int | None:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    sock = transport.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return None
    return int(_UCRED.unpack(raw)[1])


_UCRED = struct.Struct("3i")  # pid, uid, gid

# Frames decoded between two looks at the workers' rings (about 100-200 us of work).
SERVICE_EVERY = 16


class Connection:
    """An asyncio buffered protocol by its methods, not by inheritance (a compiled
    class cannot inherit from asyncio's): uvloop reads `get_buffer` and
    `buffer_updated` by name; asyncio's own loop, which hands a protocol that is not a
    `BufferedProtocol` its bytes, gets them through `data_received`."""

    def __init__(self, frontend: Frontend, kind: str) -> None:
        self.frontend = frontend
        self.kind = kind  # "tcp" | "unix"
        self.transport: asyncio.Transport | None = None
        s = frontend.settings
        self.authenticated = kind == "unix" or s.auth_token is None
        if self.authenticated:
            self.reader = framereader.FrameReader(s.max_frame_bytes)
        else:
            # Until `auth`, a small frame only, and one at a time (so the limit rises
            # before a frame pipelined behind the `auth` is measured); and a read buffer
            # just that size, so a crowd of connections that never authenticate holds
            # kilobytes each, not the 256 KiB a served connection reads with.
            limit = min(s.max_frame_bytes_before_auth, s.max_frame_bytes)
            self.reader = framereader.FrameReader(
                limit, scratch=limit + 4, limit_key="max_frame_bytes_before_auth"
            )
            self.reader.max_frames = 1
        self.opened = time.monotonic()
        self.handshaken = False  # a first complete frame has arrived
        self.frame_since: float | None = None  # when the partial frame now read began
        self.place = Place(frontend, kind)
        self.takes_frames = True  # the dispatcher may hand it packed replies
        self.peer = "?"
        self.inflight = 0
        self.closed = False
        self._read_paused = False
        self._write_paused = False
        self.close_after_reply = False
        self._out: list[bytes | memoryview] = []
        self._flush_scheduled = False
        self.regions: Regions | None = None
        if kind == "unix":
            st = frontend.settings
            self.regions = Regions(
                st.max_regions_per_connection, st.max_region_bytes_per_connection
            )
        self._limit = frontend.settings.max_inflight_per_connection
        # Draining (frontend/drain.py): set only once the server is stopping.
        self.told_stopping = 0.0  # when the first "stopping" reply went out
        self.last_active = 0.0
        self.half_closed_at = 0.0
        self._discard: bytearray | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        fe = self.frontend
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else f"{self.kind} socket"
        cap = self.place.full()
        if cap is not None:
            self.limit_close(
                "max_connections",
                f"{cap} connections already open on the {self.kind} listener",
                E.RESOURCE_EXHAUSTED,
            )
            return
        self.place.take()
        fe.connections.add(self)
        fe.watchdog.watch(self)
        if self.regions is not None:
            self.regions.peer_uid = peer_uid(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.place.give()
        self.frontend.connections.discard(self)
        self.frontend.dispatcher.cancel_connection(self)
        if self.regions is not None:
            self.regions.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._discard is not None:
            return memoryview(self._discard)
        return self.reader.get_buffer(sizehint)

    def data_received(self, data: bytes) -> None:
        """asyncio's own loop (the server without uvloop): the same path, by copy."""
        view = memoryview(data)
        while view and not self.closed:
            buf = self.get_buffer(len(view))
            n = min(len(buf), len(view))
            if not n:  # no room: never expected, but never a loop that cannot end
                self.limit_close(
                    "max_frame_bytes", "no room left to read into", E.RESOURCE_EXHAUSTED
                )
                return
            buf[:n] = view[:n]
            view = view[n:]
            self.buffer_updated(n)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    @property
    def reading_paused(self) -> bool:
        return self._read_paused

    def buffer_updated(self, nbytes: int) -> None:
        if self._discard is not None:
            return  # half-closed: what crosses the close is never read nor computed
        self.frontend.received_bytes += nbytes
        service = self.frontend.dispatcher.poller.service
        reader = self.reader
        while True:
            for i, body in enumerate(reader.buffer_updated(nbytes), 1):
                if self.closed:
                    return
                self.handshaken = True
                self._handle(body)
                if not i % SERVICE_EVERY:
                    service()  # keep the workers fed through a long burst
            if self.closed or not reader.more:
                break
            nbytes = 0  # frames held back until `auth` was seen
        exc = reader.error
        if exc is not None and not self.closed:
            code = E.UNAUTHENTICATED if exc.key == "max_frame_bytes_before_auth" else None
            self.limit_close(
                exc.key,
                f"frame length {exc.length} exceeds {exc.limit}" + (" before auth" if code else ""),
                code or E.RESOURCE_EXHAUSTED,
            )
            return
        if reader.partial:
            if self.frame_since is None and not self.closed:
                self.frame_since = time.monotonic()
                self.frontend.watchdog.watch(self)
        else:
            self.frame_since = None

    def limit_close(self, limit: str, why: str, code: str = E.DEADLINE_EXCEEDED) -> None:
        """Answer `code` (id null) naming the limit, close, and log it (rate-limited)."""
        self.frontend.limit_log(limit, f"closed {self.kind} connection from {self.peer}: {why}")
        self.reply(wire.error(None, code, f"server.{limit}: {why}; closing the connection"))
        self.close()

    # ---- requests ------------------------------------------------------------------
    def _handle(self, body: memoryview) -> None:
        rid: int | None = None
        try:
            if self.authenticated and not self.frontend.draining:
                # The common request in one typed pass; anything else (and every error)
                # takes the general path below. A body in the reused scratch buffer is
                # copied out, one in a buffer of its own is viewed.
                req = decode_infer(body, owned=not self.reader.in_scratch(body))
                if req is not None:
                    rid = req.id
                    self._infer(rid, req)
                    return
            msg = wire.unpack_body(body)
            rid = wire.request_id(msg)
            rid, op = wire.check_request(msg)
            if not self.authenticated and op != "auth":
                self.reply(
                    wire.error(
                        rid, E.UNAUTHENTICATED, f"op {clip(op)}: expected 'auth' first on TCP"
                    )
                )
                self.close()
                return
            if self.frontend.draining:
                self.last_active = now = time.monotonic()
                if op not in ANSWERED_WHILE_DRAINING:
                    self.told_stopping = self.told_stopping or now
                    raise ProtocolError(E.UNAVAILABLE, STOPPING_MESSAGE)
            if op == "infer":
                self._infer(rid, msg)
                return
            handler = self.frontend.ops.get(op)
            if handler is None:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"field 'op': expected one of {sorted([*self.frontend.ops, 'infer'])}, "
                    f"received {clip(op)}",
                )
            self.reply(wire.ok(rid, **handler(self, msg)))
        except ProtocolError as exc:
            if not self.authenticated and exc.code != E.UNAUTHENTICATED:
                # Before `auth`, a frame that is not one (not even valid msgpack) ends the
                # connection: otherwise garbage frames would hold it open forever.
                exc = ProtocolError(
                    E.UNAUTHENTICATED, f"expected 'auth' first on TCP; this frame: {exc.message}"
                )
                self.close_after_reply = True
            self.reply(wire.error(rid, exc.code, exc.message))
            if self.close_after_reply:
                self.close()
        except Exception as exc:  # a bug must not cost other clients their server
            self.frontend.log(f"internal error handling a request: {exc!r}")
            self.reply(wire.error(rid, E.INTERNAL, f"{type(exc).__name__}: {clip(str(exc))}"))
            if not self.authenticated:
                self.close()

    def _infer(self, rid: int, msg: dict[str, Any] | InferRequest) -> None:
        self.inflight += 1
        try:
            self.frontend.dispatcher.infer(self, rid, msg)
        except BaseException:
            self.inflight -= 1
            raise
        self._update_reading()

    def authenticate(self, token: Any) -> None:
        want = self.frontend.settings.auth_token
        if want is not None and (
            not isinstance(token, str) or not hmac.compare_digest(token.encode(), want.encode())
        ):
            self.close_after_reply = True
            raise ProtocolError(E.UNAUTHENTICATED, "field 'token': the token was rejected")
        if not self.authenticated:
            self.authenticated = True
            self.reader.max_frame_bytes = self.frontend.settings.max_frame_bytes
            self.reader.limit_key = "max_frame_bytes"
            self.reader.max_frames = None
            self.reader.resize_scratch(framereader.SCRATCH)

    # ---- replies -------------------------------------------------------------------
    def reply(self, msg: dict[str, Any], large: bool = False) -> None:
        """Queue a reply; replies produced in one turn of the loop leave in one write."""
        if not large:
            self.send_frame(wire.pack(msg))
        elif self._writable():
            self._out.extend(wire.pack_parts(msg))
            self._flush_soon()

    def send_frame(self, frame: bytes) -> None:
        """Queue a reply already packed into its frame."""
        if self._writable():
            self._out.append(frame)
            self._flush_soon()

    def _writable(self) -> bool:
        t = self.transport
        return not (t is None or self.closed or self.half_closed_at or t.is_closing())

    def _flush_soon(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.frontend.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        t = self.transport
        if out and t is not None and not t.is_closing() and not self.half_closed_at:
            t.writelines(out)
            self.frontend.sent_bytes += sum(map(len, out))

    def request_done(self) -> None:
        self.inflight -= 1
        if self.frontend.draining:
            self.last_active = time.monotonic()
        if self._read_paused:
            self._update_reading()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or self.closed or self.half_closed_at:
            return
        want_pause = self._write_paused or self.inflight >= self._limit
        if want_pause and not self._read_paused:
            self._read_paused = True
            t.pause_reading()
        elif (
            not want_pause
            and self._read_paused
            and (self.inflight <= self._limit // 2 or self.inflight == 0)
        ):
            self._read_paused = False
            t.resume_reading()

    def close_idle(self) -> None:
        """Draining: half-close after the replies already made; the peer sees EOF."""
        t = self.transport
        if t is None or self.closed or self.half_closed_at:
            return
        if not t.can_write_eof():
            self.close()
            return
        self.flush()
        self.half_closed_at = time.monotonic()
        self._discard = bytearray(65536)
        t.write_eof()
        if self._read_paused:  # keep reading, to see the peer's EOF and drop the rest
            self._read_paused = False
            t.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()  # replies already made go out before the close
            self.closed = True
            self.transport.close()
