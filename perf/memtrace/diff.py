"""Diff two tracemalloc snapshots written by perf/memtrace/sitecustomize.py.

    python perf/memtrace/diff.py DIR [--first N] [--last M] [--top 25] [--by traceback|lineno]

Compares snapshot N (default: the first after warm-up, index 1) with snapshot M
(default: the last) and prints the allocation sites whose live bytes grew most.
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("dir", type=Path)
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--last", type=int, default=-1)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--by", default="traceback", choices=("traceback", "lineno", "filename"))
    p.add_argument("--frames", type=int, default=8)
    a = p.parse_args()
    snaps = sorted(a.dir.glob("snap-*.pickle"))
    s1 = tracemalloc.Snapshot.load(str(snaps[a.first]))
    s2 = tracemalloc.Snapshot.load(str(snaps[a.last]))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    s1, s2 = s1.filter_traces(ignore), s2.filter_traces(ignore)
    print(f"{snaps[a.first].name} -> {snaps[a.last].name}")
    for st in s2.compare_to(s1, a.by)[: a.top]:
        print(
            f"{st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks "
            f"(now {st.size / 1024:.1f} KiB)"
        )
        if a.by == "traceback":
            for line in st.traceback.format(limit=a.frames, most_recent_first=True):
                print("    " + line)
        else:
            print("    " + str(st.traceback[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
