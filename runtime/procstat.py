"""What the kernel says about a process: CPU time, context switches, threads. Linux /proc.

A zombie (exited, not yet reaped) still answers with its final CPU times, which is how
a worker position's counters carry over a restart (positions.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class ProcFigures:
    user_seconds: float = 0.0
    system_seconds: float = 0.0
    voluntary_ctx_switches: int = 0
    involuntary_ctx_switches: int = 0
    threads: int = 0

    @property
    def cpu_seconds(self) -> float:
        return self.user_seconds + self.system_seconds


def figures(pid: int) -> ProcFigures:
    """Zeros for a process that is gone. Context switches are summed over the live
    threads (/proc/PID/status alone counts the main thread): TensorFlow's pools are
    where a badly sized thread setting shows."""
    out = ProcFigures()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out.user_seconds = int(fields[11]) / _TICK
        out.system_seconds = int(fields[12]) / _TICK
        tids = os.listdir(f"/proc/{pid}/task")
    except (OSError, IndexError, ValueError):
        return out
    out.threads = len(tids)
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                text = f.read()
        except OSError:
            continue  # the thread ended meanwhile
        out.voluntary_ctx_switches += _field(text, "\nvoluntary_ctxt_switches:")
        out.involuntary_ctx_switches += _field(text, "\nnonvoluntary_ctxt_switches:")
    return out


def _field(text: str, key: str) -> int:
    i = text.find(key)
    if i < 0:
        return 0
    start = i + len(key)
    end = text.find("\n", start)
    try:
        return int(text[start : end if end >= 0 else None])
    except ValueError:
        return 0


def cpu_seconds(pid: int) -> float:
    return figures(pid).cpu_seconds


def ctx_switches(pid: int) -> tuple[int, int]:
    f = figures(pid)
    return f.voluntary_ctx_switches, f.involuntary_ctx_switches
