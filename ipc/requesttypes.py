"""The typed form of a plain `infer` request (msgspec Structs), decoded by
ipc/requests.py. A module of its own because a msgspec Struct class cannot be compiled
by mypyc (pkg/native.py): the decode that uses them is.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .tensors import MAX_DIM, MAX_RANK

Dim = Annotated[int, msgspec.Meta(ge=0, le=MAX_DIM)]


class WireTensor(msgspec.Struct, forbid_unknown_fields=True):
    dtype: str
    # The rank cap is checked on the array's header, before its items are decoded.
    shape: Annotated[list[Dim], msgspec.Meta(max_length=MAX_RANK)]
    data: memoryview


class InferRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[int, msgspec.Meta(ge=0)]  # msgpack ints stop at 2**64 - 1
    op: str
    model: str
    inputs: dict[str, WireTensor]
    version: int | None = None
    signature: str = "serving_default"
    outputs: list[str] | None = None
    timeout_ms: int | float | None = None
