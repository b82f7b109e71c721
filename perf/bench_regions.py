"""Client regions: what pread/pwrite on a held fd costs, against the same bytes sent in
the frame, beside the in-process TensorFlow call on the same model and input.

The server copies a region's bytes with preadv into the worker's ring and writes
outputs with pwritev (frontend/regions.py); it never maps the client's memory, so a
client that truncates its region cannot SIGBUS it. This answers whether that costs
the shared-memory path its point: a 1 MiB+ tensor in a region must stay at least as
fast as the same tensor in the frame.

    python perf/bench_regions.py [--sizes 1,4,16] [--n 200] [--repeat 3] [--write-results]

Model: `linear` (x[-1, 16] float32 -> y[-1, 4]), rows chosen so x is 1, 4, 16 MiB.
Modes, each `--n` sequential requests on one Unix connection, median per run, median
of `--repeat` runs:
- bytes: x in the frame, y in the reply;
- shm in: x in a registered region, y in the reply;
- shm in+out: x in a region, y written into the region (`output_shm`).
Also the copy alone, in this process: memcpy between two mappings and preadv from a
tmpfs file into a mapping, per size.
"""

from __future__ import annotations

import argparse
import mmap
import os
import sys
import tempfile
import time
from pathlib import Path

import benchcli as C
import benchlib as B
import inproc
import numpy as np

from ringserve.client import Client, SharedRegion
from ringserve.runtime.launch import ServerProcess

MiB = 1 << 20


def copy_costs(size: int, n: int) -> tuple[float, float]:
    """(memcpy us, preadv us), medians, for `size` bytes from a tmpfs file."""
    import posix_ipc

    key = f"/ringserve-bench-copy-{os.getpid()}"
    shm = posix_ipc.SharedMemory(key, posix_ipc.O_CREX, size=size)
    try:
        src = mmap.mmap(shm.fd, size)
        src[:] = os.urandom(size)
        dst = mmap.mmap(-1, size)
        sv, dv = memoryview(src), memoryview(dst)
        a, b = [], []
        for _ in range(n):
            t0 = time.perf_counter()
            dv[:] = sv
            t1 = time.perf_counter()
            os.preadv(shm.fd, [dv], 0)
            t2 = time.perf_counter()
            a.append(t1 - t0)
            b.append(t2 - t1)
        sv.release()
        dv.release()
        src.close()
        dst.close()
        return float(np.median(a)) * 1e6, float(np.median(b)) * 1e6
    finally:
        shm.close_fd()
        shm.unlink()


def served(c: Client, region: SharedRegion, x: np.ndarray, mode: str, n: int) -> float:
    rows = x.shape[0]
    if mode == "bytes":

        def call() -> None:
            c.infer("linear", {"x": x})
    else:
        xs = region.array(x.shape, "float32", offset=0)
        xs[:] = x
        t = region.tensor(xs)
        out = {"y": region.ref(x.nbytes, rows * 16)} if mode == "shm in+out" else None

        def call() -> None:
            c.infer("linear", {"x": t}, output_shm=out)

    call()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="1,4,16", help="MiB of x per request")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3)
    C.add_output_args(p)
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    n = 20 if args.quick else args.n
    modes = ("bytes", "shm in", "shm in+out")
    runs: dict[tuple[int, str], list[float]] = {}
    floor: dict[int, list[float]] = {}
    copies: dict[int, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rs-bench-regions-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "models").mkdir()
        models = inproc.build_models(tmp / "models")
        rng = np.random.default_rng(0)
        xs = {}
        for mb in sizes:
            x = rng.standard_normal((mb * MiB // 64, 16)).astype(np.float32)
            xs[mb] = x
            np.save(tmp / f"x{mb}.npy", x)
        toml = f'[[models]]\nname = "linear"\nbase_path = "{inproc.model_base(models["linear"])}"\n'
        biggest = max(sizes) * MiB * 2
        ring = 1 << (biggest.bit_length())
        with (
            ServerProcess(toml, f"ring_bytes = {ring}\nmax_frame_bytes = {ring}") as srv,
            inproc.FloorChild({"linear": models["linear"]}) as fl,
        ):
            region = SharedRegion.create("bench", max(sizes) * MiB * 2)
            try:
                with Client(srv.unix_url, timeout=120) as c:
                    c.shm_register(region)
                    for _ in range(args.repeat):
                        for mb in sizes:
                            for mode in modes:
                                runs.setdefault((mb, mode), []).append(
                                    served(c, region, xs[mb], mode, n)
                                )
                            r = fl.time("linear", tmp / f"x{mb}.npy", n=n, warmup=5)
                            floor.setdefault(mb, []).append(r["p50_us"])
                            copies.setdefault(mb, []).append(copy_costs(mb * MiB, n))
                    c.shm_unregister(region)
            finally:
                region.close()
                region.unlink()
    rows = []
    for mb in sizes:
        f = B.median(floor[mb])
        cells = [f"{mb} MiB", B.fmt(f, 0)]
        for mode in modes:
            m = B.median(runs[(mb, mode)])
            cells.append(f"{B.fmt(m, 0)} ({m / f:.2f}x)")
        base = B.median(runs[(mb, "bytes")])
        cells.append(f"{B.median(runs[(mb, 'shm in')]) / base:.2f}")
        cells.append(B.fmt(B.median(c[0] for c in copies[mb]), 0))
        cells.append(B.fmt(B.median(c[1] for c in copies[mb]), 0))
        rows.append(cells)
    table = B.md_table(
        [
            "x size",
            "in-process TF p50 us",
            "bytes p50 us (x TF)",
            "shm in p50 us (x TF)",
            "shm in+out p50 us (x TF)",
            "shm in / bytes",
            "memcpy us",
            "preadv us",
        ],
        rows,
    )
    body = "\n".join(
        [
            *B.machine_lines(B.machine_info()),
            f"- command: `{B.command_line()}`",
            f"- run: {B.now_utc()}; {n} sequential requests per point on one Unix connection, "
            f"median of {args.repeat} runs (each a median); unpinned",
            "",
            table,
        ]
    )
    print(body)
    C.write_json(
        args.json,
        {
            "n": n,
            "repeat": args.repeat,
            # p50 us of each run; JSON keys are strings: "MiB|mode".
            "served": {f"{mb}|{mode}": v for (mb, mode), v in runs.items()},
            "floor": floor,
            "copies_memcpy_preadv_us": copies,
        },
    )
    bad = any(B.median(runs[(mb, "shm in")]) > B.median(runs[(mb, "bytes")]) for mb in sizes)
    if bad:
        sys.stderr.write("shm input slower than bytes at some size\n")
    return C.publish(args, "bench_regions", "Client regions (perf/bench_regions.py)", body, False)


if __name__ == "__main__":
    sys.exit(main())
