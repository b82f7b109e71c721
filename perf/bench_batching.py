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
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_e2e as E
import benchcli as C
import benchlib as B
import inproc
from serverwatch import ServerWatch

from ringserve import bench as LG

RESULTS_KEY = "bench_batching"
CONFIGS = ("off", "on")
# --compare-python: the same two configurations served by another interpreter too.
BASE = "@base"
TARGET_SPEEDUP = 5.0  # (a)
TARGET_FLOOR_FRACTION = 0.8  # (b), issue 16 (issue 7 asked 0.5)
TARGET_CONC = 32  # (a) and (b)
LATENCY_CONC = 1  # (c)


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


def shape_of(conc: int, conns: int | None) -> str:
    """`32`, or `32 (4x8)` for 4 connections with 8 requests in flight on each."""
    return str(conc) if not conns else f"{conc} ({conns}x{conc // conns})"


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


def _pin_text(res: dict[str, Any]) -> str:
    pin = res.get("pin") or {"mode": "none"}
    if pin["mode"] == "none":
        return "unpinned"
    return (
        f"pinned: client and frontend on CPUs {pin['client']}, worker and floor child on "
        f"{pin['worker']}"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    p = plan_of(args)
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
        "pin": {
            "mode": pin.mode,
            "client": _cpus(pin.client),
            "frontend": _cpus(pin.frontend),
            "worker": _cpus(pin.worker),
        },
        "knobs": {k: v.__dict__ for k, v in knobs.items()},
        "configs": configs,
        "compare_python": args.compare_python,
        "servers": servers,
        "floor_child": child_info,
        "floor": floor,
        "runs": rows,
        "request_bytes": tpl.size,
    }


# ---- summary ---------------------------------------------------------------------------


def floor_rows_per_s(floor: list[dict[str, Any]], batch: int, rnd: int | None) -> float:
    """Rows per second of the in-process call at `batch`: batch / per-call p50."""
    f = E.floor_of(floor, "demo", batch, rnd)
    return batch * 1e6 / f["p50_us"] if f.get("p50_us") else float("nan")


def pooled_batches(rs: list[dict[str, Any]]) -> tuple[float, int, int]:
    """Mean rows per batch over every run in `rs`, batches, padding rows."""
    batches = sum(r["batches"] for r in rs)
    rows = sum(r["batched_rows"] for r in rs)
    return (
        rows / batches if batches else float("nan"),
        batches,
        sum(r["padding_rows"] for r in rs),
    )


def summarize(res: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Medians over rounds per (config, shape) or (config, fraction)."""
    keyname = "shape" if mode == "closed" else "fraction"
    runs = [r for r in res["runs"] if r["mode"] == mode]
    keys: list[tuple[str, Any]] = []
    order: dict[Any, Any] = {}
    for r in runs:
        k = (r["config"], r[keyname])
        if k not in keys:
            keys.append(k)
            order[k] = (r["concurrency"], r[keyname]) if mode == "closed" else r[keyname]
    configs = res.get("configs", CONFIGS)
    keys.sort(key=lambda k: (configs.index(k[0]), order[k]))
    out = []
    for cfg, key in keys:
        rs = [r for r in runs if (r["config"], r[keyname]) == (cfg, key)]
        med = B.median_dicts(rs)
        frac = [
            r["rps"] / E.floor_of(res["floor"], "demo", 1, r["round"])["calls_per_s"] for r in rs
        ]
        mean_batch, batches, pad = pooled_batches(rs)
        out.append(
            {
                "config": cfg,
                keyname: key,
                "concurrency": rs[0]["concurrency"],
                "frontend_us_per_req": med.get("frontend_us_per_req"),
                "offered_rate": med.get("offered_rate"),
                "rps": med["rps"],
                "p50_us": med["p50_us"],
                "p99_us": med["p99_us"],
                "send_lag_p50_us": med.get("send_lag_p50_us"),
                "send_lag_p99_us": med.get("send_lag_p99_us"),
                "rps_fraction": B.median(frac),
                "mean_batch": mean_batch,
                "batches": batches,
                "padding_rows": pad,
                "worker_us_per_call": med["worker_us_per_call"],
                "worker_busy_pct": med["worker_busy_pct"],
                "frontend_cpu_pct": med["frontend_cpu_pct"],
                "workers_cpu_pct": med["workers_cpu_pct"],
                "errors": sum(sum(r["errors"].values()) for r in rs),
                "lost": sum(r["lost"] for r in rs),
            }
        )
    return out


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets: per round, then the median over rounds."""
    p = res["plan"]
    closed = [r for r in res["runs"] if r["mode"] == "closed"]

    def at(cfg: str, shape: str, rnd: int) -> dict[str, Any] | None:
        return next(
            (r for r in closed if (r["config"], r.get("shape"), r["round"]) == (cfg, shape, rnd)),
            None,
        )

    rounds = sorted({r["round"] for r in closed})
    shapes = [shape_of(n * k, n) for n, k in p.get("shapes", [])]
    a, b, c, d = [], [], [], []
    e: dict[str, list[float]] = {}
    b_base: dict[str, list[float]] = {}
    b2: dict[str, list[float]] = {sh: [] for sh in shapes}
    for rnd in rounds:
        on, off = at("on", str(TARGET_CONC), rnd), at("off", str(TARGET_CONC), rnd)
        if on and off and off["rps"] > 0:
            a.append(on["rps"] / off["rps"])
        floor32 = floor_rows_per_s(res["floor"], p["max_batch_size"], rnd)
        if on:
            b.append(on["rps"] / floor32)
        for sh in shapes:
            on_sh = at("on", sh, rnd)
            if on_sh:
                b2[sh].append(on_sh["rps"] / floor32)
        on1, off1 = at("on", str(LATENCY_CONC), rnd), at("off", str(LATENCY_CONC), rnd)
        if on1 and off1:
            c.append(on1["p50_us"] - off1["p50_us"])
        # Against the same configuration served by --compare-python (before/after).
        base1 = at("off" + BASE, str(LATENCY_CONC), rnd)
        if off1 and base1:
            d.append(off1["p50_us"] / base1["p50_us"])
        for sh in [str(TARGET_CONC), *shapes]:
            now, then = at("on", sh, rnd), at("on" + BASE, sh, rnd)
            if now and then and then["frontend_us_per_req"] > 0:
                e.setdefault(sh, []).append(
                    now["frontend_us_per_req"] / then["frontend_us_per_req"]
                )
            if then:
                b_base.setdefault(sh, []).append(then["rps"] / floor32)
    mbs, tmo = p["max_batch_size"], p["batch_timeout_us"]
    compared = [
        *(
            {
                "id": "base",
                "what": f"c={sh}, served by --compare-python: req/s batching on / "
                f"in-process batch-{mbs} rows/s",
                "value": B.median(xs),
                "target": "(before, for reference)",
                "pass": None,
                "unit": "",
            }
            for sh, xs in b_base.items()
        ),
        {
            "id": "d",
            "what": f"c={LATENCY_CONC}: p50 batching off / the same served by --compare-python",
            "value": B.median(d),
            "target": "<= 1.00 (no slower)",
            "pass": B.median(d) <= 1.0 if d else None,
            "unit": "",
        },
        *(
            {
                "id": "e",
                "what": f"c={sh} batching on: frontend CPU us/req / the same served by "
                "--compare-python",
                "value": B.median(xs),
                "target": "<= 0.50",
                "pass": B.median(xs) <= 0.5 if xs else None,
                "unit": "",
            }
            for sh, xs in e.items()
        ),
    ]
    out = [
        {
            "id": "a",
            "what": f"c={TARGET_CONC}: req/s batching on / off",
            "value": B.median(a),
            "target": f">= {TARGET_SPEEDUP:g}x",
            "pass": B.median(a) >= TARGET_SPEEDUP if a else None,
            "unit": "x",
        },
        {
            "id": "b",
            "what": f"c={TARGET_CONC}: req/s batching on / in-process batch-{mbs} rows/s",
            "value": B.median(b),
            "target": f">= {TARGET_FLOOR_FRACTION:.2f}",
            "pass": B.median(b) >= TARGET_FLOOR_FRACTION if b else None,
            "unit": "",
        },
        *(
            {
                "id": "b'",
                "what": f"c={sh}: req/s batching on / in-process batch-{mbs} rows/s",
                "value": B.median(xs),
                "target": f">= {TARGET_FLOOR_FRACTION:.2f}",
                "pass": B.median(xs) >= TARGET_FLOOR_FRACTION if xs else None,
                "unit": "",
            }
            for sh, xs in b2.items()
        ),
        {
            "id": "c",
            "what": f"c={LATENCY_CONC}: p50 batching on - p50 batching off",
            "value": B.median(c),
            "target": f"<= {tmo} us (batch_timeout_us)",
            "pass": B.median(c) <= tmo if c else None,
            "unit": " us",
        },
    ]
    return out + (compared if res.get("compare_python") else [])


def batcher_check(closed: list[dict[str, Any]]) -> list[str]:
    """Warnings when the batcher visibly does nothing (or the unbatched server batches)."""
    out = []
    for s in closed:
        if s["config"] == "on" and s["concurrency"] >= 8 and not s["batches"]:
            out.append(
                f"WARNING: batching on, c={s['shape']}: no batches formed "
                f"({s['errors']} error replies, {B.fmt(s['rps'], 0)} req/s)"
            )
        elif s["config"] == "on" and s["concurrency"] >= 8 and not s["mean_batch"] > 1.05:
            out.append(
                f"WARNING: batching on, c={s['shape']}: mean batch "
                f"{B.fmt(s['mean_batch'], 2)} rows over {s['batches']} batches: the batcher "
                "is not gathering requests"
            )
        if s["config"] == "off" and s["batches"]:
            out.append(
                f"WARNING: batching off, c={s['shape']}: the server still formed "
                f"{s['batches']} batches"
            )
    return out


def crash_check(runs: list[dict[str, Any]]) -> list[str]:
    """Points during which a worker was replaced (crashed or killed, then restarted)."""
    out = []
    for r in runs:
        if r.get("workers_replaced"):
            what = f"c={r['shape']}" if r["mode"] == "closed" else f"{r['fraction']:.0%}"
            out.append(
                f"WARNING: batching {r['config']}, round {r['round']}, {r['mode']} {what}: "
                f"{r['workers_replaced']} worker(s) replaced during the point (crash or hang; "
                f"see the server log); server errors {r['server_errors']}"
            )
    return out


def render(res: dict[str, Any]) -> str:
    p = res["plan"]
    mbs = p["max_batch_size"]
    fc = res["floor_child"]
    closed_conns = (
        "one pipelined connection"
        if p["connections"] == 1
        else "one connection per request in flight"
        if p["connections"] == 0
        else f"{p['connections']} connections"
    )
    on_cfg = ", ".join(ln.strip() for ln in batching_lines_of(p))
    lines = [
        f"bench_batching: {res['date']}; demo MLP 784-512-512-10, batch-1 requests "
        f"({res['request_bytes']} B frames) over unix; {res['loop']}; {_pin_text(res)}; instances "
        f"{res['knobs']['off']['instances']}, intra {res['knobs']['off']['intra']}, inter "
        f"{res['knobs']['off']['inter']}; batching on = {on_cfg}; closed loop on "
        f"{closed_conns}, open loop on {p['open_connections']} connection(s)"
        f"{' (Poisson arrivals)' if p['poisson'] else ''}; {p['duration']} s per point after "
        f"{p['warmup']} s warm-up; median of {p['repeat']} rounds"
        + (
            f"; `@base` = the same configuration served by `{res['compare_python']}` "
            "(another ringserve, alternating with this one in every round)"
            if res.get("compare_python")
            else ""
        ),
        "",
        f"In-process floor (TF child, intra {fc.get('intra')}, inter {fc.get('inter')}, "
        f"affinity {fc.get('affinity')}); rows/s = batch / p50:",
        "",
    ]
    frows = []
    for b in sorted({1, mbs}):
        f = E.floor_of(res["floor"], "demo", b, None)
        frows.append(
            [
                b,
                B.fmt(f["p50_us"]),
                B.fmt(f["p99_us"]),
                B.fmt(f["calls_per_s"], 0),
                B.fmt(floor_rows_per_s(res["floor"], b, None), 0),
            ]
        )
    lines.append(B.md_table(["batch", "p50 us", "p99 us", "calls/s", "rows/s"], frows))
    closed = summarize(res, "closed")
    lines += ["", "Closed loop:", ""]
    lines.append(
        B.md_table(
            [
                "batching",
                "concurrency",
                "req/s",
                "p50 us",
                "p99 us",
                "req/s / inproc b1",
                "mean batch",
                "batches",
                "padding rows",
                "worker us/call",
                "worker busy %",
                "frontend cpu %",
                "worker cpu %",
                "frontend CPU us/req",
                "errors",
                "lost",
            ],
            [
                [
                    s["config"],
                    s["shape"],
                    B.fmt(s["rps"], 0),
                    B.fmt(s["p50_us"]),
                    B.fmt(s["p99_us"]),
                    B.fmt(s["rps_fraction"], 2),
                    B.fmt(s["mean_batch"], 2),
                    s["batches"],
                    s["padding_rows"],
                    B.fmt(s["worker_us_per_call"]),
                    B.fmt(s["worker_busy_pct"], 0),
                    B.fmt(s["frontend_cpu_pct"], 0),
                    B.fmt(s["workers_cpu_pct"], 0),
                    B.fmt(s["frontend_us_per_req"]),
                    s["errors"],
                    s["lost"],
                ]
                for s in closed
            ],
        )
    )
    opened = summarize(res, "open")
    if opened:
        lines += [
            "",
            "Open loop (fixed rates, a fraction of the same configuration's closed-loop "
            "maximum in the same round; latency from the scheduled send time):",
            "",
        ]
        lines.append(
            B.md_table(
                [
                    "batching",
                    "% of max",
                    "offered req/s",
                    "achieved req/s",
                    "p50 us",
                    "p99 us",
                    "send lag p50 us",
                    "send lag p99 us",
                    "mean batch",
                    "padding rows",
                    "worker busy %",
                    "frontend cpu %",
                    "errors",
                    "lost",
                ],
                [
                    [
                        s["config"],
                        f"{100 * s['fraction']:.0f}",
                        B.fmt(s["offered_rate"], 0),
                        B.fmt(s["rps"], 0),
                        B.fmt(s["p50_us"]),
                        B.fmt(s["p99_us"]),
                        B.fmt(s["send_lag_p50_us"]),
                        B.fmt(s["send_lag_p99_us"]),
                        B.fmt(s["mean_batch"], 2),
                        s["padding_rows"],
                        B.fmt(s["worker_busy_pct"], 0),
                        B.fmt(s["frontend_cpu_pct"], 0),
                        s["errors"],
                        s["lost"],
                    ]
                    for s in opened
                ],
            )
        )
    lines += ["", "Targets (median over rounds of the per-round figure):", ""]
    for t in targets(res):
        verdict = (
            ("n/a (point not measured)" if t["id"] != "base" else "-")
            if t["pass"] is None
            else ("PASS" if t["pass"] else "FAIL")
        )
        nd = 0 if t["unit"] == " us" else 2
        lines.append(
            f"- ({t['id']}) {t['what']} = {B.fmt(t['value'], nd)}{t['unit']}, target "
            f"{t['target']}: {verdict}"
        )
    warn = batcher_check(closed) + crash_check(res["runs"])
    lines += [""] + (warn or ["Batcher check: batches of more than one row formed at c >= 8."])
    lines += [
        "",
        "`mean batch`: rows per batch the batching server formed during the point (warm-up "
        "included), from the `stats` op's `batch_sizes` histogram; `padding rows`: rows "
        "added to reach allowed_batch_sizes. `req/s / inproc b1`: over the batch-1 floor's "
        "calls/s. `worker us/call`: the worker's own time per TF call (one request, or one "
        "batch) from `stats`; `worker busy %`: that time over the wall time (100 = never "
        "idle); CPU %: percent of one core (schedstat, spinning included). Open loop: "
        "`achieved` counts successful replies over the time they took to arrive; `errors` "
        "are error replies (e.g. RESOURCE_EXHAUSTED past max_queue), `lost` requests never "
        "answered or never sent (the generator's in-flight cap).",
    ]
    return "\n".join(lines)


def batching_lines_of(p: dict[str, Any]) -> list[str]:
    return [ln for ln in batching_lines(Plan(**p)) if ln.strip() and not ln.strip().startswith("[")]


# ---- CLI -------------------------------------------------------------------------------


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
