"""What perf/bench_batching.py reports from a run's results: per-point summaries
(medians over rounds), the issue 7 and 16 targets, sanity checks on the batcher and
the servers, and the Markdown section for perf/RESULTS.md. Reads the results dict
only, so the figures can be re-rendered from a --json file."""

from __future__ import annotations

from typing import Any

import bench_e2e as E
import benchlib as B

CONFIGS = ("off", "on")
# --compare-python: the same two configurations served by another interpreter too.
BASE = "@base"
TARGET_SPEEDUP = 5.0  # (a)
TARGET_FLOOR_FRACTION = 0.8  # (b), issue 16 (issue 7 asked 0.5)
TARGET_CONC = 32  # (a) and (b)
LATENCY_CONC = 1  # (c)


def shape_of(conc: int, conns: int | None) -> str:
    """`32`, or `32 (4x8)` for 4 connections with 8 requests in flight on each."""
    return str(conc) if not conns else f"{conc} ({conns}x{conc // conns})"


def _pin_text(res: dict[str, Any]) -> str:
    pin = res.get("pin") or {"mode": "none"}
    if pin["mode"] == "none":
        return "unpinned"
    return (
        f"pinned: client and frontend on CPUs {pin['client']}, worker and floor child on "
        f"{pin['worker']}"
    )


def floor_rows_per_s(floor: list[dict[str, Any]], batch: int, rnd: int | None) -> float:
    """Rows per second of the in-process call at `batch`: batch / per-call p50."""
    f = E.floor_of(floor, "demo", batch, rnd)
    return batch * 1e6 / f["p50_us"] if f.get("p50_us") else float("nan")


def pooled_batches(rs: list[dict[str, Any]]) -> tuple[float, int, int]:
    """Mean rows per batch over every run in `rs`, batches, padding rows."""
    batches = sum(r["batches"] for r in rs)
    rows = sum(r["batched_rows"] for r in rs)
    return (
        rows / batches if batches else float("nan"),
        batches,
        sum(r["padding_rows"] for r in rs),
    )


def summarize(res: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Medians over rounds per (config, shape) or (config, fraction)."""
    keyname = "shape" if mode == "closed" else "fraction"
    runs = [r for r in res["runs"] if r["mode"] == mode]
    keys: list[tuple[str, Any]] = []
    order: dict[Any, Any] = {}
    for r in runs:
        k = (r["config"], r[keyname])
        if k not in keys:
            keys.append(k)
            order[k] = (r["concurrency"], r[keyname]) if mode == "closed" else r[keyname]
    configs = res.get("configs", CONFIGS)
    keys.sort(key=lambda k: (configs.index(k[0]), order[k]))
    mbs = res["plan"]["max_batch_size"]
    out = []
    for cfg, key in keys:
        rs = [r for r in runs if (r["config"], r[keyname]) == (cfg, key)]
        med = B.median_dicts(rs)
        frac = [
            r["rps"] / E.floor_of(res["floor"], "demo", 1, r["round"])["calls_per_s"] for r in rs
        ]
        # The issue 16 ratio at every point, not only at the targets' c=32.
        frac_batch = [r["rps"] / floor_rows_per_s(res["floor"], mbs, r["round"]) for r in rs]
        mean_batch, batches, pad = pooled_batches(rs)
        out.append(
            {
                "config": cfg,
                keyname: key,
                "concurrency": rs[0]["concurrency"],
                "frontend_us_per_req": med.get("frontend_us_per_req"),
                "offered_rate": med.get("offered_rate"),
                "rps": med["rps"],
                "p50_us": med["p50_us"],
                "p99_us": med["p99_us"],
                "send_lag_p50_us": med.get("send_lag_p50_us"),
                "send_lag_p99_us": med.get("send_lag_p99_us"),
                "rps_fraction": B.median(frac),
                "rps_batch_fraction": B.median(frac_batch),
                "mean_batch": mean_batch,
                "batches": batches,
                "padding_rows": pad,
                "worker_us_per_call": med["worker_us_per_call"],
                "worker_busy_pct": med["worker_busy_pct"],
                "frontend_cpu_pct": med["frontend_cpu_pct"],
                "workers_cpu_pct": med["workers_cpu_pct"],
                "errors": sum(sum(r["errors"].values()) for r in rs),
                "lost": sum(r["lost"] for r in rs),
            }
        )
    return out


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's three targets: per round, then the median over rounds."""
    p = res["plan"]
    closed = [r for r in res["runs"] if r["mode"] == "closed"]

    def at(cfg: str, shape: str, rnd: int) -> dict[str, Any] | None:
        return next(
            (r for r in closed if (r["config"], r.get("shape"), r["round"]) == (cfg, shape, rnd)),
            None,
        )

    rounds = sorted({r["round"] for r in closed})
    shapes = [shape_of(n * k, n) for n, k in p.get("shapes", [])]
    a, b, c, d = [], [], [], []
    e: dict[str, list[float]] = {}
    b_base: dict[str, list[float]] = {}
    b2: dict[str, list[float]] = {sh: [] for sh in shapes}
    for rnd in rounds:
        on, off = at("on", str(TARGET_CONC), rnd), at("off", str(TARGET_CONC), rnd)
        if on and off and off["rps"] > 0:
            a.append(on["rps"] / off["rps"])
        floor32 = floor_rows_per_s(res["floor"], p["max_batch_size"], rnd)
        if on:
            b.append(on["rps"] / floor32)
        for sh in shapes:
            on_sh = at("on", sh, rnd)
            if on_sh:
                b2[sh].append(on_sh["rps"] / floor32)
        on1, off1 = at("on", str(LATENCY_CONC), rnd), at("off", str(LATENCY_CONC), rnd)
        if on1 and off1:
            c.append(on1["p50_us"] - off1["p50_us"])
        # Against the same configuration served by --compare-python (before/after).
        base1 = at("off" + BASE, str(LATENCY_CONC), rnd)
        if off1 and base1:
            d.append(off1["p50_us"] / base1["p50_us"])
        for sh in [str(TARGET_CONC), *shapes]:
            now, then = at("on", sh, rnd), at("on" + BASE, sh, rnd)
            if now and then and then["frontend_us_per_req"] > 0:
                e.setdefault(sh, []).append(
                    now["frontend_us_per_req"] / then["frontend_us_per_req"]
                )
            if then:
                b_base.setdefault(sh, []).append(then["rps"] / floor32)
    mbs, tmo = p["max_batch_size"], p["batch_timeout_us"]
    compared = [
        *(
            {
                "id": "base",
                "what": f"c={sh}, served by --compare-python: req/s batching on / "
                f"in-process batch-{mbs} rows/s",
                "value": B.median(xs),
                "target": "(before, for reference)",
                "pass": None,
                "unit": "",
            }
            for sh, xs in b_base.items()
        ),
        {
            "id": "d",
            "what": f"c={LATENCY_CONC}: p50 batching off / the same served by --compare-python",
            "value": B.median(d),
            "target": "<= 1.00 (no slower)",
            "pass": B.median(d) <= 1.0 if d else None,
            "unit": "",
        },
        *(
            {
                "id": "e",
                "what": f"c={sh} batching on: frontend CPU us/req / the same served by "
                "--compare-python",
                "value": B.median(xs),
                "target": "<= 0.50",
                "pass": B.median(xs) <= 0.5 if xs else None,
                "unit": "",
            }
            for sh, xs in e.items()
        ),
    ]
    out = [
        {
            "id": "a",
            "what": f"c={TARGET_CONC}: req/s batching on / off",
            "value": B.median(a),
            "target": f">= {TARGET_SPEEDUP:g}x",
            "pass": B.median(a) >= TARGET_SPEEDUP if a else None,
            "unit": "x",
        },
        {
            "id": "b",
            "what": f"c={TARGET_CONC}: req/s batching on / in-process batch-{mbs} rows/s",
            "value": B.median(b),
            "target": f">= {TARGET_FLOOR_FRACTION:.2f}",
            "pass": B.median(b) >= TARGET_FLOOR_FRACTION if b else None,
            "unit": "",
        },
        *(
            {
                "id": "b'",
                "what": f"c={sh}: req/s batching on / in-process batch-{mbs} rows/s",
                "value": B.median(xs),
                "target": f">= {TARGET_FLOOR_FRACTION:.2f}",
                "pass": B.median(xs) >= TARGET_FLOOR_FRACTION if xs else None,
                "unit": "",
            }
            for sh, xs in b2.items()
        ),
        {
            "id": "c",
            "what": f"c={LATENCY_CONC}: p50 batching on - p50 batching off",
            "value": B.median(c),
            "target": f"<= {tmo} us (batch_timeout_us)",
            "pass": B.median(c) <= tmo if c else None,
            "unit": " us",
        },
    ]
    return out + (compared if res.get("compare_python") else [])


def batcher_check(closed: list[dict[str, Any]]) -> list[str]:
    """Warnings when the batcher visibly does nothing (or the unbatched server batches)."""
    out = []
    for s in closed:
        if s["config"] == "on" and s["concurrency"] >= 8 and not s["batches"]:
            out.append(
                f"WARNING: batching on, c={s['shape']}: no batches formed "
                f"({s['errors']} error replies, {B.fmt(s['rps'], 0)} req/s)"
            )
        elif s["config"] == "on" and s["concurrency"] >= 8 and not s["mean_batch"] > 1.05:
            out.append(
                f"WARNING: batching on, c={s['shape']}: mean batch "
                f"{B.fmt(s['mean_batch'], 2)} rows over {s['batches']} batches: the batcher "
                "is not gathering requests"
            )
        if s["config"] == "off" and s["batches"]:
            out.append(
                f"WARNING: batching off, c={s['shape']}: the server still formed "
                f"{s['batches']} batches"
            )
    return out


def crash_check(runs: list[dict[str, Any]]) -> list[str]:
    """Points during which a worker was replaced (crashed or killed, then restarted)."""
    out = []
    for r in runs:
        if r.get("workers_replaced"):
            what = f"c={r['shape']}" if r["mode"] == "closed" else f"{r['fraction']:.0%}"
            out.append(
                f"WARNING: batching {r['config']}, round {r['round']}, {r['mode']} {what}: "
                f"{r['workers_replaced']} worker(s) replaced during the point (crash or hang; "
                f"see the server log); server errors {r['server_errors']}"
            )
    return out


def render(res: dict[str, Any]) -> str:
    p = res["plan"]
    mbs = p["max_batch_size"]
    fc = res["floor_child"]
    closed_conns = (
        "one pipelined connection"
        if p["connections"] == 1
        else "one connection per request in flight"
        if p["connections"] == 0
        else f"{p['connections']} connections"
    )
    on_cfg = res["on_config"]
    lines = [
        f"bench_batching: {res['date']}; demo MLP 784-512-512-10, batch-1 requests "
        f"({res['request_bytes']} B frames) over unix; {res['loop']}; {_pin_text(res)}; instances "
        f"{res['knobs']['off']['instances']}, intra {res['knobs']['off']['intra']}, inter "
        f"{res['knobs']['off']['inter']}; batching on = {on_cfg}; closed loop on "
        f"{closed_conns}, open loop on {p['open_connections']} connection(s)"
        f"{' (Poisson arrivals)' if p['poisson'] else ''}; {p['duration']} s per point after "
        f"{p['warmup']} s warm-up; median of {p['repeat']} rounds"
        + (
            f"; `@base` = the same configuration served by `{res['compare_python']}` "
            f"(another ringserve, from `{res.get('compare_ringserve') or '?'}`, alternating "
            "with this one in every round)"
            if res.get("compare_python")
            else ""
        ),
        "",
        f"In-process floor (TF child, intra {fc.get('intra')}, inter {fc.get('inter')}, "
        f"affinity {fc.get('affinity')}); rows/s = batch / p50:",
        "",
    ]
    frows = []
    for b in sorted({1, mbs}):
        f = E.floor_of(res["floor"], "demo", b, None)
        frows.append(
            [
                b,
                B.fmt(f["p50_us"]),
                B.fmt(f["p99_us"]),
                B.fmt(f["calls_per_s"], 0),
                B.fmt(floor_rows_per_s(res["floor"], b, None), 0),
            ]
        )
    lines.append(B.md_table(["batch", "p50 us", "p99 us", "calls/s", "rows/s"], frows))
    closed = summarize(res, "closed")
    lines += ["", "Closed loop:", ""]
    lines.append(
        B.md_table(
            [
                "batching",
                "concurrency",
                "req/s",
                "p50 us",
                "p99 us",
                "req/s / inproc b1",
                f"req/s / inproc b{res['plan']['max_batch_size']} rows/s",
                "mean batch",
                "batches",
                "padding rows",
                "worker us/call",
                "worker busy %",
                "frontend cpu %",
                "worker cpu %",
                "frontend CPU us/req",
                "errors",
                "lost",
            ],
            [
                [
                    s["config"],
                    s["shape"],
                    B.fmt(s["rps"], 0),
                    B.fmt(s["p50_us"]),
                    B.fmt(s["p99_us"]),
                    B.fmt(s["rps_fraction"], 2),
                    B.fmt(s["rps_batch_fraction"], 2),
                    B.fmt(s["mean_batch"], 2),
                    s["batches"],
                    s["padding_rows"],
                    B.fmt(s["worker_us_per_call"]),
                    B.fmt(s["worker_busy_pct"], 0),
                    B.fmt(s["frontend_cpu_pct"], 0),
                    B.fmt(s["workers_cpu_pct"], 0),
                    B.fmt(s["frontend_us_per_req"]),
                    s["errors"],
                    s["lost"],
                ]
                for s in closed
            ],
        )
    )
    opened = summarize(res, "open")
    if opened:
        lines += [
            "",
            "Open loop (fixed rates, a fraction of the same configuration's closed-loop "
            "maximum in the same round; latency from the scheduled send time):",
            "",
        ]
        lines.append(
            B.md_table(
                [
                    "batching",
                    "% of max",
                    "offered req/s",
                    "achieved req/s",
                    "p50 us",
                    "p99 us",
                    "send lag p50 us",
                    "send lag p99 us",
                    "mean batch",
                    "padding rows",
                    "worker busy %",
                    "frontend cpu %",
                    "errors",
                    "lost",
                ],
                [
                    [
                        s["config"],
                        f"{100 * s['fraction']:.0f}",
                        B.fmt(s["offered_rate"], 0),
                        B.fmt(s["rps"], 0),
                        B.fmt(s["p50_us"]),
                        B.fmt(s["p99_us"]),
                        B.fmt(s["send_lag_p50_us"]),
                        B.fmt(s["send_lag_p99_us"]),
                        B.fmt(s["mean_batch"], 2),
                        s["padding_rows"],
                        B.fmt(s["worker_busy_pct"], 0),
                        B.fmt(s["frontend_cpu_pct"], 0),
                        s["errors"],
                        s["lost"],
                    ]
                    for s in opened
                ],
            )
        )
    lines += ["", "Targets (median over rounds of the per-round figure):", ""]
    for t in targets(res):
        verdict = (
            ("n/a (point not measured)" if t["id"] != "base" else "-")
            if t["pass"] is None
            else ("PASS" if t["pass"] else "FAIL")
        )
        nd = 0 if t["unit"] == " us" else 2
        lines.append(
            f"- ({t['id']}) {t['what']} = {B.fmt(t['value'], nd)}{t['unit']}, target "
            f"{t['target']}: {verdict}"
        )
    warn = batcher_check(closed) + crash_check(res["runs"])
    lines += [""] + (warn or ["Batcher check: batches of more than one row formed at c >= 8."])
    lines += [
        "",
        "`mean batch`: rows per batch the batching server formed during the point (warm-up "
        "included), from the `stats` op's `batch_sizes` histogram; `padding rows`: rows added"
        " to reach allowed_batch_sizes. `req/s / inproc b1`: over the batch-1 floor's "
        "calls/s; `req/s / inproc b32 rows/s` (at max_batch_size 32): over the floor's rows/s"
        " at max_batch_size, the ratio of target (b) at every point. `worker us/call`: the "
        "worker's own time per TF call (one request, or one batch) from `stats`; `worker busy"
        " %`: that time over the wall time (100 = never idle); CPU %: percent of one core "
        "(schedstat, spinning included). Open loop: `achieved` counts successful replies over"
        " the time they took to arrive; `errors` are error replies (e.g. RESOURCE_EXHAUSTED "
        "past max_queue), `lost` requests never answered or never sent (the generator's in-"
        "flight cap).",
    ]
    return "\n".join(lines)
