"""A large-request model served batched: MobileNetV2 (built locally, weights=None, 602 KB
a request at batch 1) at concurrency 8 with [models.batching] max_batch_size 8, against
the in-process batch-8 call in the same run, for each TF thread setting.

One run, one process tree:
  - builds MobileNetV2 (perf/build_mobilenet.py; reused from --model-dir if there);
  - for each --threads setting INTRAxINTER: a TF child configured like a worker with
    those threads times `signatures["serving_default"](images=tf.constant(x))` at batch
    8 (rows/s = 8 / per-call p50); a server with one worker of those threads and
    batching (max_batch_size 8, --batch-timeout-us) takes batch-1 requests at
    concurrency 8, one connection per request in flight (`ringserve bench`'s closed
    loop); --repeat rounds, floor and served alternating, medians;
  - target (issue 16): served req/s >= 0.9 x in-process batch-8 rows/s, with the best
    thread setting.

The client shared-memory path against bytes for 1 MiB+ requests is bench_regions.py's.

    python perf/bench_mobilenet.py                       # 1x1 and 2x1, 3 rounds
    python perf/bench_mobilenet.py --threads 2x1 --repeat 1 --duration 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import batching_report as R
import bench_e2e as E
import benchcli as C
import benchlib as B
import build_mobilenet
import inproc
import numpy as np
from serverwatch import ServerWatch

from ringserve import bench as LG

RESULTS_KEY = "bench_mobilenet"
TARGET = 0.9
BATCH = 8


def build(base: Path) -> Path:
    """Build the model in a child (this process stays free of TensorFlow)."""
    script = Path(build_mobilenet.__file__)
    out = subprocess.run(
        [sys.executable, str(script), str(base)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"building MobileNetV2 failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = [tuple(int(x) for x in s.split("x")) for s in args.threads.split(",") if s]
    info = B.machine_info()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rsbench-mobilenet-") as tmp:
        vdir = build(Path(args.model_dir or tmp) / "mobilenet")
        rng = np.random.default_rng(0)
        x8 = rng.random((BATCH, 224, 224, 3), dtype=np.float32)
        npy = Path(tmp) / "x8.npy"
        np.save(npy, x8)
        tpl = LG.infer_template("mobilenet", {"images": x8[:1]})
        model_lines = [
            "",
            "  [models.batching]",
            f"  max_batch_size = {BATCH}",
            f"  batch_timeout_us = {args.batch_timeout_us}",
        ]
        for intra, inter in settings:
            knobs = E.ServerKnobs(1, intra, inter, list(args.server_toml), model_lines)
            with inproc.FloorChild({"mobilenet": vdir}, intra=intra, inter=inter) as child:
                served = E.Served({"mobilenet": vdir}, knobs, B.pin_plan("none"), tmp)
                served.start()
                try:
                    for rnd in range(args.repeat):
                        f = child.time("mobilenet", npy, n=args.floor_calls, warmup=3)
                        target = served.targets()["unix"]
                        with ServerWatch(served, "mobilenet") as w:
                            r = LG.closed_loop(
                                target,
                                tpl,
                                concurrency=BATCH,
                                connections=BATCH,
                                duration_s=args.duration,
                                warmup_s=args.warmup,
                            )
                        floor = BATCH * 1e6 / f["p50_us"]
                        row = {
                            **r.row(),
                            **w.figures(),
                            "threads": f"{intra}x{inter}",
                            "round": rnd,
                            "floor_p50_us": f["p50_us"],
                            "floor_rows_per_s": floor,
                            "ratio": r.rps / floor,
                        }
                        rows.append(row)
                        sys.stderr.write(
                            f"  {intra}x{inter} round {rnd}: in-process b{BATCH} "
                            f"{floor:.1f} rows/s, served {r.rps:.1f} req/s = "
                            f"{row['ratio']:.2f}, mean batch {B.fmt(row['mean_batch'], 2)}\n"
                        )
                finally:
                    served.stop()
    return {
        "machine": info,
        "command": B.command_line(),
        "date": B.now_utc(),
        "request_bytes": tpl.size,
        "plan": vars(args),
        "runs": rows,
    }


def render(res: dict[str, Any]) -> str:
    p = res["plan"]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in res["runs"]:
        by.setdefault(r["threads"], []).append(r)
    table = []
    best = None
    for th, rs in by.items():
        med = B.median_dicts(rs)
        ratio = B.median(r["ratio"] for r in rs)
        best = ratio if best is None or ratio > best else best
        table.append(
            [
                th,
                B.fmt(med["floor_p50_us"] / 1e3, 1),
                B.fmt(med["floor_rows_per_s"], 1),
                B.fmt(med["rps"], 1),
                B.fmt(med["p50_us"] / 1e3, 1),
                B.fmt(R.pooled_batches(rs)[0], 2),
                B.fmt(med["worker_busy_pct"], 0),
                B.fmt(med["frontend_cpu_pct"], 0),
                B.fmt(ratio, 2),
            ]
        )
    lines = [
        f"bench_mobilenet: {res['date']}; MobileNetV2 (weights=None), batch-1 requests "
        f"({res['request_bytes']} B frames) over unix, concurrency {BATCH} on {BATCH} "
        f"connections; batching max_batch_size {BATCH}, batch_timeout_us "
        f"{p['batch_timeout_us']}; one worker; {p['duration']} s per point after "
        f"{p['warmup']} s; median of {p['repeat']} rounds",
        "",
        B.md_table(
            [
                "intra x inter",
                f"in-process b{BATCH} p50 ms",
                f"in-process b{BATCH} rows/s",
                "served req/s",
                "served p50 ms",
                "mean batch",
                "worker busy %",
                "frontend cpu %",
                f"served / in-process b{BATCH}",
            ],
            table,
        ),
        "",
        f"Target: served req/s >= {TARGET} x in-process batch-{BATCH} rows/s with the best "
        f"thread setting: {B.fmt(best, 2)}, "
        f"{'PASS' if best is not None and best >= TARGET else 'FAIL'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python perf/bench_mobilenet.py", description=__doc__)
    ap.add_argument("--threads", default="1x1,2x1", help="INTRAxINTER settings (default 1x1,2x1)")
    ap.add_argument("--batch-timeout-us", type=int, default=20000, help="default 20000")
    C.add_round_args(
        ap, duration=8.0, warmup=2.0, floor_calls=20, floor_help="floor calls per round (batch 8)"
    )
    ap.add_argument("--model-dir", default=None, help="build (or reuse) the model here")
    C.add_server_toml_arg(ap)
    C.add_output_args(ap)
    args = ap.parse_args(argv)
    C.apply_quick(args, duration=2.0, warmup=1.0, floor_calls=5)
    res = run(args)
    bad = any(r["requests"] == 0 or r["workers_replaced"] for r in res["runs"])
    title = "MobileNetV2 served batched (perf/bench_mobilenet.py)"
    return C.finish(args, res, render(res), RESULTS_KEY, title, bad)


if __name__ == "__main__":
    sys.exit(main())
