"""Where the frontend's time goes under load: py-spy samples of the server process
during bench_batching's c=32 batched closed loop, summed per function.

One run: builds the demo MLP, starts one server with [models.batching] as
bench_batching's "on" configuration, drives --concurrency requests in flight on
--connections connections (`ringserve bench`'s closed loop, in this process) and,
after --warmup seconds, records the server process (the supervisor and frontend, one
process) with `py-spy record --format raw --nonblocking` for --duration seconds.
The frontend's CPU per request comes from its own counters: CPU seconds of the
process (/proc schedstat) over the requests the `stats` op counted, both read just
before and after the recording.

Prints two tables: self time (samples whose innermost frame is the function) and
inclusive time (samples with the function anywhere on the stack), as a percent of the
samples of the loop's thread (idle samples included: py-spy's --idle).

    pip install py-spy
    python perf/profile_frontend.py                       # c=32 on 1 connection
    python perf/profile_frontend.py --connections 4       # the 4 x 8 shape
    python perf/profile_frontend.py --out perf/profiles/before-c32.txt
    python perf/profile_frontend.py --on-cpu              # py-spy, on-CPU samples only
    python perf/profile_frontend.py --perf                # linux-perf: share by shared object
    python perf/profile_frontend.py --perf --perf-sort dso,sym  # ... and by function in each
    python perf/profile_frontend.py --syscalls            # perf trace: system calls a request
    python perf/profile_frontend.py --counts              # perf stat: the same, untraced
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import bench_batching as BB
import bench_e2e as E
import benchlib as B
import inproc

from ringserve import bench as LG

IDLE_FRAMES = ("select (selectors.py", "poll (", "epoll_wait", "run_forever", "_run_once")


def parse_raw(text: str) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed)
    output: `frame;frame;...;frame count` per line, outermost first."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = [_short(f) for f in stack.split(";")]
        if frames:
            own[frames[-1]] += k
        for f in set(frames):
            incl[f] += k
    return own, incl, total


def _short(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`: lines merged per function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def render(
    own: collections.Counter[str], incl: collections.Counter[str], total: int, top: int
) -> str:
    def table(c: collections.Counter[str]) -> str:
        rows = [[f"`{f}`", n, B.fmt(100 * n / max(1, total))] for f, n in c.most_common(top)]
        return B.md_table(["function", "samples", "% of samples"], rows)

    return "\n".join(
        [
            f"Self time (innermost frame), top {top} of {total} samples:",
            "",
            table(own),
            "",
            f"Inclusive time (anywhere on the stack), top {top}:",
            "",
            table(incl),
        ]
    )


def recorder(args: argparse.Namespace, spy: str, pid: int, tmp: str) -> list[str]:
    """The sampling command: py-spy (Python frames), or linux-perf (every shared
    object, the kernel included: how much of the CPU is the interpreter at all)."""
    secs = str(int(args.duration))
    if args.counts:
        events = ",".join([*(f"syscalls:sys_enter_{c}" for c in COUNTED), "context-switches"])
        return [spy, "stat", "-x", ",", "-e", events, "-p", str(pid),
                "-o", f"{tmp}/stat.txt", "--", "sleep", secs]  # fmt: skip
    if args.syscalls:
        return [spy, "trace", "-s", "-p", str(pid), "-o", f"{tmp}/trace.txt", "--", "sleep", secs]
    if args.perf:
        return [spy, "record", "-e", "cpu-clock", "-F", "2000", "-g", "-p", str(pid),
                "-o", f"{tmp}/perf.data", "--", "sleep", secs]  # fmt: skip
    idle = [] if args.on_cpu else ["--idle"]
    return [spy, "record", "--pid", str(pid), "--format", "raw", "--nonblocking", *idle,
            "--rate", str(args.rate), "--duration", secs, "--output", f"{tmp}/raw.txt"]  # fmt: skip


def perf_report(args: argparse.Namespace, tmp: str, out: dict[str, Any], r: Any) -> str:
    """Shares of linux-perf's cpu-clock samples by shared object (or by function)."""
    rep = subprocess.run(
        ["perf", "report", "-i", f"{tmp}/perf.data", "--no-children", "--sort", args.perf_sort,
         "-q", "-g", "none", "--stdio"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    rows = []
    for line in rep.stdout.splitlines():
        pct, _, dso = line.strip().partition("%")
        if dso.strip() and pct.replace(".", "", 1).isdigit():
            rows.append([f"`{dso.strip()}`", pct])
    if not rows:
        raise SystemExit(f"perf recorded nothing (rc {out.get('spy_rc')}): {out.get('spy_err')}")
    n = max(1, out["requests"])
    return (
        f"profile_frontend: {B.now_utc()}; demo MLP, c={args.concurrency} on "
        f"{args.connections} connection(s), batching max_batch_size {args.max_batch_size}; "
        f"perf record -e cpu-clock -F 2000 -g for {args.duration} s after {args.warmup} s\n\n"
        f"Load: {r.rps:.0f} req/s; the frontend used {1e6 * out['cpu_s'] / n:.1f} CPU us "
        f"per request while recorded.\n\nShare of samples by {args.perf_sort}, top {args.top}:"
        f"\n\n{B.md_table([args.perf_sort, '% of samples'], rows[: args.top])}"
    )


def syscall_report(args: argparse.Namespace, tmp: str, out: dict[str, Any], r: Any) -> str:
    """System calls per request, summed over the server process's threads, from
    `perf trace -s`: each thread's table is `syscall calls errors total-ms ...`."""
    text = Path(f"{tmp}/trace.txt").read_text() if Path(f"{tmp}/trace.txt").exists() else ""
    calls: collections.Counter[str] = collections.Counter()
    ms: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[1].isdigit() and f[2].isdigit():
            calls[f[0]] += int(f[1])
            ms[f[0]] += float(f[3])
    if not calls:
        raise SystemExit(
            f"perf trace recorded nothing (rc {out.get('spy_rc')}): {out.get('spy_err')}"
        )
    n = max(1, out["requests"])
    rows = [
        [f"`{name}`", k, B.fmt(k / n, 3), B.fmt(1000 * ms[name] / n, 2)]
        for name, k in calls.most_common(args.top)
    ]
    return (
        f"profile_frontend: {B.now_utc()}; demo MLP, c={args.concurrency} on "
        f"{args.connections} connection(s), batching max_batch_size {args.max_batch_size}; "
        f"perf trace -s for {args.duration} s after {args.warmup} s\n\n"
        f"Load: {r.rps:.0f} req/s; the frontend served {out['requests']} requests using "
        f"{1e6 * out['cpu_s'] / n:.1f} CPU us per request while traced (tracing included)."
        f"\n\nSystem calls of the server process (every thread), top {args.top}:\n\n"
        + B.md_table(["syscall", "calls", "per request", "us per request in it"], rows)
    )


# The system calls of the frontend's loop: its spin (sched_yield and a zero-timeout
# epoll_pwait a turn), its sockets, eventfds and fine timer.
COUNTED = ("sched_yield", "epoll_pwait", "read", "write", "writev", "timerfd_settime")


def count_report(args: argparse.Namespace, tmp: str, out: dict[str, Any], r: Any) -> str:
    """Events per request from `perf stat -x,` (CSV: value, unit, event, ...)."""
    text = Path(f"{tmp}/stat.txt").read_text() if Path(f"{tmp}/stat.txt").exists() else ""
    rows = []
    n = max(1, out["requests"])
    for line in text.splitlines():
        f = line.split(",")
        if len(f) >= 3 and f[0].strip().replace(".", "", 1).isdigit():
            name = f[2].removeprefix("syscalls:sys_enter_")
            rows.append([f"`{name}`", f[0], B.fmt(float(f[0]) / n, 3)])
    if not rows:
        why = f"(rc {out.get('spy_rc')}): {out.get('spy_err')}"
        raise SystemExit(f"perf stat counted nothing {why}")
    return (
        f"profile_frontend: {B.now_utc()}; demo MLP, c={args.concurrency} on "
        f"{args.connections} connection(s), batching max_batch_size {args.max_batch_size}; "
        f"perf stat for {args.duration} s after {args.warmup} s\n\n"
        f"Load: {r.rps:.0f} req/s; the frontend served {out['requests']} requests using "
        f"{1e6 * out['cpu_s'] / n:.1f} CPU us per request while counted.\n\n"
        "Events of the server process (every thread):\n\n"
        + B.md_table(["event", "count", "per request"], rows)
    )


def run(args: argparse.Namespace) -> str:
    tool = "perf" if args.perf or args.syscalls or args.counts else "py-spy"
    spy = shutil.which(tool)
    if spy is None:
        hint = "apt-get install linux-perf" if tool == "perf" else "pip install py-spy"
        raise SystemExit(f"{tool} not found: {hint}")
    p = BB.plan_of(BB.build_parser().parse_args(["--quick"]))
    p.max_batch_size, p.batch_timeout_us = args.max_batch_size, args.batch_timeout_us
    knobs = E.ServerKnobs(1, 1, 1, [], BB.batching_lines(p))
    with tempfile.TemporaryDirectory(prefix="rsprofile-") as tmp:
        paths = inproc.build_models(tmp)
        inputs = inproc.make_inputs(Path(tmp), [1])
        tpl = E.templates(["demo"], inputs)["demo"]
        served = E.Served({"demo": paths["demo"]}, knobs, B.pin_plan("none"), tmp)
        served.start()
        try:
            out: dict[str, Any] = {}

            def record() -> None:
                time.sleep(args.warmup)
                s0, c0 = served.stats(), B.proc_sched_ns(served.pid)
                r = subprocess.run(
                    recorder(args, spy, served.pid, tmp),
                    capture_output=True, text=True, timeout=args.duration + 60,
                )  # fmt: skip
                s1, c1 = served.stats(), B.proc_sched_ns(served.pid)
                out["spy_rc"], out["spy_err"] = r.returncode, r.stderr[-2000:]
                m0, m1 = s0["models"]["demo"], s1["models"]["demo"]
                out["requests"] = int(m1["requests"]) - int(m0["requests"])
                out["cpu_s"] = (c1 - c0) / 1e9

            th = threading.Thread(target=record)
            th.start()
            r = LG.closed_loop(
                served.targets()["unix"],
                tpl,
                concurrency=args.concurrency,
                connections=args.connections,
                duration_s=args.warmup + args.duration + 1.0,
                warmup_s=0.0,
            )
            th.join()
        finally:
            served.stop()
        if args.counts:
            return count_report(args, tmp, out, r)
        if args.syscalls:
            return syscall_report(args, tmp, out, r)
        if args.perf:
            return perf_report(args, tmp, out, r)
        raw = Path(f"{tmp}/raw.txt").read_text() if Path(f"{tmp}/raw.txt").exists() else ""
    if not raw:
        raise SystemExit(f"py-spy recorded nothing (rc {out.get('spy_rc')}): {out.get('spy_err')}")
    own, incl, total = parse_raw(raw)
    n = max(1, out["requests"])
    head = (
        f"profile_frontend: {B.now_utc()}; demo MLP, batch-1 requests over unix, "
        f"c={args.concurrency} on {args.connections} connection(s), batching max_batch_size "
        f"{args.max_batch_size}, batch_timeout_us {args.batch_timeout_us}; py-spy "
        f"{args.rate}/s for {args.duration} s after {args.warmup} s; load average "
        f"{B.machine_info().get('loadavg', '?')}\n\n"
        f"Load: {r.rps:.0f} req/s over the whole run (p50 {r.p50_us:.0f} us); during the "
        f"recording the frontend served {out['requests']} requests using "
        f"{out['cpu_s']:.2f} CPU s: {1e6 * out['cpu_s'] / n:.1f} CPU us per request "
        "(py-spy's sampling included).\n"
    )
    return head + "\n" + render(own, incl, total, args.top)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python perf/profile_frontend.py", description=__doc__)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-timeout-us", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds recorded")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--on-cpu",
        action="store_true",
        help="py-spy: only samples taken while the loop's thread is on a CPU (by default "
        "idle samples count too, so waits inside the loop and socket calls look costly)",
    )
    ap.add_argument(
        "--perf",
        action="store_true",
        help="sample with linux-perf instead (cpu-clock, every shared object and the "
        "kernel): the interpreter's share of the frontend's CPU",
    )
    ap.add_argument(
        "--perf-sort",
        default="dso",
        choices=["dso", "dso,sym"],
        help="with --perf: shares by shared object (dso), or by function within each "
        "(dso,sym: which of the interpreter's own routines the compiled code leans on)",
    )
    ap.add_argument(
        "--syscalls",
        action="store_true",
        help="count the server's system calls with `perf trace -s` instead: calls and "
        "time in them per request (tracing slows the server and changes its rhythm: the "
        "spin's calls come out several times fewer than --counts finds)",
    )
    ap.add_argument(
        "--counts",
        action="store_true",
        help="count the loop's system calls and context switches with `perf stat` "
        "(counters, no tracing: the untraced rhythm), per request",
    )
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args(argv)
    text = run(args)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
