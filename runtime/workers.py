"""Spawning one worker process with its rings, eventfds and control pipe.

The supervisor owns every object made here: it creates the shared-memory segments
(their names are unlinked at once, see ipc/shm.py), the eventfds and the pipe, passes
them to a fresh interpreter (spawn, never fork), and closes them when the worker is
gone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringserve.frontend.links import OnResponse, WorkerLink
from ringserve.ipc import layout, shm, wake
from ringserve.ipc.ring import Ring

from .placement import Placement
from .procstat import ProcFigures, figures


@dataclass(eq=False)
class WorkerHandle:
    model: str
    version: int
    placement: Placement
    proc: subprocess.Popen[bytes]
    link: WorkerLink
    segments: list[shm.Segment]
    fds: list[int]
    ctl_fd: int
    pidfd: int
    # The (model, version)s this process loads: one, or every one of its group's.
    held: list[tuple[str, int]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    state: str = "starting"  # starting | ready | stopping | exited
    exit_code: int | None = None
    # The last /proc reading and when (monotonic): one stats snapshot reads it once.
    figures: ProcFigures = field(default_factory=ProcFigures)
    figures_at: float = -1.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def label(self) -> str:
        return self.link.key

    def read_figures(self, max_age: float = 0.0) -> ProcFigures:
        now = time.monotonic()
        if now - self.figures_at > max_age:
            self.figures = figures(self.pid)
            self.figures_at = now
        return self.figures

    def describe(self) -> dict[str, Any]:
        info = self.link.info
        f = self.read_figures()
        return {
            "pid": self.pid,
            "model": self.model,
            "version": self.version,
            **({"group": self.model, "models": self.held_states()} if self.link.group else {}),
            "index": self.placement.index,
            "state": self.state,
            "device": info.get("device", self.placement.device),
            "intra_op_threads": info.get("intra_op_threads"),
            "inter_op_threads": info.get("inter_op_threads"),
            "cpu_affinity": info.get("cpu_affinity", sorted(os.sched_getaffinity(self.pid))),
            "cuda_visible_devices": info.get("cuda_visible_devices"),
            "visible_gpus": info.get("visible_gpus"),
            "memory_growth": info.get("memory_growth"),
            "tf_devices": info.get("tf_devices"),
            "call_paths": info.get("call_paths"),
            "configured": self.placement.as_dict(),
            "requests": self.link.requests,
            "inflight": len(self.link.inflight),
            "busy_seconds": self.link.busy_ns / 1e9,
            "cpu_seconds": f.cpu_seconds,
            "cpu_user_seconds": f.user_seconds,
            "cpu_system_seconds": f.system_seconds,
            "voluntary_ctx_switches": f.voluntary_ctx_switches,
            "involuntary_ctx_switches": f.involuntary_ctx_switches,
            "threads": f.threads,
            "heartbeat_age_seconds": round(self.link.heartbeat_age(), 3),
            "uptime_seconds": round(time.monotonic() - self.started, 3),
        }

    def held_states(self) -> list[dict[str, Any]]:
        """Per model version of a group worker: loaded or failed (what it reported)."""
        reports = {(r.get("model"), r.get("version")): r for r in self.link.info.get("models", [])}
        out = []
        for n, v in self.held:
            r = reports.get((n, v))
            state = "loading" if r is None else ("ready" if r.get("ok") else "failed")
            row: dict[str, Any] = {"model": n, "version": v, "state": state}
            if r is not None and not r.get("ok"):
                row["message"] = r.get("message", "")
            out.append(row)
        return out

    def close(self) -> None:
        """Release everything; the worker process must already be reaped."""
        for fd in (*self.fds, self.ctl_fd, self.pidfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        self.ctl_fd = self.pidfd = -1
        for seg in self.segments:
            seg.close()


def spawn(
    *,
    instance: str,
    model: str,
    version: int,
    path: Path,
    placement: Placement,
    ring_bytes: int,
    max_spin_us: int,
    generation: int,
    on_response: OnResponse,
    group: list[tuple[str, int, Path]] | None = None,
) -> WorkerHandle:
    """A worker of `model` at `version` from `path`; or, with `group`, a worker of the
    group named `model` holding each (model, version, path) listed (version is 0)."""
    if group is None:
        key = f"{model}/{version}/w{placement.index}.{generation}"
        tag = f"{model}-v{version}-w{placement.index}-g{generation}"
    else:
        key = f"{model}/w{placement.index}.{generation}"
        tag = f"{model}-group-w{placement.index}-g{generation}"
    size = layout.segment_size(ring_bytes)
    segs: list[shm.Segment] = []
    fds: list[int] = []
    try:
        for part in ("req", "resp"):
            segs.append(shm.create(instance, f"{tag}-{part}", size))
        req = Ring(segs[0].map, create=True, capacity=ring_bytes)
        resp = Ring(segs[1].map, create=True, capacity=ring_bytes)
        resp.words[layout.W_SLEEPING] = 1  # the frontend polls only after submitting
        req_efd, resp_efd = wake.new_eventfd(), wake.new_eventfd()
        fds += [req_efd, resp_efd]
        ctl_r, ctl_w = os.pipe2(os.O_CLOEXEC)
        spec = {
            "label": key,
            "model": model,
            "version": version,
            "path": str(path),
            "placement": placement.as_dict(),
            "parent_pid": os.getpid(),
            "segment_bytes": size,
            "req_fd": segs[0].fd,
            "resp_fd": segs[1].fd,
            "req_efd": req_efd,
            "resp_efd": resp_efd,
            "ctl_fd": ctl_w,
            "max_spin_us": max_spin_us,
        }
        if group is not None:
            spec["models"] = [{"name": n, "version": v, "path": str(p)} for n, v, p in group]
        env = {**os.environ, "RINGSERVE_WORKER_SPEC": json.dumps(spec)}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ringserve.runtime.worker"],
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=(segs[0].fd, segs[1].fd, req_efd, resp_efd, ctl_w),
                close_fds=True,
            )
        finally:
            os.close(ctl_w)
        pidfd = os.pidfd_open(proc.pid)
    except BaseException:
        for fd in fds:
            os.close(fd)
        for s in segs:
            s.close()
        raise
    os.set_blocking(ctl_r, False)
    link = WorkerLink(key, model, version, req, resp, req_efd, resp_efd, on_response)
    link.group = model if group is not None else ""
    held = [(n, v) for n, v, _ in group] if group is not None else [(model, version)]
    return WorkerHandle(model, version, placement, proc, link, segs, fds, ctl_r, pidfd, held)
