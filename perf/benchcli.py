"""The command line every perf/ script shares: its common options and the publish step
(stdout, --json, and the script's own section of perf/RESULTS.md between its markers).

Each script adds its own options beside these; one definition here keeps the flag names,
the --quick counts and the section format the same in all of them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import benchlib as B
import numpy as np

RESULTS_FILE = B.PERF_DIR / "RESULTS.md"
RESULTS_TITLE = "# ringserve performance results\n"

# --quick: the smoke-test counts, for whichever of these options a script has.
QUICK = {"duration": 0.3, "warmup": 0.1, "repeat": 1, "floor_calls": 200}

# ---- options ---------------------------------------------------------------------------


def add_round_args(
    p: argparse.ArgumentParser,
    duration: float,
    warmup: float,
    repeat: int = 3,
    floor_calls: int | None = None,
    floor_help: str = "floor calls per round, batch 1",
) -> None:
    """How long each point runs, how many rounds, and (when the script has a floor) its calls."""
    p.add_argument(
        "--duration", type=float, default=duration, help=f"seconds per point (default {duration:g})"
    )
    p.add_argument("--warmup", type=float, default=warmup, help="warm-up seconds per point")
    p.add_argument("--repeat", type=int, default=repeat, help=f"rounds; medians (default {repeat})")
    if floor_calls is not None:
        p.add_argument("--floor-calls", type=int, default=floor_calls, help=floor_help)


def add_connections_arg(p: argparse.ArgumentParser) -> None:
    """Closed loop: how many connections share the requests in flight."""
    p.add_argument(
        "--connections",
        nargs="?",
        type=int,
        const=0,
        default=1,
        metavar="N",
        help="closed loop: connections sharing the requests in flight (default 1: all "
        "pipelined on one); bare --connections: one connection per request in flight",
    )


def add_server_toml_arg(p: argparse.ArgumentParser) -> None:
    """Extra [server] lines for the servers a benchmark starts."""
    p.add_argument(
        "--server-toml",
        action="append",
        default=[],
        metavar="LINE",
        help='extra [server] line for the servers started, e.g. "max_spin_us = 0" (repeatable)',
    )


def add_quick_json_args(p: argparse.ArgumentParser) -> None:
    """A smoke-test run and the JSON of all results (scripts that write no section)."""
    p.add_argument("--quick", action="store_true", help="tiny counts for a smoke test")
    p.add_argument("--json", default=None, metavar="FILE", help="write all results as JSON")


def add_output_args(p: argparse.ArgumentParser) -> None:
    """The options every benchmark shares: smoke-test counts and where results go."""
    add_quick_json_args(p)
    p.add_argument(
        "--write-results",
        action="store_true",
        help="replace (or append) this benchmark's section in --results-file",
    )
    p.add_argument("--results-file", default=str(RESULTS_FILE), help="default perf/RESULTS.md")


def apply_quick(args: argparse.Namespace, **counts: Any) -> None:
    """With --quick, set the smoke-test counts (QUICK, then `counts`) on the options present."""
    if args.quick:
        for k, v in {**QUICK, **counts}.items():
            if hasattr(args, k):
                setattr(args, k, v)


# ---- publishing ------------------------------------------------------------------------


def results_body(res: dict[str, Any], table: str) -> str:
    """A section's body: the machine, date and command of the run, then its table."""
    return "\n".join(
        [
            *B.machine_lines(res["machine"]),
            f"- date: {res['date']}",
            f"- command: `{res['command']}`",
            "",
            table,
        ]
    )


def write_results(path: str | Path, key: str, title: str, body: str) -> Path:
    """Replace the section `key` of the results file (between its markers), or append it."""
    p = Path(path)
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    section = f"{begin}\n## {title}\n\n{body.strip()}\n{end}\n"
    text = p.read_text() if p.exists() else RESULTS_TITLE
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pat.search(text):
        text = pat.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    p.write_text(text)
    return p


def write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    if isinstance(o, Counter):
        return dict(o)
    return str(o)


def publish(args: argparse.Namespace, key: str, title: str, body: str, bad: bool) -> int:
    """Write the section when asked and the run was clean; the exit code for main()."""
    if args.write_results and bad:
        sys.stderr.write("not writing results: the run had failures (see above)\n")
    elif args.write_results:
        path = write_results(args.results_file, key, title, body)
        sys.stderr.write(f"wrote section {key} of {path}\n")
    return 1 if bad else 0


def finish(
    args: argparse.Namespace,
    res: dict[str, Any],
    text: str,
    key: str,
    title: str,
    bad: bool,
    body: str | None = None,
) -> int:
    """The end of a run: the text on stdout, `res` as --json, the section when asked."""
    print(text)
    write_json(args.json, res)
    return publish(args, key, title, results_body(res, text) if body is None else body, bad)
