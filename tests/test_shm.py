"""Zero-copy tensors for local clients: shm_register, shm inputs, output_shm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ringserve.client import Client, InvalidArgument, NotFound, SharedRegion
from ringserve.runtime.launch import ServerProcess


@pytest.fixture
def region() -> Iterator[SharedRegion]:
    r = SharedRegion.create("buf", 1 << 20)
    yield r
    r.close()
    r.unlink()


def test_shm_inputs_and_outputs(server: ServerProcess, region: SharedRegion, model_root: Path):
    from models import reference

    with Client(server.unix_url) as c:
        c.shm_register(region)
        x = region.array((3, 16), "float32")
        x[:] = np.random.default_rng(11).standard_normal((3, 16))
        out_off = 65536
        got = c.infer(
            "linear", {"x": region.tensor(x)}, output_shm={"y": region.ref(out_off, 4096)}
        )
        want = reference(model_root / "linear", {"x": np.array(x)})["y"]
        np.testing.assert_allclose(got["y"], want, rtol=1e-5)
        # The output really is in the client's region, where it asked.
        in_region = np.frombuffer(region.map, np.float32, 12, out_off).reshape(3, 4)
        np.testing.assert_array_equal(in_region, got["y"])
        c.shm_unregister(region)
        with pytest.raises(InvalidArgument, match=r"inputs\.x\.shm\.region"):
            c.infer("linear", {"x": region.tensor(x)})


def test_zero_rows_into_output_shm(server: ServerProcess, region: SharedRegion) -> None:
    """An empty output asked for in shared memory is an empty tensor, not an error."""
    with Client(server.unix_url) as c:
        c.shm_register(region)
        got = c.infer(
            "linear",
            {"x": np.zeros((0, 16), np.float32)},
            output_shm={"y": region.ref(0, 64)},
        )
        assert got["y"].shape == (0, 4) and got["y"].dtype == np.float32
        c.shm_unregister(region)


def test_shm_errors(server: ServerProcess, region: SharedRegion) -> None:
    with Client(server.unix_url) as c:
        with pytest.raises(NotFound, match="key"):
            c.call("shm_register", name="r", key="/ringserve-no-such-object", size=10)
        c.shm_register(region)
        with pytest.raises(InvalidArgument, match="name"):
            c.shm_register(region)
        ref = {"region": "buf", "offset": (1 << 20) - 32, "size": 64}
        t = {"dtype": "float32", "shape": [1, 16], "shm": ref}
        r = c.recv(c.send({"op": "infer", "model": "linear", "inputs": {"x": t}}))
        assert r["error"]["code"] == "INVALID_ARGUMENT" and "inputs.x.shm" in r["error"]["message"]
        ref = {"region": "buf", "offset": 0, "size": 60}
        t = {"dtype": "float32", "shape": [1, 16], "shm": ref}
        r = c.recv(c.send({"op": "infer", "model": "linear", "inputs": {"x": t}}))
        assert "inputs.x.shm.size: expected 64 bytes, received 60" in r["error"]["message"]
        x = np.zeros((2, 16), np.float32)
        r = c.recv(
            c.send(
                {
                    "op": "infer",
                    "model": "linear",
                    "inputs": {"x": {"dtype": "float32", "shape": [2, 16], "data": x.tobytes()}},
                    "output_shm": {"y": {"region": "buf", "offset": 0, "size": 16}},
                }
            )
        )
        assert r["error"]["code"] == "INVALID_ARGUMENT"
        assert "output_shm.y.size: expected at least 32" in r["error"]["message"]
        with pytest.raises(NotFound):
            c.shm_unregister("nope")
    with Client(server.tcp_url) as c:  # TCP: not available
        r = c.recv(c.send({"op": "shm_register", "name": "a", "key": region.key, "size": 8}))
        assert r["error"]["code"] == "FAILED_PRECONDITION"
