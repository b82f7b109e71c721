"""One HTTP/1.1 connection: httptools parses, a `Router` answers, replies leave in
request order.

Bounds, all checked before anything is allocated for them: the request line and
headers together (`MAX_HEADER_BYTES`), the body (`server.max_frame_bytes`, from
Content-Length before the body is read, and counted for a chunked one), and the
requests a pipelining client may have waiting (`server.max_inflight_per_connection`;
reading pauses there). A malformed request is answered 400 and closes its own
connection only. A connection that sends nothing for `server.http_idle_timeout_seconds`
while nothing of it is in flight, or takes that long to send one request, is closed.
Slowloris, as on the msgpack listeners: a connection must complete its first request
within `server.handshake_timeout_seconds` of connecting, and any request within
`server.frame_timeout_seconds` of its first byte (time the server itself paused
reading does not count); past either it is answered 408 naming the limit and closed,
with a rate-limited log line.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools

from ..listened import Place
from .router import JSON, Request, Response, Router, error

if TYPE_CHECKING:
    from ..regions import Regions
    from ..server import Frontend

# The request line and all headers of one request.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100

_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


class _Refuse(Exception):
    """Raised from a parser callback: answer this and close the connection."""

    def __init__(self, resp: Response) -> None:
        self.resp = resp


class HttpConnection(asyncio.Protocol):
    def __init__(self, frontend: Frontend, router: Router, kind: str) -> None:
        self.frontend = frontend
        self.router = router
        self.kind = kind  # the listener: "http" | "metrics"
        self.loop = frontend.loop
        s = frontend.settings
        self.max_body = s.max_frame_bytes
        self.max_pipeline = s.max_inflight_per_connection
        self.idle_timeout = s.http_idle_timeout_seconds
        self.handshake_timeout = s.handshake_timeout_seconds
        self.frame_timeout = s.frame_timeout_seconds
        self.handshaken = False  # a first complete request has arrived
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.regions: Regions | None = None  # a dispatcher Replier; HTTP has no regions
        self.takes_frames = False  # its replies are JSON, built from the reply map
        self.closed = False
        self.place = Place(frontend, kind)
        self.pipeline: deque[Request] = deque()  # in arrival order; replies leave so
        self.waiting: dict[int, Any] = {}  # predict id -> reply callback (rest.py)
        self.next_id = 0
        self._closing = False  # no more requests: close once the queued replies are out
        self._read_paused = False
        self._write_paused = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # What the frontend's drain looks at on every connection (time.monotonic()).
        self.last_active = 0.0
        self.told_stopping = 0.0
        self.half_closed_at = 0.0
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._started = 0.0  # loop time the current request began; 0: between requests
        self._continue = False

    # ---- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        fe = self.frontend
        cap = self.place.full()
        if cap is not None:
            # As on the msgpack listeners: refused before anything is read.
            self._refuse(
                error(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"max_connections: {cap} connections already open on the {self.kind} listener",
                )
            )
            return
        self.place.take()
        fe.connections.add(self)
        self._opened = self._last = self.loop.time()
        self._arm(self._opened)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.place.give()
        self.frontend.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.waiting:
            self.waiting.clear()
            self.frontend.dispatcher.cancel_connection(self)
        self.pipeline.clear()

    @property
    def inflight(self) -> int:
        """Requests read and not yet answered."""
        return len(self.pipeline)

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # a refused request: nothing after it is read
        self._last = self.loop.time()
        self.last_active = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refuse = exc.__context__
            if isinstance(refuse, _Refuse):
                self._refuse(refuse.resp)
            else:
                self._refuse(error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {refuse!r}"))
        except httptools.HttpParserUpgrade:
            self._refuse(error(HTTPStatus.BAD_REQUEST, "Upgrade: not supported by this server"))
        except httptools.HttpParserError as exc:
            self._refuse(error(HTTPStatus.BAD_REQUEST, f"malformed HTTP request: {exc}"))

    # ---- httptools callbacks -------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset_message()
        self._started = self.loop.time()

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise _Refuse(
                error(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"request line and headers: expected at most {MAX_HEADER_BYTES} bytes, "
                    f"received more",
                )
            )

    def on_url(self, url: bytes) -> None:
        self._count_header(len(url))
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header(len(name) + len(value) + 4)
        if len(self._headers) >= MAX_HEADERS:
            raise _Refuse(
                error(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"headers: expected at most {MAX_HEADERS}, received more",
                )
            )
        key = name.decode("latin-1").lower()
        val = value.decode("latin-1")
        old = self._headers.get(key)
        self._headers[key] = val if old is None else f"{old}, {val}"

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body:
                raise _Refuse(
                    error(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"Content-Length: expected at most max_frame_bytes ({self.max_body}), "
                        f"received {length[:40]}",
                    )
                )
        if self._headers.get("expect", "").lower() == "100-continue":
            # curl asks before sending a body over 1 KiB. With replies still owed,
            # the interim answer waits for them: replies leave in order.
            if self.pipeline:
                self._continue = True
            elif self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.max_body:
            raise _Refuse(
                error(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"body: expected at most max_frame_bytes ({self.max_body}) bytes, "
                    "received more",
                )
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        p = self.parser
        url = httptools.parse_url(self._url)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        req = Request(
            self,
            p.get_method().decode("ascii", "replace"),
            url.path.decode("utf-8", "replace"),
            url.query,
            self._headers,
            body,
            p.should_keep_alive(),
        )
        self._reset_message()
        self.handshaken = True
        self.pipeline.append(req)
        if len(self.pipeline) >= self.max_pipeline:
            self._update_reading()
        try:
            resp = self.router.dispatch(req)
        except Exception as exc:  # a bug must not cost other clients their server
            self.frontend.log(f"internal error handling an HTTP request: {exc!r}")
            resp = error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        if resp is not None:
            self.respond(req, resp)
        if not req.keep_alive:
            self._closing = True

    # ---- the dispatcher's Replier (REST predict) ------------------------------------
    def reply(self, msg: dict[str, Any], large: bool = False) -> None:
        """A predict's outcome from the dispatcher; rest.py turns it into the response.
        Output data may be a view of a worker's ring: it is converted before returning."""
        done = self.waiting.pop(msg.get("id"), None)  # type: ignore[arg-type]
        if done is not None and not self.closed:
            done(msg)

    def send_frame(self, frame: bytes) -> None:
        # Never called: `takes_frames` is False, so the dispatcher hands over the map.
        raise TypeError("an HTTP connection answers in JSON, built from the reply map")

    def request_done(self) -> None:
        """Flow control counts the pipeline, which the response itself shortens."""

    # ---- replies -------------------------------------------------------------------
    def respond(self, req: Request, resp: Response) -> None:
        if req.response is not None or self.closed:
            return
        if (
            getattr(self.frontend, "draining", False)
            and req.keep_alive
            and self.pipeline
            and req is self.pipeline[-1]
        ):
            # A draining server tells each client to reconnect (elsewhere) after its
            # last reply owed; nothing sent after that is read.
            req.keep_alive = False
            self._closing = True
            self.told_stopping = self.told_stopping or time.monotonic()
        close = not req.keep_alive
        head = [
            _status_line(resp.status),
            b"Content-Type: ",
            resp.content_type.encode("latin-1"),
            b"\r\nContent-Length: ",
            str(len(resp.body)).encode(),
            b"\r\n",
        ]
        for k, v in resp.headers:
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        if close:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        if not req.head_only:
            head.append(resp.body)
        req.response = b"".join(head)
        if self.pipeline and req is self.pipeline[0]:
            self._flush()

    def _flush(self) -> None:
        t = self.transport
        out: list[bytes] = []
        q = self.pipeline
        while q and q[0].response is not None:
            req = q.popleft()
            out.append(req.response)  # type: ignore[arg-type]  # checked in the loop test
            if not req.keep_alive:
                self._closing = True
                q.clear()
                break
        if t is None or t.is_closing():
            return
        if out:
            t.writelines(out)
        if self._closing and not q:
            self.close()
            return
        if not q and self._continue:
            self._continue = False
            t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self._read_paused:
            self._update_reading()

    def _refuse(self, resp: Response) -> None:
        """Answer a request that cannot be read to its end, then close: the framing of
        anything after it cannot be trusted."""
        self._closing = True
        req = Request(self, "GET", "", None, {}, b"", False)
        self.pipeline.append(req)
        self.respond(req, resp)

    def pause_writing(self) -> None:
        self._write_paused = True  # the client does not read its replies: stop reading
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or self.closed:
            return
        want_pause = self._write_paused or len(self.pipeline) >= self.max_pipeline
        if want_pause and not self._read_paused:
            self._read_paused = True
            t.pause_reading()
        elif not want_pause and self._read_paused and len(self.pipeline) <= self.max_pipeline // 2:
            self._read_paused = False
            t.resume_reading()

    def _deadlines(self) -> list[tuple[float, str]]:
        """(when, limit) for each time limit that applies to the connection now."""
        out = []
        if not self.handshaken and self.handshake_timeout > 0:
            out.append((self._opened + self.handshake_timeout, "handshake_timeout_seconds"))
        if self._started:  # a request has begun and not ended
            if self.frame_timeout > 0:
                out.append((self._started + self.frame_timeout, "frame_timeout_seconds"))
            if self.idle_timeout > 0:
                out.append((self._started + self.idle_timeout, "http_idle_timeout_seconds"))
        elif not self.pipeline and self.idle_timeout > 0:
            out.append((self._last + self.idle_timeout, ""))  # idle: closed without a word
        return out

    def _arm(self, now: float) -> None:
        limits = [t for t in (self.idle_timeout, self.handshake_timeout, self.frame_timeout) if t]
        if not limits:
            return
        # With nothing due (a request in flight: its deadline is the dispatcher's), look
        # again after the shortest limit; new deadlines begin with the next request.
        due = min((at for at, _ in self._deadlines()), default=now + min(limits))
        self._timer = self.loop.call_later(max(0.05, due - now), self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.closed or self._closing:
            return
        now = self.loop.time()
        if self._started and self._read_paused:
            self._started = now  # our pause (flow control), not the client's dribble
        for at, limit in sorted(self._deadlines()):
            if at > now:
                break
            if not limit:
                self.close()
                return
            if limit == "handshake_timeout_seconds":
                why = f"no complete request within {self.handshake_timeout:g} s of connecting"
            else:
                t = self.frame_timeout if limit == "frame_timeout_seconds" else self.idle_timeout
                why = (
                    f"a request begun {now - self._started:.1f} s ago is still incomplete "
                    f"(limit {t:g} s)"
                )
            peer = self.transport.get_extra_info("peername") if self.transport else None
            who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"
            self.frontend.limit_log(limit, f"closed {self.kind} connection from {who}: {why}")
            self._refuse(
                error(HTTPStatus.REQUEST_TIMEOUT, f"server.{limit}: {why}; closing the connection")
            )
            return
        self._arm(now)

    def close_idle(self) -> None:
        """Draining, nothing in flight: close (a client sees EOF between requests)."""
        if not self.pipeline:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


__all__ = ["JSON", "HttpConnection"]
