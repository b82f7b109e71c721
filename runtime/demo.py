"""`ringserve demo`: build the demo model, serve it, query it, compare, stop.

This process is a client: it loads TensorFlow only to compute the in-process answer
it compares against; the server it starts is a separate process tree.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np

from .launch import ServerProcess


async def _drive(address: str, xs: np.ndarray, concurrency: int) -> tuple[list[dict], list[float]]:
    from ringserve.client import AsyncClient

    results: list[dict] = [{}] * len(xs)
    lat: list[float] = []
    async with AsyncClient(address) as c:
        nxt = 0

        async def one() -> None:
            nonlocal nxt
            while nxt < len(xs):
                i = nxt
                nxt += 1
                t0 = time.perf_counter()
                results[i] = await c.infer("demo", {"x": xs[i : i + 1]})
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return results, lat


def run_demo(requests: int, concurrency: int) -> int:
    from ringserve.runtime.worker import demo_model

    with tempfile.TemporaryDirectory(prefix="ringserve-demo-") as tmp:
        base = Path(tmp) / "demo"
        print(f"building the demo model (MLP 784-512-512-10, seed {demo_model.SEED}) in {base}")
        demo_model.build(base)
        rng = np.random.default_rng(0)
        xs = rng.standard_normal((requests, 784)).astype(np.float32)
        ref = demo_model.reference(base / "1", xs)
        models = f'[[models]]\nname = "demo"\nbase_path = "{base}"\n'
        srv = ServerProcess(models, "ring_bytes = 8388608", workdir=tmp, wait_ready=False)
        print(f"starting: ringserve serve --config {srv.config_path}")
        srv.start()
        try:
            t0 = time.perf_counter()
            srv.wait_ready()
            print(f"server ready in {time.perf_counter() - t0:.2f}s")
            t0 = time.perf_counter()
            results, lat = asyncio.run(_drive(srv.unix_url, xs, concurrency))
            wall = time.perf_counter() - t0
        finally:
            code = srv.stop()
        got = {k: np.concatenate([r[k] for r in results]) for k in ref}
        ok = all(np.allclose(got[k], ref[k], rtol=1e-5, atol=1e-6) for k in ref)
        diff = max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref)
        la = np.array(lat) * 1e6
        print(
            f"agreement with in-process TensorFlow: {'OK' if ok else 'MISMATCH'} "
            f"({requests} requests, max abs diff {diff:.2e}, rtol 1e-5)"
        )
        print(
            f"latency p50 {np.percentile(la, 50):.0f} us, p99 {np.percentile(la, 99):.0f} us; "
            f"throughput {requests / wall:.0f} req/s at concurrency {concurrency} (Unix socket)"
        )
        print(f"server stopped with exit code {code}")
        return 0 if ok and code == 0 else 1
