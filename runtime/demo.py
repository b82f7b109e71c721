"""`ringserve demo`: build the demo model, serve it, query it, compare, stop.

This process is a client: it loads TensorFlow only to compute the in-process answer
it compares against; the server it starts is a separate process tree.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(address: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    from ringserve.client import Client, RingserveError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before ready")
        try:
            with Client(address, timeout=2.0) as c:
                if c.health().get("ready"):
                    return
        except (OSError, RingserveError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server not ready within {timeout}s")


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
        sock = os.path.join(tmp, "ringserve.sock")
        port = free_port()
        cfg = Path(tmp) / "demo.toml"
        cfg.write_text(
            f'[server]\ntcp = "127.0.0.1:{port}"\nunix = "{sock}"\nname = "demo-{os.getpid()}"\n'
            f"ring_bytes = 8388608\n\n"
            f'[[models]]\nname = "demo"\nbase_path = "{base}"\n'
        )
        print(f"starting: ringserve serve --config {cfg}")
        proc = subprocess.Popen([sys.executable, "-m", "ringserve", "serve", "--config", str(cfg)])
        try:
            t0 = time.perf_counter()
            wait_ready(f"unix://{sock}", proc, 180)
            print(f"server ready in {time.perf_counter() - t0:.2f}s")
            t0 = time.perf_counter()
            results, lat = asyncio.run(_drive(f"unix://{sock}", xs, concurrency))
            wall = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
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
