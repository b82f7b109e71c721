"""TF Serving's REST paths: which model, which version or label, which call.

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signatures
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    inference

As in TF Serving, `models`, `versions`, `labels` and the call are matched without
regard to case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ringserve.ipc.errors import INVALID_ARGUMENT, NOT_FOUND, ProtocolError

PREFIX = "/v1/models/"

_SPEC = r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
_GET = re.compile(_SPEC + r"(?:/(?P<sub>metadata))?", re.IGNORECASE)
_POST = re.compile(_SPEC + r":(?P<call>classify|regress|predict)", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    model: str
    version: int | None
    label: str | None
    call: str  # "status" | "metadata" | "predict" | "classify" | "regress"


def parse(method: str, path: str) -> Target:
    m = (_POST if method == "POST" else _GET).fullmatch(path)
    if m is None:
        shapes = {
            "POST": "/v1/models/{name}[/versions/{v}|/labels/{l}]:predict",
            "GET": "/v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]",
        }
        raise ProtocolError(
            INVALID_ARGUMENT if method in shapes else NOT_FOUND,
            f"path: expected {shapes.get(method, shapes['GET'])}, received {method} {path[:200]!r}",
        )
    g = m.groupdict()
    version = int(g["version"]) if g["version"] is not None else None
    if version is not None and version >= 1 << 63:
        raise ProtocolError(INVALID_ARGUMENT, f"path: version {g['version'][:30]} is too large")
    if method == "POST":
        call = g["call"].lower()
    else:
        call = "metadata" if g.get("sub") else "status"
    return Target(g["name"], version, g["label"], call)
