"""The end of a run: a table on stdout, and --json / --csv files."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS: list[tuple[str, str, int]] = [
    # (header, key, decimals)
    ("transport", "transport", -1),
    ("conc", "concurrency", 0),
    ("rate", "offered_rate", 0),
    ("req/s", "rps", 0),
    ("rows/s", "rows_per_s", 0),
    ("p50 ms", "p50_us", 3),
    ("p90 ms", "p90_us", 3),
    ("p99 ms", "p99_us", 3),
    ("max ms", "max_us", 3),
    ("errors", "errors", -1),
    ("compute ms", "compute_us", 3),
    ("queue ms", "queue_us", 3),
    ("rows/call", "rows_per_call", 1),
    ("workers cpu %", "workers_cpu_pct", 0),
    ("ctx/s", "workers_ctx_per_s", 0),
    ("busy %", "busy_pct", 0),
    ("frontend cpu %", "frontend_cpu_pct", 0),
]

CSV_SKIP = {"workers", "client_cpus"}


def cell(row: dict[str, Any], key: str, nd: int) -> str:
    v = row.get(key)
    if key == "errors":
        return ",".join(f"{k}:{n}" for k, n in sorted((v or {}).items())) or "0"
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if nd < 0:
        return str(v)
    if key.endswith("_us"):
        v = v / 1000
    return f"{v:.{nd}f}"


def table(rows: Sequence[dict[str, Any]]) -> str:
    cols = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in rows)]
    if all(r.get("mode") == "closed" for r in rows):
        cols = [c for c in cols if c[1] != "offered_rate"]
    cells = [[h for h, _, _ in cols]] + [[cell(r, k, nd) for _, k, nd in cols] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    lines = ["  ".join(s.rjust(w) for s, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path, doc: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(doc, indent=2, default=_default) + "\n")


def _default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def write_csv(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """One line per point; dicts (errors by code) flattened as errors.CODE columns."""
    flat = [_flatten(r) for r in rows]
    keys: list[str] = []
    for r in flat:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in flat:
            w.writerow(r)


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in CSV_SKIP:
            continue
        if isinstance(v, dict):
            for kk, vv in v.items():
                out[f"{k}.{kk}"] = vv
        else:
            out[k] = v
    return out


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import importlib.metadata as md
    import os
    import platform
    import sys

    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass

    def ver(n: str) -> str:
        try:
            return md.version(n)
        except md.PackageNotFoundError:
            return "not installed"

    return {
        "uname": " ".join(platform.uname()),
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        **{n: ver(n) for n in ("ringserve", "uvloop", "msgpack", "numpy")},
    }
