"""Through HAProxy (configs/haproxy/ringserve.cfg, run by a real haproxy) to two
ringserve instances, against direct TCP connections to one, in the same run.

Per round: the in-process TensorFlow call (the floor) on the same model and input,
then closed loops at each concurrency (one connection per outstanding request) to one
instance directly and to the proxy. Figures are medians over rounds; ratios and the
latency the proxy adds are computed per round, then the median taken.

    flock /tmp/ringserve-bench.lock python perf/bench_haproxy.py --write-results

On one small host the two instances share its cores with the proxy and the load
generator: the throughput ratio says what the proxy and a second instance cost or
gain here, not what two hosts would give.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchcli as C
import benchlib as B
import inproc
import numpy as np

from ringserve import bench as LG

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lb import HAProxy, Instance


def models_toml(paths: dict[str, Path], models: list[str]) -> str:
    return "\n".join(
        f'[[models]]\nname = "{m}"\nbase_path = "{inproc.model_base(paths[m])}"\n'
        "  [models.instances]\n  count = 1\n  intra_op_threads = 1\n"
        for m in models
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    models = [m for m in args.models.split(",") if m]
    concs = [int(c) for c in args.concurrency.split(",") if c]
    rounds: list[dict[str, Any]] = []
    info = B.machine_info()
    with tempfile.TemporaryDirectory(prefix="rsbench-lb-") as tmp:
        paths = inproc.build_models(tmp)
        inputs = inproc.make_inputs(Path(tmp), [1])
        tpls = {m: LG.infer_template(m, {"x": np.load(inputs[(m, 1)])}) for m in models}
        toml = models_toml(paths, models)
        insts = [Instance(f"lb{i}", toml, "ring_bytes = 4194304\n") for i in range(2)]
        proxy = HAProxy(Path(tmp), insts, inter_ms=1000)
        child = inproc.FloorChild({m: paths[m] for m in models}, log_dir=tmp)
        try:
            for inst in insts:
                inst.start(wait=False)
            for inst in insts:
                assert inst.srv is not None
                inst.srv.wait_ready()
            proxy.start()
            direct = LG.parse_target(insts[0].url)
            via = LG.parse_target(proxy.url)
            for r in range(args.repeat):
                row: dict[Any, Any] = {"round": r}
                for m in models:
                    row[(m, "floor")] = child.time(m, inputs[(m, 1)], n=args.floor_calls)
                    for c in concs:
                        for name, target in (("direct", direct), ("haproxy", via)):
                            res = LG.closed_loop(
                                target,
                                tpls[m],
                                concurrency=c,
                                connections=c,
                                duration_s=args.duration,
                                warmup_s=args.warmup,
                            )
                            if res.errors or res.lost:
                                raise RuntimeError(f"{name} c={c}: {res.errors} lost {res.lost}")
                            row[(m, name, c)] = res.row()
                            sys.stderr.write(
                                f"round {r} {m} {name} c={c}: {res.rps:.0f}/s "
                                f"p50 {res.p50_us:.0f} us\n"
                            )
                rounds.append(row)
            stats = {
                n: s["stot"] for n, s in proxy.servers().items()
            }  # both instances got connections
        finally:
            child.close()
            proxy.stop()
            for inst in insts:
                inst.stop()
    return {"info": info, "models": models, "concs": concs, "rounds": rounds, "sessions": stats}


def summarize(res: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for m in res["models"]:
        floor = B.median(r[(m, "floor")]["p50_us"] for r in res["rounds"])
        for c in res["concs"]:

            def med(name: str, key: str, m: str = m, c: int = c) -> float:
                return B.median(r[(m, name, c)][key] for r in res["rounds"])

            ratio = B.median(
                r[(m, "haproxy", c)]["rps"] / r[(m, "direct", c)]["rps"] for r in res["rounds"]
            )
            added = B.median(
                r[(m, "haproxy", c)]["p50_us"] - r[(m, "direct", c)]["p50_us"]
                for r in res["rounds"]
            )
            rows.append(
                [
                    m,
                    c,
                    B.fmt(floor),
                    B.fmt(med("direct", "rps"), 0),
                    B.fmt(med("haproxy", "rps"), 0),
                    B.fmt(ratio, 2),
                    B.fmt(med("direct", "p50_us")),
                    B.fmt(med("haproxy", "p50_us")),
                    B.fmt(added),
                    B.fmt(med("direct", "p50_us") / floor, 2),
                ]
            )
    return rows


def render(res: dict[str, Any]) -> str:
    table = B.md_table(
        [
            "model",
            "c",
            "in-process p50 us",
            "direct 1 instance req/s",
            "HAProxy 2 instances req/s",
            "HAProxy / direct req/s",
            "direct p50 us",
            "HAProxy p50 us",
            "HAProxy adds p50 us",
            "direct p50 / in-process",
        ],
        summarize(res),
    )
    lines = [
        f"Command: `flock /tmp/ringserve-bench.lock {B.command_line()}`, {B.now_utc()}.",
        "",
        *B.machine_lines(res["info"]),
        "",
        "Closed loop, batch 1, one TCP connection per outstanding request "
        "(`ringserve bench`); medians of "
        f"{len(res['rounds'])} rounds; ratios and differences taken per round. "
        "HAProxy runs configs/haproxy/ringserve.cfg (TCP mode, leastconn) in front of "
        "two instances with one worker each; direct is one such instance. Sessions "
        f"HAProxy gave each instance: {res['sessions']}.",
        "",
        table,
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="linear,demo")
    p.add_argument("--concurrency", default="1,16")
    C.add_round_args(p, duration=3.0, warmup=0.5, floor_calls=2000)
    C.add_output_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    C.apply_quick(args, duration=0.5, floor_calls=100)
    res = run(args)
    # JSON keys must be strings: the rounds are keyed by (model, side) tuples.
    doc = {
        **res,
        "rounds": [
            {"|".join(map(str, k)) if isinstance(k, tuple) else k: v for k, v in r.items()}
            for r in res["rounds"]
        ],
    }
    body = render(res)
    title = "Through HAProxy: 2 instances against 1 direct"
    return C.finish(args, doc, body, "bench_haproxy", title, False, body=body)


if __name__ == "__main__":
    sys.exit(main())
