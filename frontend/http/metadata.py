"""Model status and metadata in the JSON shapes TF Serving's REST API answers with
(GetModelStatusResponse and GetModelMetadataResponse printed by protobuf's JSON
printer with every field present: int64 as strings, dims as {"size", "name"})."""

from __future__ import annotations

from typing import Any

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError

from ..registry import AVAILABLE, LOADING, UNAVAILABLE_STATE, UNLOADING, ModelState, VersionState

TF_DTYPES = {
    "bool": "DT_BOOL",
    "int8": "DT_INT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "uint8": "DT_UINT8",
    "uint16": "DT_UINT16",
    "uint32": "DT_UINT32",
    "uint64": "DT_UINT64",
    "float16": "DT_HALF",
    "float32": "DT_FLOAT",
    "float64": "DT_DOUBLE",
    "string": "DT_STRING",
}

# TF Serving's ManagerState names; a version that failed or keeps crashing is END with
# the reason as its error, as TF Serving reports a version whose load failed.
_STATES = {LOADING: "LOADING", AVAILABLE: "AVAILABLE", UNLOADING: "UNLOADING"}


def _version_status(v: VersionState) -> dict[str, Any]:
    failed = v.state == UNAVAILABLE_STATE
    return {
        "version": str(v.number),
        "state": _STATES.get(v.state, "END"),
        "status": {
            "error_code": "UNKNOWN" if failed else "OK",
            "error_message": v.message if failed else "",
        },
    }


def model_status(model: ModelState, version: int | None) -> dict[str, Any]:
    if version is not None:
        v = model.versions.get(version)
        if v is None:
            raise ProtocolError(
                E.NOT_FOUND,
                f"path: model {model.name!r} has versions {sorted(model.versions)}, "
                f"received {version}",
            )
        return {"model_version_status": [_version_status(v)]}
    if not model.versions:
        raise ProtocolError(
            E.NOT_FOUND,
            f"model {model.name!r}: no version found yet"
            + (f" ({model.message})" if model.message else ""),
        )
    return {
        "model_version_status": [
            _version_status(model.versions[n]) for n in sorted(model.versions, reverse=True)
        ]
    }


def _tensor(name: str, t: dict[str, Any]) -> dict[str, Any]:
    shape = t["shape"]
    if shape is None:
        tensor_shape: dict[str, Any] = {"dim": [], "unknown_rank": True}
    else:
        tensor_shape = {"dim": [{"size": str(d), "name": ""} for d in shape], "unknown_rank": False}
    return {
        "dtype": TF_DTYPES.get(t["dtype"], "DT_INVALID"),
        "tensor_shape": tensor_shape,
        "name": name,
    }


def model_metadata(model: str, v: VersionState) -> dict[str, Any]:
    sigs = {
        name: {
            "inputs": {k: _tensor(k, t) for k, t in sig["inputs"].items()},
            "outputs": {k: _tensor(k, t) for k, t in sig["outputs"].items()},
            "method_name": "tensorflow/serving/predict",
            "defaults": {},
        }
        for name, sig in v.signatures.items()
    }
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(v.number)},
        "metadata": {
            "signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signature_def": sigs,
            }
        },
    }
