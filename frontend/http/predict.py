"""A TF Serving predict body -> the `inputs` of an `infer`, and its outputs -> the
JSON TF Serving answers with.

Row format: {"instances": [...]} -> {"predictions": [...]}. An instance is the value
of the only input, or an object naming every input; the instances are stacked along
a new first dimension. One output: a list of its rows; several: a list of objects,
one per row. Columnar format: {"inputs": value-or-object} -> {"outputs": ...}, each
input taken as a whole tensor.
"""

from __future__ import annotations

from typing import Any

import orjson

from ringserve.ipc.errors import INVALID_ARGUMENT, ProtocolError

from .jsontensors import from_wire, is_b64, to_array, to_wire

ROW = "row"
COLUMNAR = "columnar"
_DUMPS = orjson.OPT_SERIALIZE_NUMPY


def _err(message: str) -> ProtocolError:
    return ProtocolError(INVALID_ARGUMENT, message)


def _named(v: Any) -> bool:
    return type(v) is dict and not is_b64(v)


def parse_body(body: bytes, max_values: int) -> dict[str, Any]:
    """`max_values` bounds the JSON values, counted (as commas, an upper bound) before
    parsing: a value costs Python tens of bytes, so the objects parsing creates stay
    within a small multiple of the body's size."""
    values = body.count(b",") + 1
    if values > max_values:
        raise _err(
            f"body: expected at most {max_values} JSON values (max_frame_bytes / 8), "
            f"received about {values}"
        )
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _err(f"body: expected JSON, received bytes that fail to parse: {exc}") from None
    if type(req) is not dict:
        raise _err(f"body: expected a JSON object, received {type(req).__name__}")
    return req


def signature_name(req: dict[str, Any]) -> str:
    sig = req.get("signature_name", "serving_default")
    if type(sig) is not str:
        raise _err(f"signature_name: expected a string, received {sig!r:.80}")
    return sig or "serving_default"


def inputs(
    req: dict[str, Any], spec: dict[str, Any], max_elements: int, max_rank: int
) -> tuple[str, dict[str, Any]]:
    """(format, wire inputs) for the dispatcher; `spec` is the signature's inputs."""
    has_rows, has_cols = "instances" in req, "inputs" in req
    if has_rows == has_cols:
        raise _err(
            "body: expected exactly one of 'instances' (row format) or 'inputs' (columnar "
            f"format), received {'both' if has_rows else 'neither'}"
        )
    names = sorted(spec)
    if has_rows:
        fmt, values = ROW, _rows(req["instances"], names)
    else:
        fmt, values = COLUMNAR, _columns(req["inputs"], names)
    out = {}
    for name, value in values.items():
        want = spec.get(name)
        if want is None:
            raise _err(f"inputs: unknown {name[:80]!r}; expected {names}")
        field = f"inputs.{name}"
        a = to_array(value, want["dtype"], field, max_elements, max_rank)
        out[name] = to_wire(a, want["dtype"])
    return fmt, out


def _rows(instances: Any, names: list[str]) -> dict[str, Any]:
    if type(instances) is not list or not instances:
        raise _err(f"instances: expected a non-empty list, received {instances!r:.80}")
    if not _named(instances[0]):
        if len(names) != 1:
            raise _err(
                f"instances: expected objects naming the inputs {names} (the signature has "
                f"{len(names)} inputs), received {instances[0]!r:.80}"
            )
        return {names[0]: instances}
    keys = set(instances[0])
    for i, inst in enumerate(instances):
        if not _named(inst) or set(inst) != keys:
            raise _err(
                f"instances[{i}]: expected an object with the keys of instances[0] "
                f"{sorted(keys)}, received {inst!r:.80}"
            )
    return {k: [inst[k] for inst in instances] for k in keys}


def _columns(value: Any, names: list[str]) -> dict[str, Any]:
    if _named(value):
        return dict(value)
    if len(names) != 1:
        raise _err(f"inputs: expected an object naming the inputs {names}, received {value!r:.80}")
    return {names[0]: value}


def render(fmt: str, outputs: dict[str, Any]) -> bytes:
    conv = {name: from_wire(name, t) for name, t in outputs.items()}
    if fmt == COLUMNAR:
        if len(conv) == 1:
            return orjson.dumps({"outputs": next(iter(conv.values()))}, option=_DUMPS)
        return orjson.dumps({"outputs": conv}, option=_DUMPS)
    if len(conv) == 1:
        return orjson.dumps({"predictions": next(iter(conv.values()))}, option=_DUMPS)
    rows = {name: len(t["shape"]) and t["shape"][0] for name, t in outputs.items()}
    if len(set(rows.values())) != 1 or not all(t["shape"] for t in outputs.values()):
        raise _err(
            f"outputs: the row format needs one batch size shared by every output, the model "
            f"returned first dimensions {rows}; send 'inputs' (columnar format) instead"
        )
    n = next(iter(rows.values()))
    items = list(conv.items())
    return orjson.dumps(
        {"predictions": [{k: v[i] for k, v in items} for i in range(n)]}, option=_DUMPS
    )
