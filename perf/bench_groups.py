"""Many models on one host: one worker group against a worker set per model.

Twenty distinct models (the demo MLP, 784-512-512-10, each built here with its own
seed; nothing downloaded) served two ways, one after the other, by real servers:

- **grouped**: one `[[groups]]` of all the models, `--grouped-count` workers (2);
- **ungrouped**: every model with its own `--ungrouped-count` workers (2, the issue's
  framing; `--ungrouped-count 1` halves the machine's load, and the report says so).

For each: time from the server's start to ready (`health` ready: every model has a
serving worker) and to every worker ready; private memory, PSS summed over the
server process and all its workers (`/proc/PID/smaps_rollup`), once every worker is
ready and again after the load; and closed-loop throughput at `--concurrency` (8)
requests in flight, one connection each, request i going to model i mod 20, batch 1.
The same generator against `ringserve.bench.echo` (a frame echo, no serving) gives
its ceiling, and the in-process TensorFlow call on the same input gives the ratio
perf/ reports against.

    flock /tmp/ringserve-bench.lock python perf/bench_groups.py --write-results
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchcli as C
import benchlib as B

from ringserve.bench.echo import EchoServer
from ringserve.bench.frames import RequestTemplate, infer_template
from ringserve.bench.loops import closed_loop
from ringserve.bench.target import parse_target
from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess

RESULTS_KEY = "groups"


class Spread:
    """Request templates for several models: request id i goes to model i mod n."""

    def __init__(self, templates: list[RequestTemplate], check_ok: bool = True) -> None:
        self.templates = templates
        self.check_ok = check_ok
        self.rows = templates[0].rows
        self.size = templates[0].size
        self.fields = templates[0].fields

    def frame(self, rid: int) -> bytes:
        return self.templates[rid % len(self.templates)].frame(rid)


def build_models(root: Path, n: int) -> list[str]:
    from ringserve.runtime.worker.demo_model import build

    names = []
    for i in range(n):
        name = f"mlp{i:02d}"
        build(root / name, seed=1000 + i)
        names.append(name)
    return names


def models_toml(root: Path, names: list[str], grouped: bool, count: int) -> str:
    out = []
    for n in names:
        out.append(f'[[models]]\nname = "{n}"\nbase_path = "{root / n}"\n')
        if not grouped:
            out.append(f"  [models.instances]\n  count = {count}\n")
    if grouped:
        listed = ", ".join(f'"{n}"' for n in names)
        out.append(
            f'[[groups]]\nname = "all"\nmodels = [{listed}]\n'
            f"  [groups.instances]\n  count = {count}\n"
        )
    return "\n".join(out)


def pss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def server_pids(srv: ServerProcess) -> list[int]:
    assert srv.proc is not None
    return [srv.proc.pid, *B.descendants(srv.proc.pid)]


def all_workers_ready(srv: ServerProcess, expected: int) -> bool:
    with Client(srv.unix_url, timeout=30) as c:
        ws = c.stats()["workers"]
    return sum(1 for w in ws if w["state"] == "ready") >= expected


def start(
    label: str, root: Path, names: list[str], grouped: bool, count: int, timeout: float
) -> tuple[ServerProcess, dict[str, Any]]:
    """Start one server; time it to ready and to every worker ready; its PSS then."""
    workers = count if grouped else count * len(names)
    srv = ServerProcess(
        models_toml(root, names, grouped, count),
        "ring_bytes = 1048576",
        wait_ready=False,
        ready_timeout=timeout,
    )
    t0 = time.monotonic()
    srv.start()
    try:
        srv.wait_ready(timeout)
        ready_s = time.monotonic() - t0
        deadline = time.monotonic() + timeout
        while not all_workers_ready(srv, workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: not every worker ready")
            time.sleep(0.05)
        all_ready_s = time.monotonic() - t0
    except BaseException:
        srv.stop()
        raise
    pids = server_pids(srv)
    pss = pss_bytes(pids)
    row: dict[str, Any] = {
        "label": label,
        "workers": workers,
        "processes": len(pids),
        "ready_s": ready_s,
        "all_ready_s": all_ready_s,
        "pss_ready": pss,
        "runs": [],
    }
    sys.stderr.write(
        f"{label}: ready {ready_s:.1f}s, every worker {all_ready_s:.1f}s, "
        f"PSS {pss / 2**20:.0f} MiB over {len(pids)} processes\n"
    )
    return srv, row


def load(srv: ServerProcess, row: dict[str, Any], spread: Spread, args: argparse.Namespace) -> None:
    res = closed_loop(
        parse_target(srv.unix_url),
        spread,  # type: ignore[arg-type]
        concurrency=args.concurrency,
        connections=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    row["runs"].append(
        {
            "rps": res.rps,
            "p50_us": res.p50_us,
            "p99_us": res.p99_us,
            "errors": res.errors_total,
            "lost": res.lost,
        }
    )
    sys.stderr.write(f"{row['label']}: {res.rps:.0f} req/s p50 {res.p50_us:.0f} us\n")


def finish(srv: ServerProcess, row: dict[str, Any]) -> None:
    row["pss_after"] = pss_bytes(server_pids(srv))
    with Client(srv.unix_url, timeout=30) as c:
        served = [s.get("success", 0) for s in c.stats()["models"].values()]
    row["served_min"], row["served_max"] = min(served), max(served)
    row["exit"] = srv.stop()
    for k in ("rps", "p50_us", "p99_us"):
        row[k] = B.median(r[k] for r in row["runs"])
    row["errors"] = sum(sum(r["errors"].values()) + r["lost"] for r in row["runs"])


def inprocess_rps(path: Path, x: np.ndarray, seconds: float) -> float:
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    t = tf.constant(x)
    for _ in range(20):
        fn(x=t)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn(x=t)
        n += 1
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--grouped-count", type=int, default=2)
    p.add_argument("--ungrouped-count", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    C.add_round_args(p, duration=10.0, warmup=2.0)
    p.add_argument("--ready-timeout", type=float, default=900.0)
    p.add_argument("--models-dir", default=None, help="reuse built models here")
    C.add_output_args(p)
    args = p.parse_args(argv)
    C.apply_quick(args, models=3, duration=2.0, warmup=0.5)
    tmp = None
    if args.models_dir:
        root = Path(args.models_dir)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ringserve-groups-")
        root = Path(tmp.name)
    names = build_models(root, args.models)
    x = np.random.default_rng(5).standard_normal((1, 784)).astype(np.float32)
    spread = Spread([infer_template(n, {"x": x}) for n in names])
    tf_rps = inprocess_rps(root / names[0] / "1", x, 3.0)
    with EchoServer() as echo:
        ceiling = closed_loop(
            echo.target("unix"),
            Spread(spread.templates, check_ok=False),  # type: ignore[arg-type]
            concurrency=args.concurrency,
            connections=args.concurrency,
            duration_s=min(args.duration, 5.0),
            warmup_s=0.5,
        )
    # Both servers run side by side once started (each started and timed alone), and
    # their load windows alternate, so machine noise falls on both alike.
    g_srv, g = start("grouped", root, names, True, args.grouped_count, args.ready_timeout)
    try:
        u_srv, u = start("ungrouped", root, names, False, args.ungrouped_count, args.ready_timeout)
    except BaseException:
        g_srv.stop()
        raise
    try:
        for _ in range(args.repeat):
            load(g_srv, g, spread, args)
            load(u_srv, u, spread, args)
    finally:
        finish(g_srv, g)
        finish(u_srv, u)
    bad = bool(g["errors"] or u["errors"] or g["exit"] or u["exit"])
    mib = 2**20
    rows = []
    for r in (g, u):
        rows.append(
            [
                r["label"],
                r["workers"],
                f"{r['ready_s']:.1f}",
                f"{r['all_ready_s']:.1f}",
                f"{r['pss_ready'] / mib:.0f}",
                f"{r['pss_after'] / mib:.0f}",
                f"{r['rps']:.0f}",
                f"{r['rps'] / tf_rps:.2f}",
                f"{r['p50_us']:.0f}",
                f"{r['p99_us']:.0f}",
                f"{r['served_min']}-{r['served_max']}",
            ]
        )
    table = B.md_table(
        [
            "server",
            "workers",
            "ready s",
            "all workers ready s",
            "PSS ready MiB",
            "PSS after load MiB",
            "req/s",
            "x in-process TF",
            "p50 us",
            "p99 us",
            "requests per model",
        ],
        rows,
    )
    ratios = (
        f"- memory, grouped / ungrouped (PSS after load): "
        f"**{g['pss_after'] / u['pss_after']:.3f}** (target <= 0.25)\n"
        f"- time to ready, ungrouped / grouped: **{u['ready_s'] / g['ready_s']:.2f}x** "
        f"(target >= 3); to every worker ready: {u['all_ready_s'] / g['all_ready_s']:.2f}x\n"
        f"- throughput, grouped / ungrouped: **{g['rps'] / u['rps']:.2f}** (target >= 1)\n"
    )
    info = B.machine_info()
    body = (
        "\n".join(B.machine_lines(info))
        + f"\n- command: `{B.command_line()}`; one run, {B.now_utc()}\n"
        f"- {args.models} distinct demo MLPs (784-512-512-10, seeds 1000..), batch 1, "
        f"closed loop at c={args.concurrency} (one connection each) for {args.duration:g} s "
        f"after {args.warmup:g} s, request i to model i mod {args.models}; {args.repeat} "
        "load windows per server, the two servers' windows alternating (both servers up, "
        "each started and timed alone); req/s and latencies are medians of the windows\n"
        f"- grouped: one group of {args.grouped_count} workers; ungrouped: "
        f"{args.ungrouped_count} worker(s) per model\n"
        f"- in-process TensorFlow, same model and input, one thread: {tf_rps:.0f} calls/s; "
        f"generator ceiling (same frames against the echo server): {ceiling.rps:.0f} req/s\n\n"
        f"{table}\n\n{ratios}"
    )
    print(body)
    C.write_json(
        args.json, {"grouped": g, "ungrouped": u, "tf_rps": tf_rps, "ceiling": ceiling.rps}
    )
    if tmp is not None:
        tmp.cleanup()
    return C.publish(args, RESULTS_KEY, "Worker groups: 20 models in one group", body, bad)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
