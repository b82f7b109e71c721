"""The common `infer` request decoded in one typed pass (msgspec), for the server's
fast path.

A frame body is first tried against `InferRequest` (ipc/requesttypes.py): an `infer`
with numeric `data` tensors and only the fields the protocol names. msgspec checks
the types while it decodes (no dict per tensor, no walk for msgpack timestamps: an
extension value has no typed field to land in), and a `data` field comes out as a
view of the body, not a copy. Anything else (another op, a tensor in shared memory,
a string tensor, an unknown field, a wrong type, bad msgpack) returns None and the
caller decodes the body the general way (wire.unpack_body and the checks that name
the field, the expected and the received value). So this module decides nothing a
client can see: it only makes the common case cheap, and every error still comes
from one place.

A view into a body is valid only as long as the body's buffer is: a connection's
scratch buffer is reused for the next read, so `owned=False` decodes a copy of the
body (bytes, which the views keep alive), while a large body that has a buffer of its
own (framereader.FrameReader) is kept alive by the views and needs no copy.
"""

from __future__ import annotations

import msgspec

from .requesttypes import InferRequest, WireTensor

__all__ = ["InferRequest", "WireTensor", "decode_infer"]

_decoder = msgspec.msgpack.Decoder(InferRequest)


def decode_infer(body: memoryview, owned: bool) -> InferRequest | None:
    """The request if `body` is a plain `infer` that decodes as `InferRequest`, else
    None (the caller then takes the general path, which explains what is wrong).

    `owned`: the body's buffer stays valid while the views into it live; otherwise
    the body is copied first, in one piece, and the tensors view the copy (one
    allocation a request, where copying each tensor out after the decode took one a
    tensor and a pass over them)."""
    src: bytes | memoryview = body if owned else bytes(body)
    try:
        req = _decoder.decode(src)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if req.op != "infer":
        return None
    return req
