"""TF Serving's REST API on the `http` listener: model status, metadata, predict.

Predict goes through the same `Dispatcher.infer` as a msgpack `infer` (queues,
batching, deadlines, statistics): the HTTP connection is the dispatcher's `Replier`,
and predict.py converts the JSON to the wire tensors the dispatcher checks and the
reply back to JSON. Errors are TF Serving's: {"error": "..."} with the HTTP status
TF Serving gives each code (http_server.cc's ToHTTPStatusCode).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError

from . import predict, rest_paths
from .metadata import model_metadata, model_status
from .router import Request, Response, Router, error

if TYPE_CHECKING:
    from ..server import Frontend
    from .protocol import HttpConnection

HTTP_STATUS = {
    E.INVALID_ARGUMENT: 400,
    E.FAILED_PRECONDITION: 400,
    E.NOT_FOUND: 404,
    E.UNAUTHENTICATED: 401,
    E.RESOURCE_EXHAUSTED: 429,
    E.CANCELLED: 499,
    E.INTERNAL: 500,
    E.UNAVAILABLE: 503,
    E.DEADLINE_EXCEEDED: 504,
}


def failure(code: str, message: str) -> Response:
    return error(HTTP_STATUS.get(code, 500), message)


def add_rest(router: Router, frontend: Frontend) -> None:
    api = RestApi(frontend)
    router.add_prefix(("GET", "POST"), rest_paths.PREFIX, api.handle)


class RestApi:
    def __init__(self, frontend: Frontend) -> None:
        self.frontend = frontend
        self._metadata: dict[tuple[str, int], tuple[Any, bytes]] = {}

    def handle(self, req: Request) -> Response | None:
        try:
            target = rest_paths.parse(req.method if req.method != "HEAD" else "GET", req.path)
            if target.call == "predict":
                return self.predict(req, target)
            if target.call in ("classify", "regress"):
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"path: :{target.call} is not served by ringserve (tf.Example signatures); "
                    "use :predict",
                )
            version = self._version(target)
            model = self.frontend.registry.model(target.model)
            if target.call == "metadata":
                return self.metadata(model, version)
            return Response(HTTPStatus.OK, orjson.dumps(model_status(model, version)))
        except ProtocolError as exc:
            return failure(exc.code, exc.message)

    def _version(self, target: rest_paths.Target) -> int | None:
        if target.label is None:
            return target.version
        model = self.frontend.registry.model(target.model)
        labels = dict(model.settings.version_labels)
        if target.label not in labels:
            raise ProtocolError(
                E.NOT_FOUND,
                f"path: label {target.label[:80]!r} of model {target.model!r}: expected one of "
                f"{sorted(labels)}",
            )
        return labels[target.label]

    def metadata(self, model: Any, version: int | None) -> Response:
        v = model.resolve(version)
        key = (model.name, v.number)
        cached = self._metadata.get(key)
        if cached is None or cached[0] is not v.signatures:
            cached = (v.signatures, orjson.dumps(model_metadata(model.name, v)))
            self._metadata[key] = cached
        return Response(HTTPStatus.OK, cached[1])

    def predict(self, req: Request, target: rest_paths.Target) -> Response | None:
        fe = self.frontend
        if getattr(fe, "draining", False):
            return failure(E.UNAVAILABLE, "server is stopping")
        version = self._version(target)
        model = fe.registry.model(target.model)
        v = model.resolve(version)
        body = predict.parse_body(req.body, max(1, fe.settings.max_frame_bytes // 8))
        sig_name = predict.signature_name(body)
        sig = v.signatures.get(sig_name)
        if sig is None:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"signature_name: model {model.name!r} version {v.number} has signatures "
                f"{sorted(v.signatures)}, received {sig_name[:80]!r}",
            )
        fmt, inputs = predict.inputs(
            body, sig["inputs"], max(1, len(req.body)), fe.settings.max_tensor_rank
        )
        conn: HttpConnection = req.conn
        conn.next_id += 1
        cid = conn.next_id

        def done(msg: dict[str, Any]) -> None:
            # Called once per predict: whatever goes wrong here, the request is answered.
            if msg.get("ok"):
                try:
                    out = Response(HTTPStatus.OK, predict.render(fmt, msg["outputs"]))
                except ProtocolError as exc:
                    out = failure(exc.code, exc.message)
                except Exception as exc:
                    fe.log(f"internal error writing a predict reply: {exc!r}")
                    out = failure(E.INTERNAL, f"writing the reply: {type(exc).__name__}: {exc}")
            else:
                err = msg["error"]
                out = failure(err["code"], err["message"])
            req.respond(out)

        conn.waiting[cid] = done
        msg = {"model": model.name, "version": v.number, "signature": sig_name, "inputs": inputs}
        if "timeout_ms" in body:  # ringserve's extension: the msgpack infer's deadline
            msg["timeout_ms"] = body["timeout_ms"]
        try:
            fe.dispatcher.infer(conn, cid, msg)
        except ProtocolError:
            conn.waiting.pop(cid, None)
            raise
        return None
