"""Routes every HTTP listener answers: liveness, readiness, metrics.

/readyz asks what the `health` op answers (`Frontend.ready`), so it says exactly what
`health.ready` says,
whatever makes the server unready (loading, a model without a serving worker, a
drain).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

from .router import TEXT, Request, Response, Router

if TYPE_CHECKING:
    from ..server import Frontend

METRICS_PATHS = ("/metrics", "/monitoring/prometheus/metrics")


def add_probes(router: Router, frontend: Frontend) -> None:
    def healthz(req: Request) -> Response:
        return Response(HTTPStatus.OK, b"ok\n", TEXT)

    def readyz(req: Request) -> Response:
        if frontend.ready():
            return Response(HTTPStatus.OK, b"ready\n", TEXT)
        return Response(HTTPStatus.SERVICE_UNAVAILABLE, b"not ready\n", TEXT)

    def metrics(req: Request) -> Response:
        content_type, body = frontend.metrics_exposition(req.headers.get("accept"))
        return Response(HTTPStatus.OK, body, content_type)

    router.add(("GET",), "/healthz", healthz)
    router.add(("GET",), "/readyz", readyz)
    for path in METRICS_PATHS:
        router.add(("GET",), path, metrics)
