"""Server-side batching: the demo MLP with [models.batching] off and on, closed and open loop,
against the in-process signature call at batch 1 and at the batch size, in one run.

One run, one process tree:
  - builds the demo MLP (784-512-512-10, ringserve.runtime.worker.demo_model) in a TF
    child process;
  - keeps a TF child with it loaded, configured like a worker (--intra/--inter,
    unpinned), for the in-process floor: `signatures["serving_default"](x=tf.constant(x))`
    at batch 1 and at batch --max-batch-size (default 32); rows/s at batch B is
    B / per-call p50;
  - starts two servers side by side (runtime/launch.py ServerProcess through
    perf/bench_e2e.py's Served, each ready only when every worker is): "off" with no
    [models.batching], "on" with max_batch_size / batch_timeout_us (and optionally
    allowed_batch_sizes, max_queue) from the flags; the idle one sleeps while the other
    is measured;
  - in each of --repeat rounds: one floor repetition at both batch sizes; then for each
    configuration (the order alternates between rounds) batch-1 closed loops at each
    --concurrency (default 1,8,32,64); then open loops at fixed rates stepping up to past
    saturation: --fractions (default 25,50,75,90,100,120 %) of that configuration's
    closed-loop maximum in the same round. Open-loop latency runs from each request's
    scheduled send time (no coordinated omission); the send lag says whether the
    generator kept its schedule.

The server's `stats` op is read before and after every point: the batches formed, their
mean size (rows, from the `batch_sizes` histogram) and the padding rows, so a batcher
that silently does nothing shows a mean of 1.0.

Targets (issues 7 and 16), computed per round and the median taken, each PASS or FAIL:
  (a) at concurrency 32, req/s with batching >= 5x the unbatched server;
  (b) at concurrency 32, req/s with batching >= 0.8 of the in-process batch-32 rows/s;
  (b') the same for each --shapes point (default 4 connections x 8 in flight);
  (c) at concurrency 1, p50 with batching minus p50 without <= batch_timeout_us.
Each closed-loop row also shows the frontend's CPU time per request (its process's
CPU seconds over the requests it answered during the point, spinning included), the
figure issue 16 asks to halve.

Requests: closed loops pipeline all requests in flight on one Unix-socket connection
(--connections N: N connections; bare --connections: one per request in flight);
--shapes adds closed-loop points of N connections x K requests in flight on each; open
loops send on --open-connections connections (default 1).

    python perf/bench_batching.py
    python perf/bench_batching.py --batch-timeout-us 500 --allowed-batch-sizes 8,16,32
    python perf/bench_batching.py --quick            # smoke test, under a minute
    python perf/bench_batching.py --write-results    # replace its section of RESULTS.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_e2e as E
import benchcli as C
import benchlib as B
import inproc
from batching_report import BASE, CONFIGS, render, shape_of
from serverwatch import ServerWatch

from ringserve import bench as LG

RESULTS_KEY = "bench_batching"


@dataclass
class Plan:
    concurrency: list[int]
    shapes: list[tuple[int, int]]  # extra closed-loop points: (connections, in flight each)
    fractions: list[float]  # open loop: of the closed-loop maximum
    connections: int  # closed loop; 0: one per request in flight
    open_connections: int
    duration: float
    warmup: float
    repeat: int
    floor_calls: int
    max_batch_size: int
    batch_timeout_us: int
    allowed_batch_sizes: list[int]
    batch_max_queue: int | None
    max_inflight: int
    poisson: bool


def batching_lines(p: Plan) -> list[str]:
    """The [models.batching] table, placed inside the [[models]] table (before its
    [models.instances] sub-table)."""
    lines = [
        "",
        "  [models.batching]",
        f"  max_batch_size = {p.max_batch_size}",
        f"  batch_timeout_us = {p.batch_timeout_us}",
    ]
    if p.allowed_batch_sizes:
        lines.append(f"  allowed_batch_sizes = {p.allowed_batch_sizes}")
    if p.batch_max_queue is not None:
        lines.append(f"  max_queue = {p.batch_max_queue}")
    return lines


def on_config(p: Plan) -> str:
    """The batching configuration's keys on one line, for the report's header."""
    keys = [ln.strip() for ln in batching_lines(p)]
    return ", ".join(k for k in keys if k and not k.startswith("["))


def estimate_s(p: Plan, start_s: float = 5.0) -> float:
    closed = (len(p.concurrency) + len(p.shapes)) * (p.warmup + p.duration + 0.3)
    opened = len(p.fractions) * (p.warmup + p.duration + 0.5)
    return 30.0 + 2 * start_s + p.repeat * (2.0 + 2 * (closed + opened))


# ---- measurement -----------------------------------------------------------------------


def point(
    served: E.Served,
    tpl: LG.RequestTemplate,
    cfg: str,
    rnd: int,
    p: Plan,
    *,
    conc: int | None = None,
    conns: int | None = None,
    rate: float | None = None,
    fraction: float | None = None,
) -> dict[str, Any]:
    """One closed-loop (conc) or open-loop (rate) point, with the batches it caused."""
    target = served.targets()["unix"]
    with ServerWatch(served, "demo") as watch:
        if rate is None:
            assert conc is not None
            r = LG.closed_loop(
                target,
                tpl,
                concurrency=conc,
                connections=conns or p.connections or conc,
                duration_s=p.duration,
                warmup_s=p.warmup,
            )
        else:
            r = LG.open_loop(
                target,
                tpl,
                rate=rate,
                duration_s=p.duration,
                warmup_s=p.warmup,
                connections=p.open_connections,
                poisson=p.poisson,
                max_inflight=p.max_inflight,
            )
    row = {**r.row(), **watch.figures(), "config": cfg, "round": rnd, "fraction": fraction}
    row["shape"] = shape_of(row["concurrency"], conns) if rate is None else None
    served_n = row["server_requests"]
    row["frontend_us_per_req"] = (
        row["frontend_cpu_pct"] / 100 * row["wall_s"] * 1e6 / served_n if served_n else float("nan")
    )
    what = f"c={row['shape']}" if rate is None else f"{100 * (fraction or 0):.0f}% = {rate:.0f}/s"
    sys.stderr.write(
        f"  round {rnd} batching {cfg} {r.mode} {what}: {r.rps:.0f} req/s, p50 "
        f"{r.p50_us:.0f} us, p99 {r.p99_us:.0f} us, mean batch {B.fmt(row['mean_batch'], 2)}, "
        f"frontend {B.fmt(row['frontend_us_per_req'])} CPU us/req"
        f"{'' if not r.errors and not r.lost else f', errors {r.errors}, lost {r.lost}'}\n"
    )
    return row


def parse_shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        if item.strip():
            n, _, k = item.strip().partition("x")
            out.append((int(n), int(k)))
    return out


def plan_of(args: argparse.Namespace) -> Plan:
    return Plan(
        concurrency=[int(c) for c in args.concurrency.split(",") if c.strip()],
        shapes=parse_shapes(args.shapes),
        fractions=[float(f) / 100 for f in args.fractions.split(",") if f.strip()],
        connections=args.connections,
        open_connections=args.open_connections,
        duration=args.duration,
        warmup=args.warmup,
        repeat=args.repeat,
        floor_calls=args.floor_calls,
        max_batch_size=args.max_batch_size,
        batch_timeout_us=args.batch_timeout_us,
        allowed_batch_sizes=[int(x) for x in args.allowed_batch_sizes.split(",") if x.strip()],
        batch_max_queue=args.batch_max_queue,
        max_inflight=args.max_inflight,
        poisson=args.poisson,
    )


def _cpus(s: frozenset[int] | None) -> list[int] | None:
    return sorted(s) if s is not None else None


def ringserve_origin(python: str) -> str:
    """Where `python` imports ringserve from."""
    code = "import os, ringserve; print(os.path.realpath(ringserve.__file__))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise SystemExit(f"bench_batching: {python} cannot import ringserve: {out.stderr[-500:]}")
    return out.stdout.strip()


def check_compared(python: str) -> str:
    """Refuse a --compare-python that serves the very code this side serves: a venv made
    with --system-site-packages imports a ringserve installed into the system
    interpreter before its own editable one, and the before/after ratios are then 1.0."""
    theirs = ringserve_origin(python)
    ours = ringserve_origin(sys.executable)
    if theirs == ours:
        raise SystemExit(
            f"bench_batching: --compare-python {python} imports ringserve from {theirs}, "
            "as this interpreter does: there is nothing to compare (uninstall the shared "
            "copy, e.g. from the system interpreter)"
        )
    return theirs


def run(args: argparse.Namespace) -> dict[str, Any]:
    p = plan_of(args)
    compared_origin = check_compared(args.compare_python) if args.compare_python else None
    base = E.ServerKnobs(args.instances, args.intra, args.inter, list(args.server_toml))
    knobs = {
        "off": base,
        "on": E.ServerKnobs(**{**base.__dict__, "model_lines": batching_lines(p)}),
    }
    pin = B.pin_plan(args.pin)
    configs = [*CONFIGS, *([c + BASE for c in CONFIGS] if args.compare_python else [])]
    info = B.machine_info()
    batches = sorted({1, p.max_batch_size})
    sys.stderr.write(f"bench_batching: expect roughly {estimate_s(p) / 60:.0f} min\n")
    floor: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    servers: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rsbench-batching-") as tmp:
        logs = Path(args.log_dir or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        paths = inproc.build_models(tmp, log_dir=str(logs))
        inputs = inproc.make_inputs(Path(tmp), batches)
        tpl = E.templates(["demo"], inputs)["demo"]
        with inproc.FloorChild(
            {"demo": paths["demo"]},
            cpus=pin.worker,
            intra=args.intra,
            inter=args.inter,
            log_dir=str(logs),
        ) as child:
            served: dict[str, E.Served] = {}
            try:
                for cfg in configs:
                    d = logs / f"server-{cfg}"
                    d.mkdir(parents=True, exist_ok=True)
                    python = args.compare_python if cfg.endswith(BASE) else None
                    served[cfg] = E.Served(
                        {"demo": paths["demo"]}, knobs[cfg.removesuffix(BASE)], pin, str(d), python
                    )
                    served[cfg].start()
                    servers[cfg] = {
                        "ready_s": served[cfg].ready_s,
                        "config": served[cfg].config_text,
                        "workers": served[cfg].stats().get("workers", []),
                        "log": str(served[cfg].log_path),
                    }
                for rnd in range(p.repeat):
                    for f in E.floor_reps(child, ["demo"], inputs, batches, p.floor_calls):
                        f["round"] = rnd
                        floor.append(f)
                    order = configs if rnd % 2 == 0 else configs[::-1]
                    for cfg in order:
                        for c in p.concurrency:
                            rows.append(point(served[cfg], tpl, cfg, rnd, p, conc=c))
                        for n, k in p.shapes:
                            rows.append(point(served[cfg], tpl, cfg, rnd, p, conc=n * k, conns=n))
                    for cfg in order:
                        top = max(
                            (
                                r["rps"]
                                for r in rows
                                if (r["mode"], r["config"], r["round"]) == ("closed", cfg, rnd)
                            ),
                            default=0.0,
                        )
                        if top <= 0:
                            continue
                        for fr in p.fractions:
                            rows.append(
                                point(served[cfg], tpl, cfg, rnd, p, rate=fr * top, fraction=fr)
                            )
                for cfg in configs:
                    servers[cfg]["stats_after"] = served[cfg].stats()
            finally:
                for cfg, s in served.items():
                    servers.setdefault(cfg, {})["exit_code"] = s.stop()
                    if servers[cfg]["exit_code"] != 0:
                        sys.stderr.write(
                            f"server batching {cfg} exited {servers[cfg]['exit_code']}; log "
                            f"tail:\n{B.tail(s.log_path)}\n"
                        )
                B.set_affinity(None)
            child_info = child.info
    return {
        "machine": info,
        "command": B.command_line(),
        "date": B.now_utc(),
        "loop": LG.loop_name(),
        "plan": p.__dict__,
        "on_config": on_config(p),
        "pin": {
            "mode": pin.mode,
            "client": _cpus(pin.client),
            "frontend": _cpus(pin.frontend),
            "worker": _cpus(pin.worker),
        },
        "knobs": {k: v.__dict__ for k, v in knobs.items()},
        "configs": configs,
        "compare_python": args.compare_python,
        "compare_ringserve": compared_origin,
        "servers": servers,
        "floor_child": child_info,
        "floor": floor,
        "runs": rows,
        "request_bytes": tpl.size,
    }


# ---- summary ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/bench_batching.py",
        description="Served throughput and latency of the demo MLP (batch-1 requests) with "
        "server-side batching off and on, closed loop and open loop up to saturation, "
        "against the in-process TF call at batch 1 and at the batch size, with the issue's "
        "targets as PASS/FAIL.",
    )
    p.add_argument("--concurrency", default="1,8,32,64", help="closed loop (default 1,8,32,64)")
    p.add_argument(
        "--shapes",
        default="4x8",
        help="more closed-loop points, NxK: N connections with K requests in flight on each "
        "(default 4x8; empty: none)",
    )
    p.add_argument(
        "--fractions",
        default="25,50,75,90,100,120",
        help="open-loop rates, percent of the closed-loop maximum (default 25,50,75,90,100,120; "
        "empty: no open loop)",
    )
    p.add_argument("--max-batch-size", type=int, default=32, help="default 32")
    p.add_argument("--batch-timeout-us", type=int, default=1000, help="default 1000")
    p.add_argument(
        "--allowed-batch-sizes", default="", help="comma list, e.g. 8,16,32 (default none)"
    )
    p.add_argument("--batch-max-queue", type=int, default=None, help="[models.batching] max_queue")
    C.add_connections_arg(p)
    p.add_argument(
        "--compare-python",
        default=None,
        metavar="PYTHON",
        help="also serve both configurations with this interpreter (a venv holding an "
        "earlier ringserve), alternating with the current one in every round: "
        "configurations off@base and on@base",
    )
    p.add_argument("--open-connections", type=int, default=1, help="open loop (default 1)")
    p.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals")
    p.add_argument("--max-inflight", type=int, default=4096, help="open loop: generator cap (4096)")
    p.add_argument("--instances", type=int, default=1, help="workers per server (default 1)")
    p.add_argument(
        "--pin",
        choices=["none", "split"],
        default="none",
        help="none: unpinned (default); split: the client and the frontend on the first "
        "CPU, the worker (and the floor child) on the second, as `ringserve tune` places "
        "workers",
    )
    p.add_argument("--intra", type=int, default=1, help="intra_op_threads (and floor child)")
    p.add_argument("--inter", type=int, default=1, help="inter_op_threads (and floor child)")
    C.add_server_toml_arg(p)
    C.add_round_args(p, duration=3.0, warmup=0.5, floor_calls=2000)
    p.add_argument("--log-dir", default=None, help="keep server and child logs here")
    p.add_argument(
        "--scrape-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="instead: the cost of /metrics, c=32 batched with and without a scraper "
        "fetching it every SECONDS, alternating, --repeat rounds (perf/scrapecost.py)",
    )
    C.add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    C.apply_quick(args)
    if args.repeat < 1 or args.max_batch_size < 1 or args.batch_timeout_us < 0:
        raise SystemExit("--repeat and --max-batch-size must be >= 1, --batch-timeout-us >= 0")
    if args.scrape_every is not None:
        import scrapecost

        return scrapecost.main(args)
    res = run(args)
    bad = any(s.get("exit_code") != 0 for s in res["servers"].values()) or any(
        r["requests"] == 0 or r["workers_replaced"] for r in res["runs"]
    )
    title = "Server-side batching (perf/bench_batching.py)"
    return C.finish(args, res, render(res), RESULTS_KEY, title, bad)


if __name__ == "__main__":
    sys.exit(main())
