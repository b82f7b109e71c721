"""The load generator's ceiling: `ringserve bench` against the server and against a
plain echo of the same frames, in the same run.

One run, one process tree: the demo MLP and the linear model behind a real server
(one worker each); in each of --repeat rounds, for each model, transport (Unix, TCP,
Unix with inputs in a client shared-memory region) and concurrency, one closed-loop
point against the server and the same point (same frames, same set-up messages, same
connections) against `ringserve.bench.echo`. A served point near the echo's req/s
would be limited by the generator; the ratio says how far from it each is. Medians
over rounds.

    python perf/bench_ceiling.py                  # 3 rounds, c = 1, 8, 32
    python perf/bench_ceiling.py --write-results  # and the section of perf/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Any

import bench_e2e as E
import benchcli as C
import benchlib as B
import inproc

from ringserve.bench import runner
from ringserve.bench.echo import EchoServer
from ringserve.bench.loops import loop_name

RESULTS_KEY = "bench_ceiling"
TRANSPORTS = ("unix", "tcp", "unix+shm")


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = [m for m in args.models.split(",") if m]
    conc = [int(c) for c in args.concurrency.split(",") if c]
    load = runner.Load(conc, duration_s=args.duration, warmup_s=args.warmup)
    info = B.machine_info()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rsbench-ceiling-") as tmp:
        paths = inproc.build_models(tmp)
        knobs = E.ServerKnobs(1, 1, 1, list(args.server_toml))
        served = E.Served({m: paths[m] for m in models}, knobs, B.pin_plan("none"), tmp).start()
        try:
            with EchoServer() as echo:
                targets = served.targets()
                for rnd in range(args.repeat):
                    for m in models:
                        for t in TRANSPORTS:
                            kind = "tcp" if t == "tcp" else "unix"
                            req = runner.Request(model=m, shm=t == "unix+shm")
                            with runner.prepared(targets[kind], req) as (tpl, setup):
                                for c in conc:
                                    for side, target, watch in (
                                        ("served", targets[kind], m),
                                        ("echo", echo.target(kind), None),
                                    ):
                                        row = runner.measure(
                                            target, tpl, load, "closed", c,
                                            model=watch, setup=setup, transport=t,
                                        )  # fmt: skip
                                        row.update(model=m, side=side, round=rnd)
                                        rows.append(row)
                                        sys.stderr.write(
                                            f"  r{rnd} {m} {side}" + runner.summary(row) + "\n"
                                        )
        finally:
            code = served.stop()
    return {
        "machine": info,
        "command": B.command_line(),
        "date": B.now_utc(),
        "loop": loop_name(),
        "server_exit_code": code,
        "plan": {"models": models, "concurrency": conc, **load.__dict__, "repeat": args.repeat},
        "rows": rows,
    }


def render(res: dict[str, Any]) -> str:
    p = res["plan"]
    out = [
        f"bench_ceiling: {res['date']}; {res['loop']}; {p['duration_s']:g} s a point after "
        f"{p['warmup_s']:g} s warm-up; one connection per request in flight; median of "
        f"{p['repeat']} rounds. `echo` is `ringserve.bench.echo` (decode, mark ok, encode) "
        "answering the same frames on the same transport.",
        "",
    ]
    hdr = ["model", "transport", "conc", "frame B", "served req/s", "served p50 us",
           "echo req/s", "echo p50 us", "served / echo req/s", "client cpu % (echo)",
           "errors"]  # fmt: skip
    body = []
    for m in p["models"]:
        for t in TRANSPORTS:
            for c in p["concurrency"]:
                pick = [r for r in res["rows"] if (r["model"], r["transport"], r["concurrency"])
                        == (m, t, c)]  # fmt: skip
                s = [r for r in pick if r["side"] == "served"]
                e = [r for r in pick if r["side"] == "echo"]
                ratio = [a["rps"] / b["rps"] for a, b in zip(s, e, strict=True) if b["rps"]]
                errs = sum(sum(r["errors_total"].values()) + r["lost"] for r in pick)
                body.append([
                    m, t, c, s[0]["request_bytes"],
                    B.fmt(B.median(r["rps"] for r in s), 0),
                    B.fmt(B.median(r["p50_us"] for r in s)),
                    B.fmt(B.median(r["rps"] for r in e), 0),
                    B.fmt(B.median(r["p50_us"] for r in e)),
                    B.fmt(B.median(ratio), 3),
                    B.fmt(B.median(r["client_cpu_pct"] for r in e), 0),
                    errs,
                ])  # fmt: skip
    out.append(B.md_table(hdr, body))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python perf/bench_ceiling.py", description=__doc__)
    p.add_argument("--models", default="linear,demo", help="linear,demo (default both)")
    p.add_argument("--concurrency", default="1,8,32", help="closed-loop concurrencies")
    C.add_round_args(p, duration=2.0, warmup=0.3)
    C.add_server_toml_arg(p)
    C.add_output_args(p)
    args = p.parse_args(argv)
    C.apply_quick(args, concurrency="1,8")
    res = run(args)
    bad = res["server_exit_code"] != 0 or any(r["requests"] == 0 for r in res["rows"])
    title = "Load generator ceiling: served against a plain echo (perf/bench_ceiling.py)"
    return C.finish(args, res, render(res), RESULTS_KEY, title, bad)


if __name__ == "__main__":
    sys.exit(main())
