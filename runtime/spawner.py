"""Spawning workers and restarting them: start a process for a slot, follow its
control messages until it reports ready, see its exit at once through a pidfd, and
restart it with exponential backoff (0.25 s doubling to 30 s)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ringserve.frontend import registry as R
from ringserve.ipc import control

from .positions import own_figures
from .procstat import figures
from .slots import UNAVAILABLE, Slot, log
from .workers import WorkerHandle, spawn

if TYPE_CHECKING:
    from .supervisor import Supervisor

WORKER_LOAD_FAILED = 3
MAX_BACKOFF = 30.0


class Spawner:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.generation = 0

    def spawn(self, slot: Slot) -> None:
        sup = self.sup
        fe = sup.fe
        slot.retry = None
        if sup.stopping or not slot.wanted:
            return
        self.generation += 1
        try:
            h = spawn(
                instance=sup.cfg.server.name,
                model=slot.name,
                version=slot.version,
                path=slot.model.base_path / str(slot.version),
                placement=slot.placement,
                ring_bytes=sup.cfg.server.ring_bytes,
                max_spin_us=sup.cfg.server.max_spin_us,
                generation=self.generation,
                on_response=fe.dispatcher.on_response,
            )
        except OSError as exc:
            log(f"cannot start a worker for {slot.name}/{slot.version}: {exc}")
            self.schedule_retry(slot, str(exc))
            return
        slot.handle = h
        slot.started = time.monotonic()
        slot.ready.clear()
        fe.registry.version_state(h.model, h.version).links.append(h.link)
        fe.dispatcher.add_link(h.link)
        reader = control.Reader()
        fe.loop.add_reader(h.ctl_fd, self.on_control, slot, h, reader)
        fe.loop.add_reader(h.pidfd, self.on_exit, slot, h)
        log(f"worker {h.label} started, pid {h.pid}")

    def on_control(self, slot: Slot, h: WorkerHandle, reader: control.Reader) -> None:
        try:
            data = os.read(h.ctl_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sup.fe.loop.remove_reader(h.ctl_fd)
            return
        for msg in reader.feed(data):
            kind = msg.get("t")
            if kind == "ready":
                self.worker_ready(slot, h, msg)
            elif kind == "failed":
                slot.last_error = f"load failed: {msg.get('message', '')}"

    def worker_ready(self, slot: Slot, h: WorkerHandle, msg: dict[str, Any]) -> None:
        sup = self.sup
        fe = sup.fe
        h.state = "ready"
        h.link.info = msg
        slot.ready_once = True
        slot.ready.set()
        v = fe.registry.version_state(h.model, h.version)
        if not v.signatures:
            v.signatures = msg.get("signatures", {})
        if v.state != R.UNLOADING:
            v.state = R.AVAILABLE
            v.message = ""
        fe.dispatcher.link_ready(h.link)
        if slot.placement.device != "cpu" and not msg.get("visible_gpus"):
            log(f"worker {h.label}: configured {slot.placement.device} but TensorFlow sees no GPU")
        log(
            f"worker {h.label} ready: pid {h.pid} model {h.model} version {h.version} "
            f"device {msg.get('device')} intra_op_threads {msg.get('intra_op_threads')} "
            f"inter_op_threads {msg.get('inter_op_threads')} "
            f"cpu_affinity {msg.get('cpu_affinity')} load {msg.get('load_seconds', 0):.3f}s "
            f"warmup {msg.get('warmup_runs')} runs call {msg.get('call_paths')}"
        )
        # A newer version serving can retire older ones the policy no longer wants.
        m = next((c for c in sup.cfg.models if c.name == h.model), None)
        if m is not None:
            sup.reconciler.reconcile(m)
        sup.check_ready()

    def on_exit(self, slot: Slot, h: WorkerHandle) -> None:
        sup = self.sup
        fe = sup.fe
        # Before reaping: a zombie still shows its final CPU times.
        final = figures(h.pid)
        code = h.proc.poll()
        if code is None:
            return
        fe.loop.remove_reader(h.pidfd)
        try:
            fe.loop.remove_reader(h.ctl_fd)
        except (ValueError, OSError):
            pass
        h.state = "exited"
        h.exit_code = code
        reason = slot.last_error or f"exited with code {code}"
        fe.dispatcher.remove_link(h.link, reason)  # also counts its last completions
        counters = sup.monitor.counters_of(slot)
        counters.gone(h.pid, own_figures(final, h.link))
        h.close()
        if slot.handle is h:
            slot.handle = None
        if sup.stopping or not slot.wanted:
            log(f"worker {h.label} stopped (code {code})")
            return
        log(f"worker {h.label} died: {reason}")
        m = fe.registry.models.get(h.model)
        v = m.versions.get(h.version) if m is not None else None
        if v is not None and not v.serving_links():
            if code == WORKER_LOAD_FAILED or not slot.ready_once or slot.failures >= 2:
                if v.state != R.UNLOADING:
                    v.state = R.UNAVAILABLE_STATE
                v.message = reason
            fe.dispatcher.fail_queue(
                v, UNAVAILABLE, f"model {h.model!r} version {h.version}: no live worker ({reason})"
            )
        self.schedule_retry(slot, reason)
        slot.last_error = ""
        sup.check_ready()

    def schedule_retry(self, slot: Slot, reason: str) -> None:
        # A worker that served for a while before dying starts the backoff over.
        if slot.ready_once and time.monotonic() - slot.started > 60:
            slot.failures = 0
        delay = min(MAX_BACKOFF, 0.25 * (2**slot.failures))
        slot.failures += 1
        slot.restarts += 1
        self.sup.monitor.counters_of(slot).restarts += 1
        log(f"restarting {slot.name}/{slot.version}/w{slot.placement.index} in {delay:.2f}s")
        slot.retry = self.sup.fe.loop.call_later(delay, self.spawn, slot)
