"""Long fuzzing run: hostile frames against a real server for as long as asked.

    flock /tmp/ringserve-bench.lock python perf/fuzz.py --minutes 10

Builds the test models, starts a real server (the same settings as the test suite's
shared server), and runs tests/fuzzing.py's generator in rounds of fresh random
examples until the time is up. Every failure is shrunk by hypothesis and printed, and
its frames saved under --out as `.bin` files to add to tests/corpus/. At the end it
prints the examples run, frames sent, replies by code, and the server's RSS at start
and end. Exit code 1 if anything failed.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import fuzzing  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

from ringserve.client import Client  # noqa: E402
from ringserve.runtime.launch import ServerProcess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=1.0, help="how long to fuzz (default 1)")
    ap.add_argument("--round", type=int, default=200, help="examples per hypothesis round")
    ap.add_argument("--out", default="perf/fuzz-findings", help="where failing cases go")
    args = ap.parse_args()

    from conftest import models_toml
    from models import build_all

    max_frame = 8 * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="ringserve-fuzz-") as tmp:
        root = Path(tmp) / "models"
        root.mkdir()
        build_all(root)
        toml = models_toml(root, ["linear", "ints", "strings"])
        srv = ServerProcess(toml, f"ring_bytes = 4194304\nmax_frame_bytes = {max_frame}")
        srv.start()
        try:
            return fuzz(srv, max_frame, args)
        finally:
            code = srv.stop()
            print(f"server exit code {code}")


def fuzz(srv: ServerProcess, max_frame: int, args: argparse.Namespace) -> int:
    assert srv.proc is not None
    pid = srv.proc.pid
    healthy = Client(srv.unix_url, timeout=10.0)
    rss0 = fuzzing.rss(pid)
    stats: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    out = Path(args.out)
    end = time.monotonic() + args.minutes * 60

    @settings(
        max_examples=args.round,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=fuzzing.cases(max_frame))
    def one(case: list[fuzzing.Frame]) -> None:
        for url in (srv.unix_url, srv.tcp_url):
            res = fuzzing.run_case(url, case)
            stats["frames"] += len(case)
            for r in res.replies:
                stats["ok" if r.get("ok") else r["error"]["code"]] += 1
            if res.closed:
                stats["closed"] += 1
        stats["examples"] += 1
        healthy.health()

    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        try:
            one()
        except Exception:
            text = traceback.format_exc()
            failures.append(text)
            print(text, flush=True)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"failure-{len(failures)}.txt").write_text(text)
            healthy = Client(srv.unix_url, timeout=10.0)
        if srv.proc.poll() is not None:
            failures.append(f"server exited with {srv.proc.returncode}")
            break
        print(
            f"round {rounds}: {stats['examples']} examples, rss {fuzzing.rss(pid) >> 20} MiB",
            flush=True,
        )
    rss1 = fuzzing.rss(pid)
    print(
        f"minutes {args.minutes}, rounds {rounds}, examples {stats['examples']}, frames "
        f"{stats['frames']}, closed {stats['closed']}"
    )
    print("replies:", dict(sorted((k, v) for k, v in stats.items() if k.isupper() or k == "ok")))
    print(f"server rss: start {rss0 >> 20} MiB, end {rss1 >> 20} MiB")
    print(f"failures: {len(failures)}")
    healthy.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
