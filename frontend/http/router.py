"""Requests, responses and the table that maps a method and path to a handler.

A handler gets the `Request` and returns a `Response`, or None when it answers later
through `request.respond` (a predict waits for a worker). Exact paths are looked up
in a dict; a prefix route takes every path under it and parses the rest itself
(TF Serving's `/v1/models/{name}[/versions/{v}|/labels/{l}][:predict|/metadata]`).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .protocol import HttpConnection

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

# Longest message echoed back in an error body: values a client sent may be in it.
MAX_ERROR_CHARS = 1000


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int,
        body: bytes,
        content_type: str = JSON,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers


def json_response(status: int, obj: Any) -> Response:
    return Response(status, orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY))


def error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """TF Serving's error shape: {"error": "..."}, the message cut short."""
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "... (cut)"
    return Response(status, orjson.dumps({"error": message}), JSON, headers)


class Request:
    __slots__ = (
        "body",
        "conn",
        "head_only",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "response",
    )

    def __init__(
        self,
        conn: HttpConnection,
        method: str,
        path: str,
        query: bytes | None,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.conn = conn
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.head_only = method == "HEAD"
        self.response: bytes | None = None  # the encoded reply, once there is one

    def respond(self, resp: Response) -> None:
        self.conn.respond(self, resp)


Handler = Callable[[Request], Response | None]


class Router:
    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefix: list[tuple[str, dict[str, Handler]]] = []

    def add(self, methods: tuple[str, ...], path: str, handler: Handler) -> None:
        table = self._exact.setdefault(path, {})
        for m in methods:
            table[m] = handler
        if "GET" in methods:
            table.setdefault("HEAD", handler)

    def add_prefix(self, methods: tuple[str, ...], prefix: str, handler: Handler) -> None:
        table = {m: handler for m in methods}
        if "GET" in methods:
            table.setdefault("HEAD", handler)
        self._prefix.append((prefix, table))

    def paths(self) -> list[str]:
        return sorted([*self._exact, *(p + "..." for p, _ in self._prefix)])

    def dispatch(self, req: Request) -> Response | None:
        table = self._exact.get(req.path)
        if table is None:
            for prefix, t in self._prefix:
                if req.path.startswith(prefix):
                    table = t
                    break
        if table is None:
            return error(
                HTTPStatus.NOT_FOUND,
                f"path: expected one of {self.paths()}, received {req.path[:200]!r}",
            )
        handler = table.get(req.method)
        if handler is None:
            allowed = ", ".join(sorted(table))
            return error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"method: expected {allowed} for {req.path[:200]!r}, received {req.method}",
                (("Allow", allowed),),
            )
        return handler(req)
