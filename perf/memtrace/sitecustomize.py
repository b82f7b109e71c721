"""Memory diagnostics for one process, switched on from outside (perf/soak.py
--trace-memory DIR puts this folder on the server's PYTHONPATH): nothing of it is in
the product, and nothing runs unless RINGSERVE_MEMTRACE_DIR is set.

Every RINGSERVE_MEMTRACE_SECONDS (default 30) a daemon thread appends one line of JSON
to DIR/samples.jsonl: RSS, tracemalloc's traced total, glibc's mallinfo2 (bytes in
use, free in the heap, mmapped), gc object counts per type (the 25 largest), then
RSS again after malloc_trim(0) when RINGSERVE_MEMTRACE_TRIM=1; and writes a
tracemalloc snapshot to DIR/snap-<t>.pickle, to diff by traceback afterwards
(perf/memtrace/diff.py). The variables are removed from the environment at once, so
the workers this process starts inherit none of it.
"""

from __future__ import annotations

import os

_DIR = os.environ.pop("RINGSERVE_MEMTRACE_DIR", None)
_EVERY = float(os.environ.pop("RINGSERVE_MEMTRACE_SECONDS", "30"))
_TRIM = os.environ.pop("RINGSERVE_MEMTRACE_TRIM", "") == "1"
_FRAMES = int(os.environ.pop("RINGSERVE_MEMTRACE_FRAMES", "12"))
# 0: no tracemalloc at all (its own tables and snapshots move RSS by tens of MiB).
_SNAPSHOTS = os.environ.pop("RINGSERVE_MEMTRACE_SNAPSHOTS", "1") == "1"


def _start(out: str) -> None:
    import ctypes
    import gc
    import json
    import sys
    import threading
    import time
    import tracemalloc
    from collections import Counter

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    if _SNAPSHOTS:
        tracemalloc.start(_FRAMES)
    t0 = time.monotonic()

    def status(field: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def rss_kb() -> int:
        return status("VmRSS")

    def run() -> None:
        n = 0
        while True:
            time.sleep(_EVERY)
            t = round(time.monotonic() - t0)
            mi = libc.mallinfo2()
            traced, peak = tracemalloc.get_traced_memory()
            types = Counter(type(o).__name__ for o in gc.get_objects())
            rec = {
                "t": t,
                "rss_kb": rss_kb(),
                "traced": traced,
                "traced_peak": peak,
                "rss_anon_kb": status("RssAnon"),
                "rss_shmem_kb": status("RssShmem"),
                "heap_arena": mi.arena,
                "heap_in_use": mi.uordblks,
                "heap_free": mi.fordblks,
                "heap_top_pad": mi.keepcost,
                "mmapped": mi.hblkhd,
                "gc_objects": sum(types.values()),
                "pymalloc_blocks": sys.getallocatedblocks(),
                "types": dict(types.most_common(25)),
                "threads": threading.active_count(),
            }
            del types
            if _SNAPSHOTS:
                tracemalloc.reset_peak()
                snap = tracemalloc.take_snapshot()
                snap.dump(os.path.join(out, f"snap-{n:04d}-{t}.pickle"))
                del snap
            n += 1
            if _TRIM:
                libc.malloc_trim(0)
                rec["rss_kb_after_trim"] = rss_kb()
            with open(os.path.join(out, "samples.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")

    threading.Thread(target=run, name="memtrace", daemon=True).start()


if _DIR:
    os.makedirs(_DIR, exist_ok=True)
    _start(_DIR)
