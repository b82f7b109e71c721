"""Served outputs equal in-process TensorFlow, over TCP and Unix, for every kind of
signature the tests build."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from ringserve.client import AsyncClient, Client
from ringserve.runtime.launch import ServerProcess

from conftest import models_toml


@pytest.fixture(params=["tcp", "unix"])
def url(request: pytest.FixtureRequest, server: ServerProcess) -> str:
    return server.tcp_url if request.param == "tcp" else server.unix_url


def test_float32(url: str, model_root: Path) -> None:
    from models import reference

    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    with Client(url) as c:
        got = c.infer("linear", {"x": x})
    want = reference(model_root / "linear", {"x": x})
    assert got.keys() == want.keys()
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-5)
    assert got["y"].dtype == np.float32 and got["y"].shape == (5, 4)


def test_int64_multi_input_multi_output(url: str, model_root: Path) -> None:
    from models import reference

    rng = np.random.default_rng(2)
    a = rng.integers(-(2**40), 2**40, (7, 3), dtype=np.int64)
    b = rng.integers(-1000, 1000, (7, 3), dtype=np.int64)
    with Client(url) as c:
        got = c.infer("ints", {"a": a, "b": b})
        only = c.infer("ints", {"a": a, "b": b}, outputs=["prod"])
    want = reference(model_root / "ints", {"a": a, "b": b})
    assert set(got) == {"sum", "prod", "total"}
    for k in want:
        assert got[k].dtype == np.int64
        np.testing.assert_array_equal(got[k], want[k])
    assert set(only) == {"prod"}


def test_second_signature(url: str) -> None:
    with Client(url) as c:
        got = c.infer("ints", {"n": np.array([1, -2, 3], np.int32)}, signature="double")
    np.testing.assert_array_equal(got["twice"], [2, -4, 6])
    assert got["twice"].dtype == np.int32


def test_strings(url: str) -> None:
    s = np.array([b"hello", b"", b"ring\x00serve", "ünï".encode()], dtype=object)
    with Client(url) as c:
        got = c.infer("strings", {"s": s})
    assert list(got["upper"]) == [b"HELLO", b"", b"RING\x00SERVE", "üNï".encode()]
    np.testing.assert_array_equal(got["length"], [5, 0, 10, 5])


def test_large_tensor_round_trip(server: ServerProcess, model_root: Path) -> None:
    from models import reference

    x = np.random.default_rng(3).standard_normal((20000, 16)).astype(np.float32)  # 1.3 MB
    with Client(server.unix_url) as c:
        got = c.infer("linear", {"x": x})
    np.testing.assert_allclose(got["y"], reference(model_root / "linear", {"x": x})["y"], rtol=1e-5)


def test_pipelining_1000_on_one_connection(server: ServerProcess, model_root: Path) -> None:
    from models import reference

    xs = np.random.default_rng(4).standard_normal((1000, 1, 16)).astype(np.float32)
    with Client(server.tcp_url) as c:
        replies = c.infer_many("linear", [{"x": x} for x in xs])
    want = reference(model_root / "linear", {"x": xs.reshape(1000, 16)})["y"]
    assert all(isinstance(r, dict) for r in replies)
    got = np.concatenate([r["y"] for r in replies])  # type: ignore[index]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_asyncio_client_concurrent(server: ServerProcess) -> None:
    xs = np.random.default_rng(5).standard_normal((64, 1, 16)).astype(np.float32)

    async def main() -> list[np.ndarray]:
        async with AsyncClient(server.unix_url) as c:
            outs = await asyncio.gather(*(c.infer("linear", {"x": x}) for x in xs))
            return [o["y"] for o in outs]

    got = asyncio.run(main())
    with Client(server.unix_url) as c:
        want = [c.infer("linear", {"x": x})["y"] for x in xs[:4]]
    for g, w in zip(got[:4], want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_ops(server: ServerProcess) -> None:
    with Client(server.unix_url) as c:
        h = c.health()
        assert h["live"] is True and h["ready"] is True
        models = {m["name"]: m for m in c.models()}
        assert set(models) == {"linear", "ints", "strings", "slow"}
        assert models["linear"]["versions"] == [1] and models["linear"]["state"] == "AVAILABLE"
        md = c.metadata("ints")
        assert md["version"] == 1
        sig = md["signatures"]["serving_default"]
        assert sig["inputs"] == {
            "a": {"dtype": "int64", "shape": [-1, 3]},
            "b": {"dtype": "int64", "shape": [-1, 3]},
        }
        assert sig["outputs"]["total"] == {"dtype": "int64", "shape": [-1]}
        assert md["signatures"]["double"]["inputs"]["n"] == {"dtype": "int32", "shape": [-1]}
        c.infer("linear", {"x": np.zeros((1, 16), np.float32)})
        st = c.stats()
        assert st["models"]["linear"]["success"] >= 1
        workers = {w["model"]: w for w in st["workers"]}
        assert workers["linear"]["requests"] >= 1 and workers["linear"]["pid"] > 0


def test_zero_rows_give_an_empty_reply(url: str) -> None:
    """An empty batch is a valid request; its outputs are empty arrays, not an error."""
    with Client(url) as c:
        out = c.infer("linear", {"x": np.zeros((0, 16), np.float32)})
    assert out["y"].shape == (0, 4) and out["y"].dtype == np.float32


def test_served_on_asyncio_without_uvloop(model_root: Path, tmp_path: Path) -> None:
    """Without uvloop the server runs on asyncio's own loop (runtime/supervisor.py),
    which hands the msgpack connection its bytes through `data_received` (uvloop calls
    `get_buffer` and `buffer_updated`): the same replies over TCP and Unix, for a frame
    larger than one read and for many pipelined ones."""
    from models import reference

    hide = tmp_path / "hide" / "uvloop"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text('raise ImportError("hidden by the test")\n')
    pypath = os.pathsep.join(p for p in (str(hide.parent), os.environ.get("PYTHONPATH")) if p)
    rng = np.random.default_rng(7)
    small = rng.standard_normal((3, 16)).astype(np.float32)
    big = rng.standard_normal((20000, 16)).astype(np.float32)  # 1.3 MB: many reads
    xs = rng.standard_normal((64, 1, 16)).astype(np.float32)
    log = tmp_path / "server.log"
    with open(log, "wb") as err:
        srv = ServerProcess(
            models_toml(model_root, ["linear"]),
            "ring_bytes = 4194304",
            env={"PYTHONPATH": pypath},
            stderr=err,
        )
        srv.start()
        try:
            for url in (srv.tcp_url, srv.unix_url):
                with Client(url) as c:
                    for x in (small, big):
                        want = reference(model_root / "linear", {"x": x})["y"]
                        np.testing.assert_allclose(
                            c.infer("linear", {"x": x})["y"], want, rtol=1e-5
                        )

            async def pipelined() -> list[np.ndarray]:
                async with AsyncClient(srv.unix_url) as c:
                    outs = await asyncio.gather(*(c.infer("linear", {"x": x}) for x in xs))
                    return [o["y"] for o in outs]

            got = np.concatenate(asyncio.run(pipelined()))
            want = reference(model_root / "linear", {"x": xs.reshape(64, 16)})["y"]
            np.testing.assert_allclose(got, want, rtol=1e-5)
        finally:
            assert srv.stop() == 0
    assert "event loop: asyncio" in log.read_text()
