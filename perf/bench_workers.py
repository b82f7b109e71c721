"""Worker count and TensorFlow thread settings: which one serves the demo MLP fastest here.

One run, one process tree:
  - builds the demo MLP (784-512-512-10, ringserve.runtime.worker.demo_model) in a TF
    child process;
  - keeps a TF child with it loaded (intra/inter from --floor-intra/--floor-inter,
    default 1/1, unpinned) for the in-process floor: sequential
    `signatures["serving_default"](x=tf.constant(x))` calls at batch 1;
  - in each of --repeat rounds: one floor repetition, then for every combination of
    [models.instances] count (--instances, default 1,2) and (intra_op_threads,
    inter_op_threads) (--threads, default 1:1,2:1,0:0) a fresh server
    (runtime/launch.py ServerProcess through perf/bench_e2e.py's Served, which waits
    until every worker is `ready` in the `stats` op's `workers` list, not just for
    `health`), batch-1 closed loops at each --concurrency (default 8,32), then a
    SIGTERM stop. The order of the combinations rotates from round to round so no
    setting always runs first or last.

Requests: all pipelined on one Unix-socket connection by default (--connections N
spreads them over N connections; bare --connections: one per request in flight).

Every figure is the median over rounds; `req/s / inproc` is computed per round against
that round's floor (calls per second of one thread calling the signature back to back),
then the median taken. The verdict names the setting with the highest geometric mean of
req/s over the concurrencies, and its ratio to the worst and to the default
(1 instance, intra 1, inter 1) at each concurrency; a ratio inside the round-to-round
spread of the two settings is called a tie.

    python perf/bench_workers.py                  # 2 instances x 3 thread settings, c 8,32
    python perf/bench_workers.py --quick          # smoke test (under a minute)
    python perf/bench_workers.py --write-results  # replace its section of perf/RESULTS.md
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench_e2e as E
import benchcli as C
import benchlib as B
import inproc
from serverwatch import ServerWatch

from ringserve import bench as LG

RESULTS_KEY = "bench_workers"
DEFAULT = (1, 1, 1)  # instances, intra, inter: what a config without [models.instances] gets

Combo = tuple[int, int, int]


def combo_name(c: Sequence[int]) -> str:
    n, intra, inter = c
    return f"{n} inst, ({intra},{inter})"


def parse_threads(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        a, sep, b = part.partition(":")
        if not sep:
            raise SystemExit(f"--threads: expected INTRA:INTER pairs, received {part!r}")
        out.append((int(a), int(b)))
    return out


def combos(args: argparse.Namespace) -> list[Combo]:
    counts = [int(x) for x in args.instances.split(",") if x.strip()]
    return [(n, a, b) for n in counts for a, b in parse_threads(args.threads)]


def estimate_s(args: argparse.Namespace, n_combos: int, start_s: float = 5.0) -> float:
    """Rough wall time: model build, floor child, and per round and combination a server
    start (`start_s`, a guess for this machine), the points and a stop."""
    conc = len([c for c in args.concurrency.split(",") if c.strip()])
    point = args.warmup + args.duration + 0.3
    per_round = 1.0 + n_combos * (start_s + 1.5 + conc * point)
    return 25.0 + args.repeat * per_round


# ---- measurement -----------------------------------------------------------------------


def served_run(
    served: E.Served,
    tpl: LG.RequestTemplate,
    conc: int,
    plan: E.Plan,
    transport: str,
) -> dict[str, Any]:
    """One closed-loop point, with what the server did meanwhile (serverwatch)."""
    with ServerWatch(served, "demo") as watch:
        r = LG.closed_loop(
            served.targets()[transport],
            tpl,
            concurrency=conc,
            connections=plan.connections or conc,
            duration_s=plan.duration,
            warmup_s=plan.warmup,
        )
    return {**r.row(), **watch.figures()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    todo = combos(args)
    conc = [int(c) for c in args.concurrency.split(",") if c.strip()]
    plan = E.Plan(
        models=["demo"],
        transports=[args.transport],
        concurrency=conc,
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        repeat=args.repeat,
        floor_calls=args.floor_calls,
        floor_batches=[1],
    )
    pin = B.pin_plan("none")
    info = B.machine_info()
    sys.stderr.write(
        f"bench_workers: {len(todo)} settings x {len(conc)} concurrencies x {args.repeat} "
        f"rounds, a fresh server each; expect roughly {estimate_s(args, len(todo)) / 60:.0f} "
        "min\n"
    )
    floor: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    servers: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rsbench-workers-") as tmp:
        logs = Path(args.log_dir or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        paths = inproc.build_models(tmp, log_dir=str(logs))
        inputs = inproc.make_inputs(Path(tmp), [1])
        tpl = E.templates(["demo"], inputs)["demo"]
        with inproc.FloorChild(
            {"demo": paths["demo"]},
            intra=args.floor_intra,
            inter=args.floor_inter,
            log_dir=str(logs),
        ) as child:
            for rnd in range(args.repeat):
                for f in E.floor_reps(child, ["demo"], inputs, [1], args.floor_calls):
                    f["round"] = rnd
                    floor.append(f)
                k = rnd % len(todo)
                for combo in todo[k:] + todo[:k]:
                    servers.append(
                        one_server(combo, rnd, paths["demo"], tpl, plan, pin, args, logs)
                    )
                    rows += servers[-1].pop("rows")
            child_info = child.info
    return {
        "machine": info,
        "command": B.command_line(),
        "date": B.now_utc(),
        "loop": LG.loop_name(),
        "plan": plan.__dict__,
        "transport": args.transport,
        "combos": [list(c) for c in todo],
        "floor_child": child_info,
        "floor": floor,
        "servers": servers,
        "served": rows,
        "request_bytes": tpl.size,
    }


def one_server(
    combo: Combo,
    rnd: int,
    model_dir: Path,
    tpl: LG.RequestTemplate,
    plan: E.Plan,
    pin: B.PinPlan,
    args: argparse.Namespace,
    logs: Path,
) -> dict[str, Any]:
    """A fresh server with this setting: its closed-loop points, then stopped."""
    n, intra, inter = combo
    knobs = E.ServerKnobs(n, intra, inter, list(args.server_toml))
    log_dir = logs / f"r{rnd}-i{n}-t{intra}-{inter}"
    log_dir.mkdir(parents=True, exist_ok=True)
    served = E.Served({"demo": model_dir}, knobs, pin, str(log_dir))
    rec: dict[str, Any] = {
        "combo": list(combo),
        "round": rnd,
        "log": str(served.log_path),
        "rows": [],
        "error": None,
    }
    t0 = time.perf_counter()
    try:
        served.start()
        rec["ready_s"] = served.ready_s
        rec["workers"] = served.stats().get("workers", [])
        for c in plan.concurrency:
            row = served_run(served, tpl, c, plan, args.transport)
            row.update(combo=list(combo), round=rnd)
            rec["rows"].append(row)
            sys.stderr.write(
                f"  round {rnd} {combo_name(combo)} c={c}: {row['rps']:.0f} req/s, "
                f"p50 {row['p50_us']:.0f} us, p99 {row['p99_us']:.0f} us\n"
            )
        rec["stats_after"] = served.stats()
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
        # One setting that fails (a worker that never gets ready, a crash) is reported,
        # and the others still run.
        rec["error"] = f"{type(exc).__name__}: {exc}"
        sys.stderr.write(f"  {combo_name(combo)} round {rnd} failed: {rec['error']}\n")
    finally:
        rec["exit_code"] = served.stop()
        B.set_affinity(None)
    rec["wall_s"] = time.perf_counter() - t0
    if rec["exit_code"] != 0 or rec["error"]:
        sys.stderr.write(
            f"  server of {combo_name(combo)} exited {rec['exit_code']}; log tail:\n"
            f"{B.tail(served.log_path)}\n"
        )
    return rec


# ---- summary ---------------------------------------------------------------------------


def summary(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (setting, concurrency): medians over rounds; req/s against the floor
    of the same round; the relative spread (max-min)/median of req/s over rounds."""
    out = []
    for combo in res["combos"]:
        for c in res["plan"]["concurrency"]:
            rs = [r for r in res["served"] if r["combo"] == combo and r["concurrency"] == c]
            if not rs:
                continue
            frac = [
                r["rps"] / E.floor_of(res["floor"], "demo", 1, r["round"])["calls_per_s"]
                for r in rs
            ]
            med = B.median_dicts(rs)
            rps = [r["rps"] for r in rs]
            srv = [s for s in res["servers"] if s["combo"] == combo]
            ws = srv[0].get("workers", []) if srv else []
            out.append(
                {
                    "combo": combo,
                    "concurrency": c,
                    "rps": med["rps"],
                    "p50_us": med["p50_us"],
                    "p99_us": med["p99_us"],
                    "rps_fraction": B.median(frac),
                    "spread": (max(rps) - min(rps)) / med["rps"]
                    if med["rps"] and len(rps) > 1
                    else math.nan,
                    "worker_us_per_call": med["worker_us_per_call"],
                    "worker_busy_pct": med["worker_busy_pct"],
                    "frontend_cpu_pct": med["frontend_cpu_pct"],
                    "workers_cpu_pct": med["workers_cpu_pct"],
                    "tf_threads": sorted(
                        {(w.get("intra_op_threads"), w.get("inter_op_threads")) for w in ws},
                        key=str,
                    ),
                    "ready_s": B.median(s.get("ready_s") for s in srv),
                    "errors": sum(sum(r["errors"].values()) + r["lost"] for r in rs),
                }
            )
    return out


def verdict(summ: list[dict[str, Any]], conc: list[int]) -> str:
    """One line: the winner by geometric mean of req/s over the concurrencies, and its
    ratio to the worst and to the default at each concurrency."""
    by: dict[tuple[int, ...], dict[int, dict[str, Any]]] = {}
    for s in summ:
        by.setdefault(tuple(s["combo"]), {})[s["concurrency"]] = s

    def score(k: tuple[int, ...]) -> float:
        v = [by[k][c]["rps"] for c in conc if c in by[k] and by[k][c]["rps"] > 0]
        return math.exp(sum(math.log(x) for x in v) / len(v)) if len(v) == len(conc) else 0.0

    keys = [k for k in by if score(k) > 0]
    if not keys:
        return "verdict: no setting completed every point"
    best = max(keys, key=score)
    parts = []
    for c in conc:
        b = by[best][c]
        rps_at = {k: float(by[k][c]["rps"]) for k in keys}
        worst_k = min(rps_at, key=rps_at.__getitem__)
        w = by[worst_k][c]
        top_k = max(rps_at, key=rps_at.__getitem__)
        txt = (
            f"c={c}: {b['rps']:.0f} req/s, {b['rps'] / w['rps']:.2f}x the worst "
            f"({combo_name(worst_k)})"
        )
        if DEFAULT in by and best != DEFAULT:
            d = by[DEFAULT][c]
            ratio = b["rps"] / d["rps"]
            spreads = [x for x in (b["spread"], d["spread"]) if math.isfinite(x)]
            noise = max(spreads) / 2 if spreads else 0.0
            tie = " - a tie within the round-to-round spread" if ratio - 1 <= noise else ""
            txt += f", {ratio:.2f}x the default{tie}"
        if top_k != best:
            txt += f" (best at c={c} alone: {combo_name(top_k)}, {rps_at[top_k]:.0f} req/s)"
        parts.append(txt)
    head = f"verdict: {combo_name(best)} wins on this {_ncpu()}-CPU machine"
    if best == DEFAULT:
        head += " (it is the default)"
    return head + "; " + "; ".join(parts)


def _ncpu() -> int:
    return len(B.all_cpus())


def render(res: dict[str, Any]) -> str:
    p = res["plan"]
    f = E.floor_of(res["floor"], "demo", 1, None)
    fc = res["floor_child"]
    conns = (
        "one pipelined connection"
        if p["connections"] == 1
        else (
            "one connection per request in flight"
            if p["connections"] == 0
            else f"{p['connections']} connections"
        )
    )
    lines = [
        f"bench_workers: {res['date']}; demo MLP 784-512-512-10, batch-1 requests "
        f"({res['request_bytes']} B frames) over {res['transport']}, closed loop, {conns}; "
        f"{res['loop']}; unpinned; a fresh server per setting and round; {p['duration']} s "
        f"per point after {p['warmup']} s warm-up; median of {p['repeat']} rounds",
        "",
        f"In-process floor, batch 1 (TF child, intra {fc.get('intra')}, inter "
        f"{fc.get('inter')}, affinity {fc.get('affinity')}): p50 {B.fmt(f['p50_us'])} us, "
        f"p99 {B.fmt(f['p99_us'])} us, {B.fmt(f['calls_per_s'], 0)} calls/s",
        "",
    ]
    summ = summary(res)
    rows = [
        [
            s["combo"][0],
            f"({s['combo'][1]},{s['combo'][2]})",
            " ".join(f"({a},{b})" for a, b in s["tf_threads"]) or "-",
            s["concurrency"],
            B.fmt(s["rps"], 0),
            B.fmt(s["p50_us"]),
            B.fmt(s["p99_us"]),
            B.fmt(s["rps_fraction"], 2),
            B.fmt(100 * s["spread"], 0),
            B.fmt(s["worker_us_per_call"]),
            B.fmt(s["worker_busy_pct"], 0),
            B.fmt(s["frontend_cpu_pct"], 0),
            B.fmt(s["workers_cpu_pct"], 0),
            B.fmt(s["ready_s"]),
            s["errors"],
        ]
        for s in summ
    ]
    lines.append(
        B.md_table(
            [
                "instances",
                "(intra,inter) configured",
                "TF reports",
                "concurrency",
                "req/s",
                "p50 us",
                "p99 us",
                "req/s / inproc",
                "spread %",
                "worker us/call",
                "workers busy %",
                "frontend cpu %",
                "workers cpu %",
                "start s",
                "errors+lost",
            ],
            rows,
        )
    )
    bad = [s for s in res["servers"] if s.get("exit_code") != 0 or s.get("error")]
    crashed = [r for r in res["served"] if r.get("workers_replaced")]
    lines += [
        "",
        verdict(summ, p["concurrency"]),
        "",
        "`req/s / inproc`: served req/s over the floor's calls/s in the same round. `spread`: "
        "(max - min) / median of req/s over rounds. `worker us/call`: a worker's own time per "
        "request (ring read, TF call, outputs to numpy; `stats`), mean over workers; "
        "`workers busy %`: that time over the wall time, summed over workers (200 = two "
        "workers computing all the time). CPU %: percent of one core (schedstat, spinning "
        "included), the frontend process, and all workers together. `start s`: until every "
        "worker is ready. (0,0) leaves the thread counts to TensorFlow.",
    ]
    for r in crashed:
        lines.append(
            f"WARNING: {combo_name(r['combo'])}, round {r['round']}, c={r['concurrency']}: "
            f"{r['workers_replaced']} worker(s) replaced during the point (crash or hang; see "
            f"the server log); server errors {r['server_errors']}"
        )
    if bad:
        lines.append(
            "Servers that did not exit 0: "
            + "; ".join(
                f"{combo_name(s['combo'])} round {s['round']}: exit {s['exit_code']}"
                + (f", {s['error']}" if s.get("error") else "")
                for s in bad
            )
        )
    return "\n".join(lines)


# ---- CLI -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/bench_workers.py",
        description="Served throughput and latency of the demo MLP (batch 1, closed loop) for "
        "each [models.instances] count and TF thread setting, a fresh server each, against "
        "the in-process TF call in the same run; prints a table and a one-line verdict.",
    )
    p.add_argument("--instances", default="1,2", help="instances.count values (default 1,2)")
    p.add_argument(
        "--threads",
        default="1:1,2:1,0:0",
        help="INTRA:INTER thread settings (default 1:1,2:1,0:0; 0 = TF's choice)",
    )
    p.add_argument("--concurrency", default="8,32", help="closed-loop concurrencies (8,32)")
    C.add_connections_arg(p)
    p.add_argument("--transport", default="unix", choices=("unix", "tcp"), help="default unix")
    C.add_round_args(p, duration=3.0, warmup=0.5, floor_calls=2000)
    p.add_argument("--floor-intra", type=int, default=1, help="floor child's intra-op threads")
    p.add_argument("--floor-inter", type=int, default=1, help="floor child's inter-op threads")
    C.add_server_toml_arg(p)
    p.add_argument("--log-dir", default=None, help="keep server and child logs here")
    C.add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    C.apply_quick(args)
    if args.repeat < 1:
        raise SystemExit("--repeat must be at least 1")
    res = run(args)
    bad = any(s["exit_code"] != 0 or s["error"] for s in res["servers"]) or any(
        r["requests"] == 0 or r["workers_replaced"] for r in res["served"]
    )
    title = "Worker count and TF threads (perf/bench_workers.py)"
    return C.finish(args, res, render(res), RESULTS_KEY, title, bad)


if __name__ == "__main__":
    sys.exit(main())
