"""What perf/bench_ipc.py reports from a run's results: the tables of each section and
the Markdown section for perf/RESULTS.md. Reads the results dict only, so a run can be
re-rendered from its --json file."""

from __future__ import annotations

from collections import Counter
from typing import Any

import benchlib as B

KiB, MiB = 1024, 1024 * 1024
BARE_KIND = "least Python ring, 64 B (BareRing: busy spin)"


def tf_ref(res: dict[str, Any], pin: str, model: str = "demo") -> float:
    return B.median(f["p50_us"] for f in res["floor"] if f["pin"] == pin and f["model"] == model)


def spin_floor(res: dict[str, Any], pin: str) -> float:
    """The fastest wake-up round trip of (a) at `pin`: a shared-flag spin on two CPUs;
    on one CPU, where a spinning peer holds the CPU, whatever was fastest there."""
    meds = [
        B.median(r["p50_us"] for r in rs)
        for (kind, p), rs in _group(res["raw"], "mechanism", "pin").items()
        if p == pin and kind != BARE_KIND
    ]
    return min(meds) if meds else float("nan")


def _merge_cpus(rows: list[dict[str, Any]], key: str) -> str:
    c: Counter[int] = Counter()
    for r in rows:
        for k, v in r[key].items():
            c[int(k)] += v
    return B.cpu_hist(c)


def _group(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def size_text(n: int) -> str:
    if n >= MiB:
        return f"{n // MiB} MiB"
    if n >= KiB:
        return f"{n // KiB} KiB"
    return f"{n} B"


def render(res: dict[str, Any]) -> str:
    a = res["args"]
    L = [
        f"bench_ipc: {res['date']}; {res['loop']}; pins {a['pin']}; median of "
        f"{a['repeat']} rounds; 'x TF' = value / in-process TF p50 of the demo MLP at batch 1 "
        "(same placement, same run)",
        "",
    ]
    if res["floor"]:
        rows = []
        for (pin, m), rs in _group(res["floor"], "pin", "model").items():
            med = B.median_dicts(rs)
            rows.append(
                [
                    pin,
                    m,
                    B.fmt(med["p50_us"]),
                    B.fmt(med["p99_us"]),
                    B.fmt(med["calls_per_s"], 0),
                    _merge_cpus(rs, "cpus"),
                ]
            )
        L += [
            "In-process TF call (`signatures['serving_default'](x=tf.constant(x))`, batch 1):",
            "",
            B.md_table(["pin", "model", "p50 us", "p99 us", "calls/s", "cpus"], rows),
            "",
        ]
    if res["raw"]:
        rows = []
        for (kind, pin), rs in _group(res["raw"], "mechanism", "pin").items():
            med = B.median_dicts(rs)
            rows.append(
                [
                    kind,
                    pin,
                    B.fmt(med["p50_us"], 2),
                    B.fmt(med["p50_us"] / spin_floor(res, pin), 1),
                    B.fmt(med["p90_us"], 2),
                    B.fmt(med["p99_us"], 2),
                    _merge_cpus(rs, "cpus_parent"),
                    _merge_cpus(rs, "cpus_child"),
                    B.fmt(med["p50_us"] / tf_ref(res, pin), 3),
                ]
            )
        L += [
            "(a) Waking another process, round trip (x floor = p50 / the fastest of these "
            "at the same placement, the least Python ring aside):",
            "",
            B.md_table(
                [
                    "mechanism",
                    "pin",
                    "p50 us",
                    "x floor",
                    "p90 us",
                    "p99 us",
                    "cpus parent",
                    "cpus child",
                    "p50 x TF",
                ],
                rows,
            ),
            "",
        ]
    if res["memcpy"]:
        rows = []
        for (size,), rs in _group(res["memcpy"], "size").items():
            heap = B.median(r["gbs"] for r in rs if not r["shm"])
            shm = B.median(r["gbs"] for r in rs if r["shm"])
            rows.append([size_text(size), B.fmt(heap, 1), B.fmt(shm, 1)])
        L += [
            "(a) memcpy in one process (np.copyto into an existing buffer), GB/s:",
            "",
            B.md_table(["size", "heap -> heap", "heap -> shared memory"], rows),
            "",
        ]
    if res["ring"]:
        copy16 = (
            B.median(r["gbs"] for r in res["memcpy"] if r["size"] == 16 * MiB and not r["shm"])
            if res["memcpy"]
            else float("nan")
        )
        rows = []
        for (size, api, pin), rs in _group(res["ring"], "size", "api", "pin").items():
            med = B.median_dicts(rs)
            frac = med["gbs_payload"] / copy16 if size == 16 * MiB else float("nan")
            rows.append(
                [
                    size_text(size) + (" (ring only)" if api != a["ring_api"] else ""),
                    pin,
                    B.fmt(med["p50_us"], 1),
                    B.fmt(med["p50_us"] / spin_floor(res, pin), 1) if size <= 64 else "-",
                    B.fmt(med["p90_us"], 1),
                    B.fmt(med["p99_us"], 1),
                    B.fmt(med["gbs_payload"], 2),
                    B.fmt(frac, 2),
                    f"{sum(r['parent_spins_hit'] for r in rs)}/"
                    f"{sum(r['parent_sleeps'] for r in rs)}",
                    f"{sum(r['child_spins_hit'] or 0 for r in rs)}/"
                    f"{sum(r['child_sleeps'] or 0 for r in rs)}",
                    _merge_cpus(rs, "cpus_parent"),
                    _merge_cpus(rs, "cpus_child"),
                    B.fmt(med["p50_us"] / tf_ref(res, pin), 3),
                ]
            )
        L += [
            f"(b) Ring round trip ({a['ring_api']} API, {size_text(a['ring_bytes'])} rings, "
            f"{res.get('wake_scheme', '?')}, max_spin_us {a['max_spin_us']}); "
            "GB/s = 2 x size / p50; "
            "16 MiB fraction vs memcpy heap->heap at 16 MiB (3 copies per trip: ideal 0.67); "
            "x floor = p50 / the fastest wake-up round trip of (a) at the same placement "
            "(a shared-flag spin, except on one CPU); (ring only) = the ring without "
            "the record layer (msgpack head, tensor table):",
            "",
            B.md_table(
                [
                    "size",
                    "pin",
                    "p50 us",
                    "x floor",
                    "p90 us",
                    "p99 us",
                    "GB/s",
                    "x memcpy",
                    "parent spin hits/sleeps",
                    "child spin hits/sleeps",
                    "cpus parent",
                    "cpus child",
                    "p50 x TF",
                ],
                rows,
            ),
            "",
        ]
    if res.get("stream"):
        copy16 = (
            B.median(r["gbs"] for r in res["memcpy"] if r["size"] == 16 * MiB and not r["shm"])
            if res["memcpy"]
            else float("nan")
        )
        rows = []
        for (size, pin), rs in _group(res["stream"], "size", "pin").items():
            gbs = B.median(r["gbs"] for r in rs)
            rows.append(
                [
                    size_text(size),
                    pin,
                    str(rs[0]["records"]),
                    B.fmt(gbs, 2),
                    B.fmt(gbs / copy16, 2),
                    _merge_cpus(rs, "cpus_child"),
                ]
            )
        L += [
            "(b) One-way stream through one ring (records API): the producer writes each "
            "record as soon as there is room, the consumer copies each out into its own "
            "buffer; GB/s = payload bytes / steady-state time; x memcpy = over memcpy "
            "heap->heap at 16 MiB (two copies per record, in parallel when the two sides "
            "have a CPU each):",
            "",
            B.md_table(
                ["size", "pin", "records", "GB/s", "x memcpy", "cpus consumer"],
                rows,
            ),
            "",
        ]
    if res["echo"]:
        rows = []
        for (t, size, pin), rs in _group(res["echo"], "transport", "payload", "pin").items():
            med = B.median_dicts(rs)
            rows.append(
                [
                    t,
                    size_text(size),
                    pin,
                    B.fmt(med["p50_us"], 1),
                    B.fmt(med["p90_us"], 1),
                    B.fmt(med["p99_us"], 1),
                    B.fmt(med["rps"], 0),
                    _merge_cpus(rs, "client_cpus"),
                    _merge_cpus(rs, "cpus_server"),
                    B.fmt(med["p50_us"] / tf_ref(res, pin), 3),
                ]
            )
        L += [
            "(c) uvloop msgpack echo server, concurrency 1 (server: the second CPU when split):",
            "",
            B.md_table(
                [
                    "transport",
                    "payload",
                    "pin",
                    "p50 us",
                    "p90 us",
                    "p99 us",
                    "req/s",
                    "cpus client",
                    "cpus server",
                    "p50 x TF",
                ],
                rows,
            ),
            "",
        ]
    if res["e2e"]:
        rows = []
        for (m, t, pin), rs in _group(res["e2e"], "model", "transport", "pin").items():
            over = [r["served"]["p50_us"] - r["inproc"]["p50_us"] for r in rs]
            echo = [r["echo"]["p50_us"] for r in rs]
            net = [o - e for o, e in zip(over, echo, strict=True)]
            own = [r["served"]["p50_us"] - r["inproc_worker"]["p50_us"] for r in rs]
            n = B.median(net)
            rows.append(
                [
                    m,
                    t,
                    pin,
                    B.fmt(B.median(r["inproc"]["p50_us"] for r in rs)),
                    B.fmt(B.median(r["served"]["p50_us"] for r in rs)),
                    B.fmt(B.median(over)),
                    f"{B.fmt(B.median(echo))} ({size_text(rs[0]['echo']['payload'])})",
                    B.fmt(n),
                    "yes" if n <= 50 else "no",
                    B.fmt(B.median(r["served"]["p50_us"] / r["inproc"]["p50_us"] for r in rs), 2),
                    B.fmt(B.median(r["inproc_idle"]["p50_us"] for r in rs)),
                    f"{B.fmt(B.median(r['inproc_worker']['p50_us'] for r in rs))} "
                    f"({rs[0]['inproc_worker'].get('call_path', '?')})",
                    B.fmt(B.median(own)),
                ]
            )
        L += [
            "(d) Served batch 1 at concurrency 1 vs the in-process call (per-round "
            "differences, medians):",
            "",
            B.md_table(
                [
                    "model",
                    "transport",
                    "pin",
                    "inproc p50 us",
                    "served p50 us",
                    "overhead us",
                    "echo_rtt us",
                    "overhead - echo_rtt us",
                    "<= 50 us",
                    "served / inproc",
                    "inproc p50 after 1 ms idle us",
                    "worker's call in process p50 us",
                    "served - worker's call us",
                ],
                rows,
            ),
            "",
            "The target compares with the public signature call (`inproc`), what a user "
            "runs in process. The worker makes the same call through the signature's flat "
            "form, verified against the public call at load (docs/architecture.md), which "
            "is faster; the last two columns time that call in the same child, so the "
            "serving path's own cost is `served - worker's call`.",
            "",
        ]
    if res["cpu"]:
        rows = []
        for c in res["cpu"]:
            rows.append(
                [
                    c["pin"],
                    c["phase"],
                    B.fmt(c.get("rps"), 0),
                    B.fmt(c["frontend_pct"], 1),
                    B.fmt(c["workers_pct"], 1),
                    B.fmt(c["client_pct"], 1),
                    B.fmt(c["frontend_pct"] + c["workers_pct"], 1),
                    B.fmt(c.get("server_cpu_us_per_req"), 0),
                    B.fmt(c["frontend_ctx_per_s"], 0),
                    B.fmt(c["workers_ctx_per_s"], 0),
                    B.fmt(c["wall_s"], 1),
                ]
            )
        L += [
            "Server CPU (utime+stime from /proc/<pid>/stat, percent of one core; workers "
            "summed; client = this process):",
            "",
            B.md_table(
                [
                    "pin",
                    "phase",
                    "req/s",
                    "frontend %",
                    "workers %",
                    "client %",
                    "server total %",
                    "server CPU us/req",
                    "frontend wake-ups/s",
                    "worker wake-ups/s",
                    "seconds",
                ],
                rows,
            ),
            "",
        ]
    if res["workers"]:
        ws = "; ".join(
            f"{w.get('model')} pid {w.get('pid')} affinity {w.get('cpu_affinity')}"
            for w in res["workers"]
        )
        L.append(f"Workers: {ws}. Server exit codes: {res['server_exit_codes']}.")
    return "\n".join(L).rstrip() + "\n"
