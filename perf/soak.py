"""Soak: mixed valid, invalid and hostile traffic against a real server for a long time,
while workers are killed (-9), the config is reloaded (SIGHUP) and clients reconnect.

    python perf/soak.py                       # 30 minutes
    python perf/soak.py --minutes 0.5         # the short version CI runs (tests/test_soak.py)
    python perf/soak.py --write-results       # the acceptance table into perf/RESULTS.md

Traffic (all on loopback, bounded: a fixed number of threads, each one request or one
connection at a time, plus short pauses):
- valid: pipelined `infer` of 1-8 rows on `linear` (2 workers, batching) and `demo`
  (the MLP, 1 worker), over Unix and TCP, reconnecting every few dozen requests; every
  output is compared with the in-process TensorFlow answer for the same rows
  (computed once, in a child process, for a fixed bank of inputs);
- shared memory: inputs and outputs in a registered region, and now and then a second
  region truncated to 0 under the server before an `infer` that reads it;
- invalid: unknown model, wrong dtype, wrong shape, missing input, rank 100, a dim of
  2**40, a body that is not a map: each must be answered with an error;
- hostile, on raw sockets: a length header beyond max_frame_bytes, random bytes as a
  body, a frame sent slowly in two halves, 50 requests sent by a client that closes
  without reading, connect-and-close;
- chaos: kill -9 of a random worker every `--kill-every` seconds, SIGHUP with a
  changed batch timeout every `--reload-every` seconds.

Every `--sample-seconds` the server process's RSS, open fds, threads and the
`ringserve*` entries in /dev/shm are recorded. Acceptance (exit 0 when all are met):
no request without a reply; no wrong answer (an OK reply whose values differ from
TensorFlow's, or an OK reply to an invalid request); valid requests fail only with
UNAVAILABLE (a worker killed under them); RSS growth after warm-up under 5% (judged on
runs of 5 minutes or more: warm-up is the first fifth, at most 5 minutes); fds and
/dev/shm entries back to their starting counts once traffic stops. RSS is recorded with
its parts: anonymous memory (the frontend's own) and shared memory (the workers' rings,
which the server maps whole from their creation).

Diagnostics (not part of the acceptance): `--trace-memory DIR` makes the server sample
its RSS, glibc's malloc counters and gc object counts, and write tracemalloc snapshots
(perf/memtrace/; `python perf/memtrace/diff.py DIR` shows what grew, by traceback);
`--server-env MALLOC_ARENA_MAX=2` and the like set the server's environment.

The traffic and its tally are in perf/soak_traffic.py, the verdict and its tables in
perf/soak_report.py; this file builds the models and the reference answers, starts the
server, samples it and runs the rest.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import benchcli as C
import inproc
import numpy as np
from soak_report import report
from soak_traffic import BANK_ROWS, MAX_FRAME, REPLY_TIMEOUT, WIDTH, Soak, config

from ringserve.client import Client
from ringserve.runtime.launch import ServerProcess

REFERENCE = """
import sys, numpy as np, tensorflow as tf
out = {}
bank = np.load(sys.argv[1])
for model, path in (("linear", sys.argv[2]), ("demo", sys.argv[3])):
    fn = tf.saved_model.load(path).signatures["serving_default"]
    for k, v in fn(x=tf.constant(bank[model])).items():
        out[f"{model}/{k}"] = v.numpy()
np.savez(sys.argv[4], **out)
"""


def reference_bank(tmp: Path, models: dict[str, Path], seed: int) -> tuple[dict, dict]:
    """Inputs, and TensorFlow's outputs for them, computed in a TF child process."""
    rng = np.random.default_rng(seed)
    bank = {m: rng.standard_normal((BANK_ROWS, w)).astype(np.float32) for m, w in WIDTH.items()}
    np.savez(tmp / "bank.npz", **bank)  # type: ignore[arg-type]  # (numpy's stub: allow_pickle)
    subprocess.run(
        [
            sys.executable,
            "-c",
            REFERENCE,
            str(tmp / "bank.npz"),
            str(models["linear"]),
            str(models["demo"]),
            str(tmp / "ref.npz"),
        ],
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=600,
    )
    ref: dict[str, dict[str, np.ndarray]] = {"linear": {}, "demo": {}}
    with np.load(tmp / "ref.npz") as z:
        for key in z.files:
            model, out = key.split("/")
            ref[model][out] = z[key]
    return bank, ref


# ---- sampling --------------------------------------------------------------------------
def sample(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        # VmRSS = anonymous + file-backed + shared memory pages mapped in; the rings are
        # shared memory, counted once the server has touched their pages.
        "anon_kb": int(fields["RssAnon"].split()[0]),
        "shmem_kb": int(fields["RssShmem"].split()[0]),
        "threads": int(fields["Threads"].strip()),
        "fds": open_fds(pid),
        "shm": len([e for e in os.listdir("/dev/shm") if "ringserve" in e]),
    }


def open_fds(pid: int) -> int:
    """The server's open fds but its fine timer's: the frontend creates that one timerfd
    the first time it times a batch (frontend/polling.py), so a start sample taken
    before any traffic may lack it, and an end sample always has it."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[timerfd]"
        except OSError:  # closed since listed
            pass
    return n


def all_ready(srv: ServerProcess, counts: dict[str, int]) -> bool:
    try:
        with Client(srv.unix_url, timeout=10) as c:
            ws = c.stats()["workers"]
    except (OSError, ConnectionError):
        return False
    have = Counter(w["model"] for w in ws if w["state"] == "ready")
    return len(ws) == sum(counts.values()) and all(have[m] == n for m, n in counts.items())


def wait(cond: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--kill-every", type=float, default=20.0, help="seconds between worker kills")
    p.add_argument("--reload-every", type=float, default=45.0, help="seconds between SIGHUPs")
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--valid-clients", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--trace-memory",
        type=Path,
        metavar="DIR",
        help="diagnostics: the server samples RSS, malloc and gc counts and writes "
        "tracemalloc snapshots into DIR (perf/memtrace/; diff them with diff.py)",
    )
    p.add_argument("--trace-seconds", type=float, default=30.0)
    p.add_argument("--trace-trim", action="store_true", help="malloc_trim(0) after each sample")
    p.add_argument(
        "--trace-no-snapshots", action="store_true", help="samples only, tracemalloc off"
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="diagnostics: an environment variable for the server (e.g. MALLOC_ARENA_MAX=2)",
    )
    C.add_output_args(p)
    args = p.parse_args(argv)
    # --quick: the short soak of tests/test_soak.py.
    C.apply_quick(args, minutes=0.34, kill_every=6.0, reload_every=9.0, sample_seconds=2.0)

    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="rs-soak-") as tmpdir:
        tmp = Path(tmpdir)
        (tmp / "models").mkdir()
        models = inproc.build_models(tmp / "models")
        bank, ref = reference_bank(tmp, models, args.seed)
        server_toml = (
            f"ring_bytes = 4194304\nmax_frame_bytes = {MAX_FRAME}\nmax_regions_per_connection = 4"
            "\nversion_poll_seconds = 0\nheartbeat_timeout_seconds = 30"
        )
        env = {}
        if args.trace_memory:
            here = str(Path(__file__).resolve().parent / "memtrace")
            env = {
                "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
                "RINGSERVE_MEMTRACE_DIR": str(args.trace_memory.resolve()),
                "RINGSERVE_MEMTRACE_SECONDS": str(args.trace_seconds),
                "RINGSERVE_MEMTRACE_TRIM": "1" if args.trace_trim else "",
                "RINGSERVE_MEMTRACE_SNAPSHOTS": "0" if args.trace_no_snapshots else "1",
            }
        env.update(kv.split("=", 1) for kv in args.server_env)
        srv = ServerProcess(config(models, 500), server_toml, env=env)
        srv.start()
        counts = {"linear": 2, "demo": 1}
        try:
            assert srv.proc is not None
            pid = srv.proc.pid
            wait(lambda: all_ready(srv, counts), 120)
            start = sample(pid)
            soak = Soak(args, srv, bank, ref)
            soak.models = models
            threads = [
                threading.Thread(target=soak.valid, args=(i,)) for i in range(args.valid_clients)
            ]
            threads += [
                threading.Thread(target=soak.shm, args=(100,)),
                threading.Thread(target=soak.invalid, args=(200,)),
                threading.Thread(target=soak.hostile, args=(300,)),
                threading.Thread(target=soak.chaos),
            ]
            t0 = time.monotonic()
            for t in threads:
                t.daemon = True
                t.start()
            samples = []
            while time.monotonic() - t0 < seconds:
                s = sample(pid)
                s["t"] = round(time.monotonic() - t0, 1)
                samples.append(s)
                left = seconds - (time.monotonic() - t0)
                time.sleep(max(0.0, min(args.sample_seconds, left)))
            soak.halt.set()
            for t in threads:
                t.join(REPLY_TIMEOUT + 30)
            stuck = [t.name for t in threads if t.is_alive()]
            # The end is the sample that found the server back to its start, not one
            # taken after it: the supervisor opens fds for a moment on its own (a
            # version poll's directory scan, /proc reads), and a sample that lands on
            # one says nothing about a leak.
            last: dict[str, dict[str, Any]] = {}

            def back_to_start() -> bool:
                if not all_ready(srv, counts):
                    return False
                last["end"] = s = sample(pid)
                return bool(s["fds"] <= start["fds"] and s["shm"] <= start["shm"])

            settled = wait(back_to_start, 120)
            end = last.get("end") or sample(pid)
            code = srv.stop()
        finally:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.stop(signal.SIGKILL)
    return report(args, seconds, start, end, samples, soak.t, stuck, settled, code)


if __name__ == "__main__":
    sys.exit(main())
