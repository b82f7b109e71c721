"""End to end: a real server, the demo MLP and a linear model, against the in-process floor.

One run, one process tree:
  - builds the demo MLP (784-512-512-10) and a linear model (x[-1,16] -> y[-1,4],
    fixed seed) in a TF child process;
  - keeps a TF child with both models loaded, configured like a worker (same pinning
    and thread counts), for the in-process floor: the public
    `loaded.signatures["serving_default"](x=tf.constant(x))` at batch 1 and 32;
  - starts a real server (ServerProcess, one worker per model unless --instances);
  - in each of --repeat rounds: one floor repetition per model, then batch-1 closed
    loops at each concurrency over Unix and TCP (`ringserve bench`, same input).
Every figure is the median over rounds; differences and ratios against the floor are
computed per round (floor and served from the same minutes), then the median taken.

    python perf/bench_e2e.py                 # defaults: demo+linear, 1/8/32, unix+tcp
    python perf/bench_e2e.py --pin split --write-results
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchcli as C
import benchlib as B
import inproc
import numpy as np

from ringserve import bench as LG
from ringserve.runtime.launch import ServerProcess

# ---- the server ------------------------------------------------------------------------


@dataclass
class ServerKnobs:
    instances: int = 1
    intra: int = 1
    inter: int = 1
    server_lines: list[str] = field(default_factory=list)
    model_lines: list[str] = field(default_factory=list)


def models_toml(
    models: dict[str, Path], knobs: ServerKnobs, worker_cpus: frozenset[int] | None
) -> str:
    """[[models]] tables: one per model (base_path = the version folder's parent)."""
    out = []
    for name, vdir in models.items():
        lines = [
            "[[models]]",
            f'name = "{name}"',
            f'base_path = "{inproc.model_base(Path(vdir))}"',
            *knobs.model_lines,
            "",
            "  [models.instances]",
            f"  count = {knobs.instances}",
            f"  intra_op_threads = {knobs.intra}",
            f"  inter_op_threads = {knobs.inter}",
        ]
        if worker_cpus is not None:
            lines.append(f"  cpu_affinity = [{sorted(worker_cpus)}]")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def server_toml(knobs: ServerKnobs) -> str:
    """The [server] body: the user's lines (a key given twice keeps the last)."""
    keyed: dict[str, str] = {}
    for ln in knobs.server_lines:
        for part in ln.split("\n"):
            if "=" in part:
                keyed[part.split("=", 1)[0].strip()] = part.strip()
    return "\n".join(keyed.values())


class OtherPython(ServerProcess):
    """A server run by another interpreter (e.g. a venv holding an earlier ringserve,
    for a before/after comparison in one run); its workers follow it."""

    def __init__(self, python: str, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.python = python

    def argv(self) -> list[str]:
        return [self.python, *super().argv()[1:]]


class Served:
    """A running server: pinned as the plan says, stderr to a log file."""

    def __init__(
        self,
        models: dict[str, Path],
        knobs: ServerKnobs,
        plan: B.PinPlan,
        log_dir: str,
        python: str | None = None,
    ) -> None:
        self.plan = plan
        self.log_path = Path(log_dir) / f"server-{plan.mode}-{os.getpid()}.log"
        self._log = open(self.log_path, "wb")
        texts = (models_toml(models, knobs, plan.worker), server_toml(knobs))
        env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
        self.srv = (
            OtherPython(python, *texts, env=env, stderr=self._log)
            if python
            else ServerProcess(*texts, env=env, stderr=self._log)
        )
        self.config_text = self.srv.config_path.read_text()
        self.expected_workers = knobs.instances * len(models)
        self.ready_s = 0.0

    def start(self) -> Served:
        # The server inherits our affinity (the frontend runs in the supervisor); each
        # worker then applies its configured cpu_affinity.
        B.set_affinity(self.plan.frontend)
        t0 = time.perf_counter()
        try:
            self.srv.start()
        except BaseException:
            self._log.flush()
            sys.stderr.write(f"server failed to start; log tail:\n{B.tail(self.log_path)}\n")
            raise
        finally:
            B.set_affinity(self.plan.client)
        self.wait_workers(self.expected_workers)
        self.ready_s = time.perf_counter() - t0
        return self

    def wait_workers(self, n: int, timeout: float = 180.0) -> None:
        """`health` is ready with one worker per model; wait for all `n` of them."""
        deadline = time.monotonic() + timeout
        while True:
            ws = self.stats().get("workers", [])
            if sum(1 for w in ws if w.get("state") == "ready") >= n:
                return
            if time.monotonic() > deadline:
                states = [w.get("state") for w in ws]
                raise TimeoutError(f"{n} workers not ready within {timeout}s: {states}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.srv.proc is not None
        return self.srv.proc.pid

    def targets(self) -> dict[str, LG.Target]:
        return {
            "unix": LG.parse_target(self.srv.unix_url),
            "tcp": LG.parse_target(self.srv.tcp_url),
        }

    def stats(self) -> dict[str, Any]:
        r = LG.call(self.targets()["unix"], "stats")
        if not r.get("ok"):
            raise RuntimeError(f"stats: {r.get('error')}")
        return r

    def worker_pids(self) -> dict[int, str]:
        """{pid: "model/index"} from the stats op, else from /proc."""
        try:
            ws = self.stats().get("workers", [])
            got = {int(w["pid"]): f"{w.get('model')}/w{w.get('index', 0)}" for w in ws}
            if got:
                return got
        except Exception:
            pass
        return {p: "worker" for p in B.descendants(self.pid)}

    def stop(self) -> int:
        try:
            code = self.srv.stop()
        finally:
            self._log.close()
        return code


def worker_busy(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Per model: mean worker busy time per request (us) between two `stats` replies."""

    def per_model(s: dict[str, Any]) -> dict[str, tuple[float, int]]:
        acc: dict[str, tuple[float, int]] = {}
        for w in s.get("workers", []):
            b, n = acc.get(w.get("model", "?"), (0.0, 0))
            acc[w.get("model", "?")] = (
                b + float(w.get("busy_seconds", 0)),
                n + int(w.get("requests", 0)),
            )
        return acc

    a, b = per_model(before), per_model(after)
    out = {}
    for m, (busy1, n1) in b.items():
        busy0, n0 = a.get(m, (0.0, 0))
        if n1 > n0:
            out[m] = 1e6 * (busy1 - busy0) / (n1 - n0)
    return out


class CpuWatch:
    """Called on the load generator's loop: which CPUs the server's threads run on."""

    def __init__(self, roles: dict[int, str]) -> None:
        self.roles = roles
        self.seen: dict[str, Counter[int]] = {r: Counter() for r in set(roles.values())}

    def __call__(self) -> None:
        for pid, role in self.roles.items():
            for c in B.running_cpus(pid):
                self.seen[role][c] += 1


# ---- measurement -----------------------------------------------------------------------


@dataclass
class Plan:
    models: list[str]
    transports: list[str]
    concurrency: list[int]
    connections: int  # 0: one per request in flight
    duration: float
    warmup: float
    repeat: int
    floor_calls: int
    floor_batches: list[int]
    floor_gap_us: float = 0.0


def floor_reps(
    child: inproc.FloorChild,
    models: list[str],
    inputs: dict[tuple[str, int], Path],
    batches: list[int],
    calls: int,
    gap_us: float = 0.0,
) -> list[dict[str, Any]]:
    """One floor repetition per model and batch (and at batch 1 after `gap_us` idle)."""
    out = []
    for m in models:
        for b in batches:
            n = max(20, calls // b)
            out.append(child.time(m, inputs[(m, b)], n=n, warmup=min(200, n)))
        if gap_us > 0:
            n = max(20, calls // 4)
            out.append(child.time(m, inputs[(m, 1)], n=n, warmup=20, gap_us=gap_us))
    return out


def served_point(
    served: Served,
    target: LG.Target,
    tpl: LG.RequestTemplate,
    model: str,
    conc: int,
    p: Plan,
    watch: CpuWatch | None,
) -> dict[str, Any]:
    s0 = served.stats()
    r = LG.closed_loop(
        target,
        tpl,
        concurrency=conc,
        connections=p.connections or conc,
        duration_s=p.duration,
        warmup_s=p.warmup,
        tick=watch,
    )
    s1 = served.stats()
    row = r.row()
    row["model"] = model
    row["worker_busy_us"] = worker_busy(s0, s1).get(model, float("nan"))
    return row


def templates(
    models: list[str], inputs: dict[tuple[str, int], Path]
) -> dict[str, LG.RequestTemplate]:
    return {m: LG.infer_template(m, {"x": np.load(inputs[(m, 1)])}) for m in models}


def run(args: argparse.Namespace) -> dict[str, Any]:
    p = Plan(
        models=[m for m in args.models.split(",") if m],
        transports=[t for t in args.transports.split(",") if t],
        concurrency=[int(c) for c in args.concurrency.split(",") if c],
        connections=args.connections,
        duration=args.duration,
        warmup=args.warmup,
        repeat=args.repeat,
        floor_calls=args.floor_calls,
        floor_batches=sorted({1, *[int(b) for b in args.floor_batch.split(",") if b]}),
        floor_gap_us=args.floor_gap_us,
    )
    knobs = ServerKnobs(args.instances, args.intra, args.inter, args.server_toml, args.models_toml)
    plan = B.pin_plan(args.pin)
    info = B.machine_info()
    with tempfile.TemporaryDirectory(prefix="rsbench-e2e-") as tmp:
        paths = inproc.build_models(tmp)
        inputs = inproc.make_inputs(Path(tmp), p.floor_batches)
        tpls = templates(p.models, inputs)
        models = {m: paths[m] for m in p.models}
        floor: list[dict[str, Any]] = []
        served_rows: list[dict[str, Any]] = []
        with inproc.FloorChild(
            models, cpus=plan.worker, intra=args.intra, inter=args.inter, log_dir=tmp
        ) as child:
            served = Served(models, knobs, plan, tmp).start()
            code = None
            try:
                roles = {served.pid: "frontend", **served.worker_pids()}
                watch = CpuWatch(roles)
                workers = served.stats().get("workers", [])
                targets = served.targets()
                for rnd in range(p.repeat):
                    reps = floor_reps(
                        child, p.models, inputs, p.floor_batches, p.floor_calls, p.floor_gap_us
                    )
                    for f in reps:
                        f["round"] = rnd
                        floor.append(f)
                    for m in p.models:
                        for t in p.transports:
                            for c in p.concurrency:
                                row = served_point(served, targets[t], tpls[m], m, c, p, watch)
                                row["round"] = rnd
                                served_rows.append(row)
                                _progress(row)
            finally:
                code = served.stop()
                B.set_affinity(None)
            child_info = child.info
    return {
        "machine": info,
        "command": B.command_line(),
        "date": B.now_utc(),
        "loop": LG.loop_name(),
        "pin": {
            "mode": plan.mode,
            **{k: B.cpus_str(getattr(plan, k)) for k in ("client", "frontend", "worker")},
        },
        "knobs": knobs.__dict__,
        "config": served.config_text,
        "server_ready_s": served.ready_s,
        "server_exit_code": code,
        "workers": workers,
        "floor_child": child_info,
        "cpus_seen": {k: dict(v) for k, v in watch.seen.items()},
        "floor": floor,
        "served": served_rows,
        "request_bytes": {m: t.size for m, t in tpls.items()},
        "plan": p.__dict__,
    }


def _progress(row: dict[str, Any]) -> None:
    sys.stderr.write(
        f"  round {row['round']} {row['model']} {row['transport']} c={row['concurrency']}: "
        f"p50 {row['p50_us']:.0f} us, {row['rps']:.0f} req/s\n"
    )


# ---- tables ----------------------------------------------------------------------------


def floor_of(
    floor: list[dict[str, Any]], model: str, batch: int, rnd: int | None, gap: bool = False
) -> dict[str, Any]:
    """The floor (back to back, or after idle gaps) of a model and batch: one round's, or
    the median over rounds."""
    rs = [
        f
        for f in floor
        if f["model"] == model and f["batch"] == batch and bool(f.get("gap_us")) == gap
    ]
    if rnd is not None:
        rs = [f for f in rs if f.get("round") == rnd] or rs
    return B.median_dicts(rs)


def served_summary(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, transport, concurrency): medians over rounds, and the per-round
    differences and ratios against the floor of the same round."""
    keys: list[tuple[str, str, int]] = []
    for r in res["served"]:
        k = (r["model"], r["transport"], r["concurrency"])
        if k not in keys:
            keys.append(k)
    out = []
    for m, t, c in keys:
        rs = [
            r for r in res["served"] if (r["model"], r["transport"], r["concurrency"]) == (m, t, c)
        ]
        diffs, ratio, frac = [], [], []
        for r in rs:
            f = floor_of(res["floor"], m, 1, r["round"])
            diffs.append(r["p50_us"] - f["p50_us"])
            ratio.append(r["p50_us"] / f["p50_us"])
            frac.append(r["rps"] / f["calls_per_s"])
        med = B.median_dicts(rs)
        out.append(
            {
                "model": m,
                "transport": t,
                "concurrency": c,
                "p50_us": med["p50_us"],
                "p90_us": med["p90_us"],
                "p99_us": med["p99_us"],
                "rps": med["rps"],
                "minus_inproc_p50_us": B.median(diffs),
                "p50_ratio": B.median(ratio),
                "rps_fraction": B.median(frac),
                "worker_busy_us": med["worker_busy_us"],
                "client_cpu_pct": med["client_cpu_pct"],
                "errors": sum(sum(r["errors"].values()) + r["lost"] for r in rs),
            }
        )
    return out


def render(res: dict[str, Any]) -> str:
    p = res["plan"]
    pin = res["pin"]
    lines = [
        f"bench_e2e: {res['date']}; {res['loop']}; pin {pin['mode']} (client {pin['client']}, "
        f"frontend {pin['frontend']}, worker {pin['worker']}); instances "
        f"{res['knobs']['instances']}, intra {res['knobs']['intra']}, inter "
        f"{res['knobs']['inter']}; {p['duration']} s per point after {p['warmup']} s warm-up; "
        f"median of {p['repeat']} rounds; request frames {res['request_bytes']} B",
        "",
        "In-process floor (`signatures['serving_default'](x=tf.constant(x))`, child process "
        "configured like a worker):",
        "",
    ]
    frows = []
    kinds = [(b, False) for b in p["floor_batches"]]
    if p.get("floor_gap_us"):
        kinds.append((1, True))
    for m in p["models"]:
        for b, gap in kinds:
            f = floor_of(res["floor"], m, b, None, gap)
            frows.append(
                [
                    m,
                    f"{b} (after {p['floor_gap_us']:.0f} us idle)" if gap else b,
                    B.fmt(f["p50_us"]),
                    B.fmt(f["p90_us"]),
                    B.fmt(f["p99_us"]),
                    "-" if gap else B.fmt(f["calls_per_s"], 0),
                    "-" if gap else B.fmt(f["rows_per_s"], 0),
                ]
            )
    lines.append(
        B.md_table(["model", "batch", "p50 us", "p90 us", "p99 us", "calls/s", "rows/s"], frows)
    )
    lines += ["", "Served, batch 1, closed loop:", ""]
    rows = []
    for s in served_summary(res):
        rows.append(
            [
                s["model"],
                s["transport"],
                s["concurrency"],
                B.fmt(s["p50_us"]),
                B.fmt(s["p90_us"]),
                B.fmt(s["p99_us"]),
                B.fmt(s["rps"], 0),
                B.fmt(s["minus_inproc_p50_us"]),
                B.fmt(s["p50_ratio"], 2),
                B.fmt(s["rps_fraction"], 2),
                B.fmt(s["worker_busy_us"]),
                s["errors"],
            ]
        )
    lines.append(
        B.md_table(
            [
                "model",
                "transport",
                "concurrency",
                "p50 us",
                "p90 us",
                "p99 us",
                "req/s",
                "p50 - inproc p50 us",
                "p50 / inproc p50",
                "req/s / inproc rate",
                "worker busy us/req",
                "errors+lost",
            ],
            rows,
        )
    )
    seen = res["cpus_seen"]
    ws = ", ".join(
        f"{w.get('model')}/w{w.get('index')} pid {w.get('pid')} affinity {w.get('cpu_affinity')}"
        for w in res["workers"]
    )
    lines += [
        "",
        f"Placement: workers: {ws}. CPUs seen running under load: "
        + "; ".join(
            f"{k} {B.cpu_hist(Counter({int(c): n for c, n in v.items()}))}"
            for k, v in sorted(seen.items())
        )
        + f"; floor child affinity {res['floor_child'].get('affinity')}.",
        "",
        "`worker busy` is the worker's own time per request (ring read, TF call, outputs to "
        "numpy, from the `stats` op); the rest of p50 is transport, frontend and waking.",
    ]
    return "\n".join(lines)


# ---- CLI -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python perf/bench_e2e.py",
        description="Served latency and throughput of the demo MLP and a linear model over "
        "Unix and TCP, against the in-process TF call on the same input, in one run.",
    )
    p.add_argument("--models", default="demo,linear", help="demo,linear (default both)")
    p.add_argument("--transports", default="unix,tcp", help="unix,tcp (default both)")
    p.add_argument("--concurrency", default="1,8,32", help="closed-loop concurrencies")
    C.add_connections_arg(p)
    C.add_round_args(p, duration=3.0, warmup=0.5, floor_calls=2000)
    p.add_argument("--floor-batch", default="1,32", help="floor batch sizes (default 1,32)")
    p.add_argument(
        "--floor-gap-us",
        type=float,
        default=1000.0,
        help="also time the floor at batch 1 with this idle sleep before each call, as a "
        "worker waiting for requests makes it (default 1000; 0: off; not used in ratios)",
    )
    p.add_argument("--instances", type=int, default=1, help="workers per model (default 1)")
    p.add_argument("--intra", type=int, default=1, help="intra_op_threads (default 1)")
    p.add_argument("--inter", type=int, default=1, help="inter_op_threads (default 1)")
    p.add_argument(
        "--pin",
        default="none",
        choices=B.PIN_MODES,
        help="none: unpinned; same: client, frontend, worker (and floor) on one CPU; split: "
        "worker (and floor) on a second CPU (default none)",
    )
    C.add_server_toml_arg(p)
    p.add_argument(
        "--models-toml",
        action="append",
        default=[],
        metavar="TEXT",
        help='extra text in every [[models]] table after base_path, e.g. "max_queue = 4096" '
        "(repeatable; instances come from --instances/--intra/--inter/--pin)",
    )
    C.add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    C.apply_quick(args)
    res = run(args)
    bad = res["server_exit_code"] != 0 or any(r["requests"] == 0 for r in res["served"])
    title = f"End to end, pin {args.pin} (perf/bench_e2e.py)"
    return C.finish(args, res, render(res), f"bench_e2e-{args.pin}", title, bad)


if __name__ == "__main__":
    sys.exit(main())
