"""The supervisor: owns every worker process and shared object, runs the frontend.

One process on a small host: the frontend's uvloop runs here too (see
docs/architecture.md). Signal handlers only enqueue (loop.add_signal_handler); the
loop acts. A worker's exit is seen at once through a pidfd on the loop.

Exit codes: 0 clean stop; 2 configuration refused; 4 cannot bind / another server
owns the socket; 1 anything else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringserve.frontend import registry as R
from ringserve.frontend.server import Frontend
from ringserve.frontend.settings import FrontendSettings, ModelSettings
from ringserve.ipc import control, shm

from . import systemd
from .config import Config, ModelConfig, list_versions
from .placement import place
from .workers import WorkerHandle, spawn

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BIND = 4

WORKER_LOAD_FAILED = 3
MAX_BACKOFF = 30.0


def log(text: str) -> None:
    sys.stderr.write(f"ringserve: {text}\n")
    sys.stderr.flush()


def frontend_settings(cfg: Config) -> FrontendSettings:
    s = cfg.server
    token = None
    if s.auth_token_file:
        token = Path(s.auth_token_file).read_text().strip()
    models = tuple(
        ModelSettings(
            name=m.name,
            max_queue=m.max_queue,
            max_batch_size=m.batching.max_batch_size if m.batching else 0,
            batch_timeout_us=m.batching.batch_timeout_us if m.batching else 0,
            allowed_batch_sizes=m.batching.allowed_batch_sizes if m.batching else (),
        )
        for m in cfg.models
    )
    return FrontendSettings(
        tcp=s.tcp,
        unix=s.unix,
        unix_mode=s.unix_mode,
        max_frame_bytes=s.max_frame_bytes,
        auth_token=token,
        max_inflight_per_connection=s.max_inflight_per_connection,
        worker_inflight=s.worker_inflight,
        default_timeout_ms=s.default_timeout_ms,
        max_spin_us=s.max_spin_us,
        models=models,
    )


def valid_versions(base: Path) -> list[int]:
    """Version folders that hold a SavedModel (a half-copied one has no .pb yet)."""
    return [
        v
        for v in list_versions(base)
        if (base / str(v) / "saved_model.pb").exists()
        or (base / str(v) / "saved_model.pbtxt").exists()
    ]


@dataclass(eq=False)
class Slot:
    """One configured worker position (model, version, index) across restarts."""

    model: ModelConfig
    version: int
    index: int
    handle: WorkerHandle | None = None
    failures: int = 0
    restarts: int = 0
    retry: asyncio.TimerHandle | None = None
    wanted: bool = True
    ready_once: bool = False
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(self, cfg: Config, listeners: list[socket.socket] | None = None) -> None:
        self.cfg = cfg
        self.listeners = listeners or []
        self.slots: list[Slot] = []
        self.generation = 0
        self.stopping = False
        self.ready_sent = False
        self.exit_code = EXIT_OK
        self._done: asyncio.Future[int] | None = None
        self.frontend: Frontend | None = None

    # ---- main ----------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        fe = self.frontend = Frontend(frontend_settings(self.cfg), loop)
        fe.dispatcher.workers_hook = self.describe_workers
        for sig, graceful in ((signal.SIGTERM, True), (signal.SIGINT, False)):
            loop.add_signal_handler(sig, self.request_stop, graceful)
        removed = shm.sweep(self.cfg.server.name)
        if removed:
            log(f"removed {len(removed)} shared-memory objects left by a dead run: {removed}")
        tcp_sock, unix_sock = self._inherited()
        try:
            if self.cfg.server.unix and unix_sock is None:
                _claim_unix_path(self.cfg.server.unix)
            await fe.start(tcp_sock=tcp_sock, unix_sock=unix_sock)
        except OSError as exc:
            log(f"cannot listen: {exc}")
            fe.close_listeners()
            return EXIT_BIND
        log(f"listening on {fe.bound()}")
        systemd.notify("STATUS=loading models")
        for m in self.cfg.models:
            self._start_model(m)
        self._check_ready()
        monitor = loop.create_task(self._monitor())
        code = await self._done
        monitor.cancel()
        return code

    def _inherited(self) -> tuple[socket.socket | None, socket.socket | None]:
        tcp = unix = None
        for s in self.listeners:
            if s.family == socket.AF_UNIX:
                unix = s
            else:
                tcp = s
        return tcp, unix

    # ---- models and workers --------------------------------------------------------
    def _start_model(self, m: ModelConfig) -> None:
        fe = self.frontend
        assert fe is not None
        versions = m.version_policy.select(valid_versions(m.base_path))
        model_state = fe.registry.models[m.name]
        if not versions:
            model_state.message = (
                f"no version folder with a saved_model.pb under {m.base_path} "
                f"matches version_policy {m.version_policy.describe()!r}"
            )
            log(f"model {m.name}: {model_state.message}")
            return
        for v in versions:
            fe.registry.version_state(m.name, v)
            for i in range(m.instances.count):
                slot = Slot(m, v, i)
                self.slots.append(slot)
                self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        fe = self.frontend
        assert fe is not None
        slot.retry = None
        if self.stopping or not slot.wanted:
            return
        self.generation += 1
        path = slot.model.base_path / str(slot.version)
        try:
            h = spawn(
                instance=self.cfg.server.name,
                model=slot.model.name,
                version=slot.version,
                path=path,
                placement=place(slot.model.instances, slot.index),
                ring_bytes=self.cfg.server.ring_bytes,
                max_spin_us=self.cfg.server.max_spin_us,
                generation=self.generation,
                on_response=fe.dispatcher.on_response,
            )
        except OSError as exc:
            log(f"cannot start a worker for {slot.model.name}/{slot.version}: {exc}")
            self._schedule_retry(slot, str(exc))
            return
        slot.handle = h
        slot.started = time.monotonic()
        loop = fe.loop
        h.link.info = {}
        fe.registry.version_state(h.model, h.version).links.append(h.link)
        fe.dispatcher.add_link(h.link)
        reader = control.Reader()
        loop.add_reader(h.ctl_fd, self._on_control, slot, h, reader)
        loop.add_reader(h.pidfd, self._on_exit, slot, h)
        log(f"worker {h.label} started, pid {h.pid}")

    def _on_control(self, slot: Slot, h: WorkerHandle, reader: control.Reader) -> None:
        fe = self.frontend
        assert fe is not None
        try:
            data = os.read(h.ctl_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            fe.loop.remove_reader(h.ctl_fd)
            return
        for msg in reader.feed(data):
            kind = msg.get("t")
            if kind == "ready":
                self._worker_ready(slot, h, msg)
            elif kind == "failed":
                slot.last_error = str(msg.get("message", ""))
                v = fe.registry.version_state(h.model, h.version)
                v.message = f"load failed: {slot.last_error}"

    def _worker_ready(self, slot: Slot, h: WorkerHandle, msg: dict[str, Any]) -> None:
        fe = self.frontend
        assert fe is not None
        h.state = "ready"
        h.link.info = msg
        slot.ready_once = True
        v = fe.registry.version_state(h.model, h.version)
        if not v.signatures:
            v.signatures = msg.get("signatures", {})
        v.state = R.AVAILABLE
        v.message = ""
        fe.dispatcher.link_ready(h.link)
        log(
            f"worker {h.label} ready: pid {h.pid} device {msg.get('device')} "
            f"intra_op_threads {msg.get('intra_op_threads')} "
            f"inter_op_threads {msg.get('inter_op_threads')} "
            f"cpu_affinity {msg.get('cpu_affinity')} load {msg.get('load_seconds', 0):.3f}s "
            f"warmup {msg.get('warmup_runs')} runs"
        )
        self._check_ready()

    def _on_exit(self, slot: Slot, h: WorkerHandle) -> None:
        fe = self.frontend
        assert fe is not None
        code = h.proc.poll()
        if code is None:
            return
        loop = fe.loop
        loop.remove_reader(h.pidfd)
        try:
            loop.remove_reader(h.ctl_fd)
        except (ValueError, OSError):
            pass
        h.state = "exited"
        h.exit_code = code
        fe.dispatcher.remove_link(h.link, f"exited with code {code}")
        h.close()
        if slot.handle is h:
            slot.handle = None
        v = fe.registry.models[h.model].versions.get(h.version)
        if self.stopping or not slot.wanted:
            log(f"worker {h.label} stopped (code {code})")
            self._maybe_finished()
            return
        reason = slot.last_error or f"exited with code {code}"
        log(f"worker {h.label} died: {reason}")
        if v is not None and not v.serving_links():
            if code == WORKER_LOAD_FAILED or not slot.ready_once or slot.failures >= 2:
                v.state = R.UNAVAILABLE_STATE
                v.message = reason
            fe.dispatcher.fail_queue(
                v, "UNAVAILABLE", f"model {h.model!r} version {h.version}: no live worker"
            )
        self._schedule_retry(slot, reason)
        self._check_ready()

    def _schedule_retry(self, slot: Slot, reason: str) -> None:
        fe = self.frontend
        assert fe is not None
        # A worker that ran for a while before dying starts the backoff over.
        if time.monotonic() - slot.started > 60:
            slot.failures = 0
        delay = min(MAX_BACKOFF, 0.25 * (2**slot.failures))
        slot.failures += 1
        slot.restarts += 1
        slot.last_error = reason
        slot.retry = fe.loop.call_later(delay, self._spawn, slot)

    def _check_ready(self) -> None:
        fe = self.frontend
        if fe is None or self.stopping:
            return
        ready = fe.registry.ready()
        if ready and not self.ready_sent:
            self.ready_sent = True
            log("ready: every model has a serving worker")
            systemd.notify("READY=1", "STATUS=serving")
        elif not ready and self.ready_sent:
            systemd.notify("STATUS=degraded: a model has no serving worker")

    async def _monitor(self) -> None:
        """Hung workers: silent past the heartbeat limit while holding a request."""
        limit = self.cfg.server.heartbeat_timeout_seconds
        while True:
            await asyncio.sleep(min(1.0, max(0.05, limit / 4)))
            for slot in self.slots:
                h = slot.handle
                if h is None or h.state != "ready" or not h.link.inflight:
                    continue
                if h.link.busy_id() and h.link.heartbeat_age() > limit:
                    log(f"worker {h.label} silent for {h.link.heartbeat_age():.1f}s: killing")
                    slot.last_error = f"hung (no heartbeat for {limit}s)"
                    _kill(h.pid)

    def describe_workers(self) -> list[dict[str, Any]]:
        return [s.handle.describe() for s in self.slots if s.handle is not None]

    # ---- stopping ------------------------------------------------------------------
    def request_stop(self, graceful: bool) -> None:
        if self.stopping:
            if not graceful:  # a second INT: stop now
                self._kill_all()
            return
        fe = self.frontend
        assert fe is not None
        fe.loop.create_task(self._shutdown(graceful))

    async def _shutdown(self, graceful: bool) -> None:
        fe = self.frontend
        assert fe is not None
        self.stopping = True
        log(f"stopping ({'drain' if graceful else 'fast'})")
        systemd.notify("STOPPING=1", "STATUS=stopping")
        fe.accepting = False
        fe.close_listeners()
        for slot in self.slots:
            if slot.retry is not None:
                slot.retry.cancel()
        deadline = time.monotonic() + self.cfg.server.grace_seconds
        if not graceful:
            for m in fe.registry.models.values():
                for v in m.versions.values():
                    fe.dispatcher.fail_queue(v, "UNAVAILABLE", "server stopping")
        while fe.dispatcher.inflight_total() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for slot in self.slots:
            h = slot.handle
            if h is not None:
                h.state = "stopping"
                h.link.draining = True
                if not h.link.send_stop():
                    _kill(h.pid)
        while any(s.handle is not None for s in self.slots) and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.005)
        self._kill_all()
        while any(s.handle is not None for s in self.slots):
            await asyncio.sleep(0.005)
        for m in fe.registry.models.values():
            for v in m.versions.values():
                fe.dispatcher.fail_queue(v, "UNAVAILABLE", "server stopped")
        # Let replies already written reach their clients before closing.
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end and any(
            c.transport is not None and c.transport.get_write_buffer_size() for c in fe.connections
        ):
            await asyncio.sleep(0.005)
        fe.close_connections()
        log("stopped")
        self._maybe_finished(force=True)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.handle is not None:
                _kill(slot.handle.pid)

    def _maybe_finished(self, force: bool = False) -> None:
        if self._done is None or self._done.done():
            return
        if force:
            self._done.set_result(self.exit_code)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _claim_unix_path(path: str) -> None:
    """Remove a stale socket file; refuse if a live server answers on it."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)
        return
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another server is listening on this socket")


def run(cfg: Config, listeners: list[socket.socket] | None = None) -> int:
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # the SDK-only install can still run a server, slower
        runner = asyncio.run
    return int(runner(Supervisor(cfg, listeners).run()))
