"""Shared pieces of the perf/ scripts: statistics, markdown, machine facts, CPU placement
and /proc sampling (their shared options and the RESULTS.md writer: benchcli.py). Never
imports TensorFlow.

The scripts import this as a sibling module (`python perf/<script>.py` puts perf/ on
sys.path); from elsewhere, add perf/ to sys.path first.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import importlib.metadata
import os
import platform
import shlex
import signal
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The load generator's own helpers, re-exported for the scripts.
from ringserve.bench.engine import sched_getcpu as sched_getcpu
from ringserve.bench.engine import set_timer_slack as set_timer_slack
from ringserve.bench.result import percentiles as percentiles

PERF_DIR = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")

# ---- statistics ------------------------------------------------------------------------


def median(xs: Iterable[float | None]) -> float:
    """Median of the finite values; NaN when there are none."""
    vals = [float(x) for x in xs if x is not None and np.isfinite(x)]
    return float(statistics.median(vals)) if vals else float("nan")


def median_dicts(ds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric key across dicts; non-numeric keys from the first."""
    if not ds:
        return {}
    out: dict[str, Any] = {}
    for k, v in ds[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = median(d.get(k) for d in ds)
        else:
            out[k] = v
    return out


# ---- formatting ------------------------------------------------------------------------


def fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if not np.isfinite(x):
            return "-"
        return f"{x:.{nd}f}"
    return str(x)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def cpu_hist(c: Counter[int] | dict[int, int] | None) -> str:
    """'0' when one CPU was seen, else '0:70% 1:30%'."""
    if not c:
        return "-"
    total = sum(c.values())
    if len(c) == 1:
        return str(next(iter(c)))
    return " ".join(f"{k}:{100 * v / total:.0f}%" for k, v in sorted(c.items()))


# ---- the machine -----------------------------------------------------------------------


def _version(*names: str) -> str:
    for n in names:
        try:
            return importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    u = platform.uname()
    return {
        "uname": f"{u.system} {u.node} {u.release} {u.version} {u.machine}",
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "python": sys.version.split()[0],
        "tensorflow": _version("tensorflow-cpu", "tensorflow"),
        "uvloop": _version("uvloop"),
        "msgpack": _version("msgpack"),
        "numpy": _version("numpy"),
        "posix_ipc": _version("posix-ipc", "posix_ipc"),
        "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }


def machine_lines(info: dict[str, Any]) -> list[str]:
    return [
        f"- uname: `{info['uname']}`",
        f"- CPU: {info['cpu_model'] or '?'}; nproc {info['nproc']}; "
        f"load average at start {info['loadavg']}",
        f"- python {info['python']}, tensorflow {info['tensorflow']}, uvloop {info['uvloop']}, "
        f"msgpack {info['msgpack']}, numpy {info['numpy']}, posix_ipc {info['posix_ipc']}",
    ]


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [_rel(sys.argv[0]), *sys.argv[1:]])


def _rel(p: str) -> str:
    try:
        return str(Path(p).resolve().relative_to(Path.cwd()))
    except ValueError:
        return p


def now_utc() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---- CPU placement ---------------------------------------------------------------------

PIN_MODES = ("none", "same", "split")


@dataclass(frozen=True)
class PinPlan:
    """Where each side runs. None = unpinned (all CPUs this process may use).

    same: every process on one CPU. split: the worker (or the second process of a
    two-process test) on another CPU than the client and the frontend.
    """

    mode: str
    client: frozenset[int] | None
    frontend: frozenset[int] | None
    worker: frozenset[int] | None


def pin_plan(mode: str) -> PinPlan:
    cpus = sorted(os.sched_getaffinity(0)) if _ALL_CPUS is None else sorted(_ALL_CPUS)
    if mode == "none":
        return PinPlan("none", None, None, None)
    a = frozenset({cpus[0]})
    if mode == "same":
        return PinPlan("same", a, a, a)
    if mode == "split":
        if len(cpus) < 2:
            raise SystemExit("--pin split needs at least two CPUs")
        return PinPlan("split", a, a, frozenset({cpus[1]}))
    raise SystemExit(f"--pin: expected one of {PIN_MODES}, received {mode!r}")


def parse_pins(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    for m in modes:
        pin_plan(m)
    return modes


_ALL_CPUS: frozenset[int] | None = None


def all_cpus() -> frozenset[int]:
    """The CPUs this process could use when it started (before any pinning)."""
    global _ALL_CPUS
    if _ALL_CPUS is None:
        _ALL_CPUS = frozenset(os.sched_getaffinity(0))
    return _ALL_CPUS


all_cpus()


def set_affinity(cpus: Iterable[int] | None, pid: int = 0) -> None:
    os.sched_setaffinity(pid, sorted(cpus) if cpus is not None else sorted(all_cpus()))


def cpus_str(cpus: Iterable[int] | None) -> str:
    return "all" if cpus is None else ",".join(str(c) for c in sorted(cpus))


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Child processes of the benchmarks: be killed when the parent goes."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# ---- /proc -----------------------------------------------------------------------------


def _stat_fields(path: str) -> list[str] | None:
    try:
        with open(path) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc/<pid>/stat."""
    f = _stat_fields(f"/proc/{pid}/stat")
    return (int(f[11]) + int(f[12])) / TICK if f else 0.0


def proc_sched_ns(pid: int) -> int:
    """Nanoseconds on CPU summed over the process's threads (schedstat; finer than ticks)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        pass
    return total


def proc_ctx_switches(pid: int) -> int:
    """Voluntary + involuntary context switches summed over threads (wake-ups, roughly)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt", "nonvoluntary_ctxt")):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            pass
    return total


def thread_last_cpus(pid: int) -> dict[int, int]:
    """{tid: CPU it last ran on} from /proc/<pid>/task/*/stat field 39."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        f = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if f and len(f) > 36:
            out[int(tid)] = int(f[36])
    return out


def running_cpus(pid: int) -> list[int]:
    """CPUs of the process's threads that are running right now (state R)."""
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        f = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if f and len(f) > 36 and f[0] == "R":
            out.append(int(f[36]))
    return out


def children(pid: int) -> list[int]:
    """Direct children of `pid`."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        f = _stat_fields(f"/proc/{e}/stat")
        if f and len(f) > 1 and int(f[1]) == pid:
            out.append(int(e))
    return out


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def proc_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(c.decode(errors="replace") for c in cmd if c)[:80]
    except OSError:
        return "?"


@dataclass
class CpuSnapshot:
    t_ns: int
    cpu_s: dict[int, float]
    sched_ns: dict[int, int]
    ctx: dict[int, int]


def cpu_snapshot(pids: Iterable[int]) -> CpuSnapshot:
    import time

    ps = list(pids)
    return CpuSnapshot(
        time.perf_counter_ns(),
        {p: proc_cpu_seconds(p) for p in ps},
        {p: proc_sched_ns(p) for p in ps},
        {p: proc_ctx_switches(p) for p in ps},
    )


def cpu_usage(a: CpuSnapshot, b: CpuSnapshot) -> dict[int, dict[str, float]]:
    """Per pid: percent of one core (stat ticks and schedstat) and wake-ups per second."""
    wall = (b.t_ns - a.t_ns) / 1e9
    out = {}
    for p in a.cpu_s:
        if p not in b.cpu_s:
            continue
        out[p] = {
            "cpu_pct": 100.0 * (b.cpu_s[p] - a.cpu_s[p]) / wall,
            "cpu_pct_sched": 100.0 * (b.sched_ns[p] - a.sched_ns[p]) / 1e9 / wall,
            "ctx_per_s": (b.ctx[p] - a.ctx[p]) / wall,
            "wall_s": wall,
        }
    return out


# ---- safety ----------------------------------------------------------------------------


class Watchdog(Exception):
    pass


@contextmanager
def watchdog(seconds: float, what: str) -> Iterator[None]:
    """Interrupt a blocking wait in the main thread after `seconds` (SIGALRM)."""

    def fire(_sig: int, _frm: Any) -> None:
        raise Watchdog(f"{what}: no progress within {seconds:.0f}s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def tail(path: str | Path, n: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
