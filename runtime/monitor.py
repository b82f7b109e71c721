"""Watching and describing the workers: hung workers (no heartbeat while holding a
request) and corrupt rings are killed; systemd's watchdog is fed; `stats` gets each
worker position's counters across restarts, each live worker, and the GPUs."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from . import gpu, systemd
from .positions import PositionCounters, own_figures
from .slots import Slot, kill, log

if TYPE_CHECKING:
    from .supervisor import Supervisor


class Monitor:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        # Per (model, version, index): counters that outlive any one process or slot.
        self.counters: dict[tuple[str, int, int], PositionCounters] = {}
        self.gpus: gpu.Nvml | None = None
        self._gpu_checked: tuple[int, ...] | None = None

    async def hung_workers(self) -> None:
        """Hung workers: silent past the heartbeat limit while holding a request."""
        sup = self.sup
        while True:
            limit = sup.cfg.server.heartbeat_timeout_seconds  # re-read: a reload may change it
            await asyncio.sleep(min(1.0, max(0.05, limit / 4)))
            for slot in sup.slots:
                h = slot.handle
                if h is None or h.state != "ready" or not h.link.inflight:
                    continue
                if not h.link.busy_id():
                    continue
                age = h.link.heartbeat_age()
                if age > limit:
                    log(f"worker {h.label} silent for {age:.1f}s holding a request: killing")
                    slot.last_error = f"hung: no heartbeat for {age:.1f}s (limit {limit}s)"
                    kill(h.pid)

    async def watchdog(self, interval: float) -> None:
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def link_broken(self, link: Any, why: str) -> None:
        for slot in self.sup.slots:
            h = slot.handle
            if h is not None and h.link is link:
                log(f"worker {h.label}: corrupt response ring ({why}): killing")
                slot.last_error = f"corrupt ring: {why}"
                kill(h.pid)

    def counters_of(self, s: Slot) -> PositionCounters:
        key = (s.name, s.version, s.placement.index)
        c = self.counters.get(key)
        if c is None:
            c = self.counters[key] = PositionCounters()
        return c

    def describe_positions(self) -> list[dict[str, Any]]:
        """One row per worker position: its counters across restarts (positions.py)."""
        rows: dict[tuple[str, int, int], dict[str, Any]] = {}
        for s in self.sup.slots:
            key = (s.name, s.version, s.placement.index)
            row = rows.get(key)
            if row is None:
                row = rows[key] = {
                    "model": s.name,
                    "version": s.version,
                    "worker": s.placement.index,
                    "device": s.placement.device,
                    "up": 0,
                    "threads": 0,
                    "pids": [],
                }
            h = s.handle
            if h is None or h.state == "exited":
                continue
            f = h.read_figures(max_age=0.1)  # read once per snapshot with describe_workers
            self.counters_of(s).observe(h.pid, own_figures(f, h.link))
            row["threads"] += f.threads
            row["pids"].append(h.pid)
            if h.state == "ready":
                row["up"] = 1
        for key, row in rows.items():
            c = self.counters[key] if key in self.counters else PositionCounters()
            row.update(c.totals())
            row["restarts"] = c.restarts
        return list(rows.values())

    def describe_workers(self) -> list[dict[str, Any]]:
        out = []
        for s in self.sup.slots:
            if s.handle is not None:
                d = s.handle.describe()
                d["restarts"] = s.restarts
                out.append(d)
        return out

    def server_stats(self) -> dict[str, Any]:
        sup = self.sup
        out = {
            "positions": self.describe_positions(),
            "server": {
                "pid": os.getpid(),
                "name": sup.cfg.server.name,
                "config": sup.config_path or "<demo>",
                "restarts": {
                    f"{s.name}/{s.version}/w{s.placement.index}": s.restarts
                    for s in sup.slots
                    if s.restarts
                },
            },
        }
        gpus = self.gpu_figures()
        if gpus is not None:
            out["gpus"] = gpus
        return out

    def gpu_figures(self) -> list[dict[str, Any]] | None:
        """NVML's figures for the GPUs workers are placed on; None without any (no GPU
        worker configured, no nvidia-ml-py, or no driver): absent, not zero."""
        wanted = gpu.indices(s.placement.device for s in self.sup.slots)
        if wanted != self._gpu_checked:
            self._gpu_checked = wanted
            if self.gpus is not None:
                self.gpus.close()
            self.gpus = gpu.load(wanted, log)
        return self.gpus.read() if self.gpus is not None else None
