"""`ringserve bench ADDRESS --model NAME`: load a running server and report what it does.

Closed loop over concurrencies (`--concurrency 1,4,16,64`) or open loop at request
rates (`--rate 100,500`, `--poisson`), `--duration` seconds a point after `--warmup`,
over TCP, a Unix socket, or a Unix socket with inputs in a client shared-memory
region (`--shm`). Each point: req/s, rows/s, p50/p90/p99/max latency, errors by
code, and from the server's `stats` over the same window the compute and queue
split, the workers' CPU, context switches and busy time. `--echo-ceiling` measures
each point once more against a plain echo of the same frames: the generator's own
ceiling.

This module imports nothing heavy at import time: `ringserve --help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def _ints(s: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of integers, received {s!r}"
        ) from None
    if not out or any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive integers, received {s!r}") from None
    return out


def _floats(s: str) -> list[float]:
    try:
        out = [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of numbers, received {s!r}"
        ) from None
    if not out or any(v <= 0 for v in out):
        raise argparse.ArgumentTypeError(f"expected positive rates, received {s!r}") from None
    return out


def _names(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def add_request_args(p: argparse.ArgumentParser) -> None:
    """What each request carries (shared with `ringserve tune`)."""
    p.add_argument("--batch-size", type=int, default=1, help="rows per request (default 1)")
    p.add_argument("--signature", default=None, help="default serving_default")
    p.add_argument("--outputs", type=_names, default=None, help="comma list (default: all)")
    p.add_argument(
        "--input-file",
        default=None,
        metavar="FILE",
        help=".npy (a one-input signature) or .npz (one array per input name); "
        "default: seeded random inputs shaped from the model's metadata",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")


def add_load_args(p: argparse.ArgumentParser, duration: float, warmup: float) -> None:
    p.add_argument(
        "--concurrency",
        type=_ints,
        default=[1, 4, 16, 64],
        help="closed loop: requests in flight, a comma list (default 1,4,16,64)",
    )
    p.add_argument(
        "--duration", type=float, default=duration, help=f"seconds a point (default {duration})"
    )
    p.add_argument(
        "--warmup", type=float, default=warmup, help=f"seconds before each (default {warmup})"
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", help="tcp://127.0.0.1:PORT, unix:///path/to.sock, or a socket path")
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--version", type=int, default=None, help="default: the newest serving")
    add_request_args(p)
    p.add_argument("--timeout-ms", type=float, default=None, help="timeout_ms of each request")
    add_load_args(p, duration=5.0, warmup=1.0)
    p.add_argument(
        "--connections",
        type=int,
        default=0,
        help="closed loop: connections sharing the requests in flight (default: one "
        "per request in flight, at most 64); open loop: connections the requests go round "
        "(default 1)",
    )
    p.add_argument(
        "--rate", type=_floats, default=None, help="open loop instead: requests/s, a comma list"
    )
    p.add_argument("--poisson", action="store_true", help="open loop: Poisson arrivals")
    p.add_argument(
        "--max-inflight",
        type=int,
        default=4096,
        help="open loop: a request due while this many are outstanding is not sent "
        "(counted as lost)",
    )
    p.add_argument("--shm", action="store_true", help="inputs in a client shared-memory region")
    p.add_argument("--token-file", default=None, help="file holding the TCP auth token")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback TCP address")
    p.add_argument(
        "--echo-ceiling",
        action="store_true",
        help="also run each point against a plain echo of the same frames (the "
        "generator's own ceiling)",
    )
    p.add_argument("--label", default=None, help="name of this run in tables and plots")
    p.add_argument("--json", default=None, metavar="FILE", help="write every figure as JSON")
    p.add_argument("--csv", default=None, metavar="FILE", help="write one CSV line per point")
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="latency percentiles against throughput (needs the [bench] extra)",
    )
    p.add_argument(
        "--plot-with",
        action="append",
        default=[],
        metavar="RUN.json",
        help="add the curve of an earlier run's --json to the plot (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"ringserve bench: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import json
    import time

    from . import report
    from .echo import EchoServer
    from .loops import loop_name
    from .plot import check_available, latency_vs_throughput
    from .progress import Progress
    from .runner import Load, Request, prepared, run_points
    from .target import parse_target

    if args.plot:
        check_available()
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, received {args.batch_size}")
    target = parse_target(args.address, allow_remote=args.allow_remote)
    token = open(args.token_file).read().strip() if args.token_file else None
    req = Request(
        model=args.model,
        batch_size=args.batch_size,
        signature=args.signature,
        outputs=args.outputs,
        version=args.version,
        input_file=args.input_file,
        seed=args.seed,
        timeout_ms=args.timeout_ms,
        shm=args.shm,
    )
    load = Load(
        concurrency=args.concurrency,
        rates=args.rate or [],
        poisson=args.poisson,
        duration_s=args.duration,
        warmup_s=args.warmup,
        connections=args.connections,
        max_inflight=args.max_inflight,
        seed=args.seed,
    )
    transport = "unix+shm" if args.shm else target.kind
    label = args.label or f"{args.model} {transport}"
    total = load.seconds() * (2 if args.echo_ceiling else 1)
    progress = Progress(total, enabled=False if args.no_progress else None)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    echo_rows: list[dict[str, Any]] = []
    with prepared(target, req, token) as (tpl, setup):
        print(
            f"ringserve bench: {target.url}, model {args.model}, {tpl.rows} rows a request, "
            f"request frame {tpl.size} B, {transport}, {loop_name()}, "
            f"{args.duration:g} s a point after {args.warmup:g} s warm-up",
            file=sys.stderr,
        )
        rows = run_points(
            target,
            tpl,
            load,
            model=args.model,
            token=token,
            setup=setup,
            progress=progress,
            transport=transport,
        )
        if args.echo_ceiling:
            with EchoServer() as echo:
                rows_e = run_points(
                    echo.target(target.kind),
                    tpl,
                    load,
                    model=None,
                    token=token,
                    setup=setup,
                    progress=progress,
                    transport=f"echo {transport}",
                )
            echo_rows = rows_e
    progress.done()
    for r in rows:
        r["label"] = label
    print(report.table(rows + echo_rows))
    doc = {
        "tool": "ringserve bench",
        "label": label,
        "date": started,
        "command": " ".join(["ringserve", "bench", *sys.argv[2:]]),
        "address": target.url,
        "model": args.model,
        "request": {**req.__dict__, "frame_bytes": tpl.size, "rows": tpl.rows},
        "load": load.__dict__,
        "loop": loop_name(),
        "machine": report.machine(),
        "pid": os.getpid(),
        "points": rows,
        "echo": echo_rows,
    }
    if args.json:
        report.write_json(args.json, doc)
    if args.csv:
        report.write_csv(args.csv, rows + echo_rows)
    if args.plot:
        runs = [(label, rows)]
        if echo_rows:
            runs.append((f"echo ({transport})", echo_rows))
        for f in args.plot_with:
            d = json.loads(open(f).read())
            runs.append((d.get("label", f), d.get("points", [])))
        latency_vs_throughput(runs, args.plot, title=f"ringserve bench: {args.model}")
    return 0 if rows and all(r["requests"] > 0 for r in rows) else 1
