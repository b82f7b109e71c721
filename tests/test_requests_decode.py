"""ipc/requests.py: the typed fast decode of a plain `infer` takes exactly the requests
the general path would accept as they are, and hands everything else back (None) to
the general path, which names the field in its error."""

from __future__ import annotations

import mmap
from typing import Any

import msgpack
import pytest

from ringserve.ipc.requests import decode_infer

X = {"dtype": "float32", "shape": [1, 2], "data": b"\x00" * 8}
GOOD: dict[str, Any] = {"id": 7, "op": "infer", "model": "m", "inputs": {"x": X}}


def body(msg: Any, tail: bytes = b"") -> memoryview:
    return memoryview(msgpack.packb(msg, use_bin_type=True) + tail)


def test_plain_infer_decodes_with_defaults() -> None:
    req = decode_infer(body(GOOD), owned=False)
    assert req is not None
    assert (req.id, req.op, req.model, req.version, req.signature) == (
        7,
        "infer",
        "m",
        None,
        "serving_default",
    )
    assert (req.outputs, req.timeout_ms) == (None, None)
    t = req.inputs["x"]
    assert (t.dtype, t.shape, bytes(t.data)) == ("float32", [1, 2], b"\x00" * 8)


def test_every_named_field_decodes() -> None:
    msg = {**GOOD, "version": 3, "signature": "s", "outputs": ["y"], "timeout_ms": 2.5}
    req = decode_infer(body(msg), owned=False)
    assert req is not None
    assert (req.version, req.signature, req.outputs, req.timeout_ms) == (3, "s", ["y"], 2.5)


@pytest.mark.parametrize(
    "msg",
    [
        {**GOOD, "op": "health"},
        {**GOOD, "id": True},
        {**GOOD, "id": -1},
        {**GOOD, "id": "7"},
        {**GOOD, "version": True},
        {**GOOD, "timeout_ms": False},
        {**GOOD, "extra": 1},
        {**GOOD, "output_shm": {}},
        {**GOOD, "inputs": {"x": {**X, "data": "text"}}},
        {**GOOD, "inputs": {"x": {**X, "data": [b"a", b"b"]}}},
        {**GOOD, "inputs": {"x": {"dtype": "float32", "shape": [1, 2], "shm": {}}}},
        {**GOOD, "inputs": {"x": {**X, "extra": 1}}},
        {**GOOD, "inputs": {"x": {**X, "shape": [1, -2]}}},
        {**GOOD, "inputs": {"x": {**X, "shape": [1] * 33}}},
        {**GOOD, "inputs": {"x": {**X, "shape": [1, True]}}},
        {**GOOD, "inputs": {1: X}},
        {**GOOD, "version": msgpack.Timestamp(1, 0)},
        {**GOOD, "inputs": {"x": {**X, "dtype": msgpack.ExtType(5, b"")}}},
        [1, 2],
    ],
)
def test_anything_else_goes_to_the_general_path(msg: Any) -> None:
    assert decode_infer(body(msg), owned=False) is None


def test_bad_msgpack_and_trailing_bytes_go_to_the_general_path() -> None:
    assert decode_infer(body(GOOD, tail=b"\xc0"), owned=False) is None
    assert decode_infer(memoryview(b"\x85\xa2id"), owned=False) is None
    assert decode_infer(memoryview(b"\xc1"), owned=False) is None


def test_scratch_bodies_are_copied_out() -> None:
    buf = bytearray(msgpack.packb(GOOD, use_bin_type=True))
    req = decode_infer(memoryview(buf), owned=False)
    assert req is not None
    buf[:] = bytes(len(buf))  # the connection reads its next frames over it
    data = req.inputs["x"].data
    # a view of a copy of the body, which it keeps alive: not of the reused buffer
    assert bytes(data) == b"\x00" * 8 and isinstance(data.obj, bytes)


def test_the_reader_says_which_bodies_sit_in_its_scratch_buffer() -> None:
    from ringserve.ipc import framereader, wire

    r = framereader.FrameReader(1 << 24)
    small, big = wire.pack(GOOD), wire.pack({**GOOD, "pad": b"x" * (framereader.SCRATCH + 10)})
    for frame, scratch in ((small, True), (big, False)):
        got: list[memoryview] = []
        pos = 0
        while not got:
            buf = r.get_buffer(-1)
            n = min(len(buf), len(frame) - pos)
            buf[:n] = frame[pos : pos + n]
            pos += n
            got = r.buffer_updated(n)
        assert r.in_scratch(got[0]) is scratch


def test_owned_bodies_are_viewed_and_kept_alive() -> None:
    raw = msgpack.packb({**GOOD, "inputs": {"x": {**X, "data": b"\x01" * 8}}}, use_bin_type=True)
    m = mmap.mmap(-1, len(raw), flags=mmap.MAP_PRIVATE)
    m[:] = raw
    req = decode_infer(memoryview(m), owned=True)
    assert req is not None
    data = req.inputs["x"].data
    assert isinstance(data, memoryview) and bytes(data) == b"\x01" * 8
    with pytest.raises(BufferError):  # the reader must not recycle it while viewed
        m.resize(len(raw))
    del req, data
    m.resize(len(raw))
    m.close()


# ---- frontend/checks.py TypedInputChecks: the same checks, remembered per layout -------


def typed(msg: dict[str, Any]) -> Any:
    req = decode_infer(body(msg), owned=False)
    assert req is not None
    return req.inputs


SPEC = {"x": {"dtype": "float32", "shape": [-1, 2]}}


def test_typed_checks_remember_a_layout_and_still_check_every_length() -> None:
    from ringserve.frontend.checks import TypedInputChecks, check_inputs
    from ringserve.ipc.errors import ProtocolError

    tc = TypedInputChecks()
    for _ in range(3):  # the first checks and remembers, the second hits, then the last
        (name, dtype, shape, data), *_ = tc.check(typed(GOOD), SPEC, 32)
        assert (name, dtype, shape, bytes(data)) == ("x", "float32", [1, 2], b"\x00" * 8)
    short = {**GOOD, "inputs": {"x": {**X, "data": b"\x00" * 7}}}
    with pytest.raises(ProtocolError) as typed_err:
        tc.check(typed(short), SPEC, 32)
    with pytest.raises(ProtocolError) as general_err:
        check_inputs(short["inputs"], SPEC, None, 32)
    assert typed_err.value.message == general_err.value.message
    assert "inputs.x.data" in typed_err.value.message


@pytest.mark.parametrize(
    "inputs",
    [
        {"x": {**X, "dtype": "int32"}},
        {"x": {**X, "shape": [1, 3], "data": b"\x00" * 12}},
        {"x": {**X, "dtype": "string"}},
        {"y": X},
        {"x": X, "y": X},
    ],
)
def test_typed_checks_fail_as_the_general_checks(inputs: dict[str, Any]) -> None:
    from ringserve.frontend.checks import TypedInputChecks, check_inputs
    from ringserve.ipc.errors import ProtocolError

    tc = TypedInputChecks()
    for _ in range(2):  # remembered, then the last layout seen
        tc.check(typed(GOOD), SPEC, 32)
    with pytest.raises(ProtocolError) as typed_err:
        tc.check(typed({**GOOD, "inputs": inputs}), SPEC, 32)
    with pytest.raises(ProtocolError) as general_err:
        check_inputs(inputs, SPEC, None, 32)
    assert (typed_err.value.code, typed_err.value.message) == (
        general_err.value.code,
        general_err.value.message,
    )


def test_typed_checks_follow_a_new_signature_spec() -> None:
    from ringserve.frontend.checks import TypedInputChecks
    from ringserve.ipc.errors import ProtocolError

    tc = TypedInputChecks()
    tc.check(typed(GOOD), SPEC, 32)
    reloaded = {"x": {"dtype": "float32", "shape": [-1, 3]}}  # the model changed
    with pytest.raises(ProtocolError, match=r"inputs\.x\.shape"):
        tc.check(typed(GOOD), reloaded, 32)
