"""`ringserve top ADDRESS`: the live figures of a running server, every second.

Reads the `stats` op (the same figures /metrics exposes, docs/metrics.md) over the
server's msgpack socket and shows what changed between two readings: per model
version requests/s, errors/s, p50/p99 latency from the request-duration histogram,
queue depth, requests in flight, mean rows per batch; per worker position CPU %,
busy %, context switches/s, threads, restarts; the frontend's own CPU and bytes; GPU
utilisation where NVML reports it. On a terminal it redraws in place; otherwise it
prints one block per interval (`--iterations`, `--once`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ringserve.client import Client, RingserveError
from ringserve.frontend.histogram import quantile

Stats = dict[str, Any]
CLEAR = "\x1b[H\x1b[2J"


def _delta_hist(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    if a is None or a["le"] != b["le"]:
        return b
    return {
        "le": b["le"],
        "counts": [y - x for x, y in zip(a["counts"], b["counts"], strict=True)],
        "sum": b["sum"] - a["sum"],
    }


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


def model_rows(prev: Stats, cur: Stats, dt: float) -> list[list[str]]:
    rows = []
    for model, ms in sorted(cur.get("models", {}).items()):
        pvs = prev.get("models", {}).get(model, {}).get("versions", {})
        for version, vs in sorted(ms.get("versions", {}).items(), key=lambda kv: int(kv[0])):
            pv = pvs.get(version)
            done = sum(vs["requests"].values()) - (sum(pv["requests"].values()) if pv else 0)
            ok = vs["requests"].get("OK", 0) - (pv["requests"].get("OK", 0) if pv else 0)
            lat = _delta_hist(pv and pv["request_duration"], vs["request_duration"])
            batch = _delta_hist(pv and pv["batch_size"], vs["batch_size"])
            nb = sum(batch["counts"])
            rows.append(
                [
                    model,
                    version,
                    f"{done / dt:.1f}",
                    f"{(done - ok) / dt:.1f}",
                    _ms(quantile(0.5, lat)),
                    _ms(quantile(0.99, lat)),
                    str(vs["queue_depth"]),
                    str(vs["inflight"]),
                    f"{batch['sum'] / nb:.1f}" if nb else "-",
                ]
            )
    return rows


def worker_rows(prev: Stats, cur: Stats, dt: float) -> list[list[str]]:
    before = {(p["model"], p["version"], p["worker"]): p for p in prev.get("positions", [])}
    rows = []
    for p in cur.get("positions", []):
        key = (p["model"], p["version"], p["worker"])
        q = before.get(key, p)

        def rate(k: str, p: dict[str, Any] = p, q: dict[str, Any] = q) -> float:
            return max(0.0, (p[k] - q[k]) / dt)

        cpu = rate("cpu_user_seconds") + rate("cpu_system_seconds")
        rows.append(
            [
                f"{p['model']}/{p['version']}/w{p['worker']}",
                ",".join(map(str, p["pids"])) or "-",
                p["device"],
                "up" if p["up"] else "DOWN",
                f"{cpu * 100:.0f}",
                f"{rate('busy_seconds') * 100:.0f}",
                f"{rate('voluntary_ctx_switches'):.0f}",
                f"{rate('involuntary_ctx_switches'):.0f}",
                str(p["threads"]),
                str(p["restarts"]),
            ]
        )
    return rows


def render(address: str, prev: Stats, cur: Stats, dt: float, when: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
    server = cur.get("server", {})
    out = [f"ringserve top  {address}  pid {server.get('pid', '?')}  {stamp}  over {dt:.2f}s"]
    out.append("")
    out += _table(
        ["MODEL", "VERSION", "REQ/S", "ERR/S", "P50_MS", "P99_MS", "QUEUE", "INFLIGHT", "BATCH"],
        model_rows(prev, cur, dt),
    )
    out.append("")
    out += _table(
        [
            "WORKER",
            "PID",
            "DEVICE",
            "STATE",
            "CPU%",
            "BUSY%",
            "VCSW/S",
            "ICSW/S",
            "THREADS",
            "RESTARTS",
        ],
        worker_rows(prev, cur, dt),
    )
    fe, pfe = cur.get("frontend"), prev.get("frontend")
    if fe and pfe:
        cpu = (
            fe["cpu_user_seconds"]
            + fe["cpu_system_seconds"]
            - pfe["cpu_user_seconds"]
            - pfe["cpu_system_seconds"]
        ) / dt
        csw = (
            fe["voluntary_ctx_switches"]
            + fe["involuntary_ctx_switches"]
            - pfe["voluntary_ctx_switches"]
            - pfe["involuntary_ctx_switches"]
        ) / dt
        rx = (fe["received_bytes"] - pfe["received_bytes"]) / dt
        tx = (fe["sent_bytes"] - pfe["sent_bytes"]) / dt
        conns = sum(fe["connections"].values())
        out.append("")
        out.append(
            f"frontend  CPU% {cpu * 100:.0f}  CSW/S {csw:.0f}  connections {conns}  "
            f"in {rx / 1e6:.2f} MB/s  out {tx / 1e6:.2f} MB/s"
        )
    for g in cur.get("gpus", []):
        out.append(
            f"gpu {g['index']}  util {g['utilization'] * 100:.0f}%  memory "
            f"{g['memory_used_bytes'] / 2**20:.0f} / {g['memory_total_bytes'] / 2**20:.0f} MiB"
        )
    return "\n".join(out) + "\n"


def run(
    address: str,
    *,
    interval: float = 1.0,
    iterations: int | None = None,
    token: str | None = None,
    out: TextIO = sys.stdout,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Print `iterations` views (forever when None), each over `interval` seconds."""
    tty = out.isatty()
    with Client(address, timeout=10.0, token=token) as c:
        prev, t_prev = c.stats(), clock()
        n = 0
        while iterations is None or n < iterations:
            time.sleep(max(0.0, t_prev + interval - clock()))
            cur, t = c.stats(), clock()
            text = render(address, prev, cur, max(t - t_prev, 1e-6), time.time())
            out.write(CLEAR + text if tty else text + "\n")
            out.flush()
            prev, t_prev = cur, t
            n += 1
    return 0


def main(args: Any) -> int:
    address = args.address
    if address.startswith("/"):
        address = f"unix://{address}"
    if args.interval <= 0 or (args.iterations is not None and args.iterations < 1):
        print("ringserve top: --interval must be > 0 and --iterations >= 1", file=sys.stderr)
        return 2
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    try:
        return run(
            address,
            interval=args.interval,
            iterations=1 if args.once else args.iterations,
            token=token,
        )
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError, RingserveError) as exc:
        print(f"ringserve top: cannot reach {address}: {exc}", file=sys.stderr)
        return 1
