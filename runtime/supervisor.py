"""The supervisor: owns every worker process and shared object, runs the frontend.

One process on a small host: the frontend's uvloop runs here too (see
docs/architecture.md). Signal handlers only enqueue (loop.add_signal_handler); the
loop acts. A worker's exit is seen at once through a pidfd on the loop.

The supervisor reconciles what runs with what is wanted: the config's models, the
version folders its policy selects, the placements of their workers. The same step
serves start-up, the version-folder poll and SIGHUP: new workers are loaded and
warmed before they get traffic, and what goes away is drained before it stops.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ringserve.frontend import registry as R
from ringserve.frontend.server import Frontend
from ringserve.frontend.settings import FrontendSettings, ModelSettings
from ringserve.ipc import control, machine, shm

from . import gpu, systemd
from .config import Config, ConfigError, ModelConfig, list_versions, load
from .placement import Placement, place
from .positions import PositionCounters, own_figures
from .procstat import figures
from .workers import WorkerHandle, spawn

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BIND = 4

WORKER_LOAD_FAILED = 3
MAX_BACKOFF = 30.0
UNAVAILABLE = "UNAVAILABLE"
STOPPING = "server is stopping"


def log(text: str) -> None:
    sys.stderr.write(f"ringserve: {text}\n")
    sys.stderr.flush()


def model_settings(m: ModelConfig) -> ModelSettings:
    b = m.batching
    return ModelSettings(
        name=m.name,
        max_queue=m.max_queue,
        max_batch_size=b.max_batch_size if b else 0,
        batch_timeout_us=b.batch_timeout_us if b else 0,
        allowed_batch_sizes=b.allowed_batch_sizes if b else (),
        version_labels=m.version_labels,
    )


def frontend_settings(cfg: Config) -> FrontendSettings:
    s = cfg.server
    token = Path(s.auth_token_file).read_text().strip() if s.auth_token_file else None
    return FrontendSettings(
        tcp=s.tcp,
        unix=s.unix,
        unix_mode=s.unix_mode,
        metrics=s.metrics,
        http=s.http,
        http_idle_timeout_seconds=s.http_idle_timeout_seconds,
        max_frame_bytes=s.max_frame_bytes,
        auth_token=token,
        max_inflight_per_connection=s.max_inflight_per_connection,
        worker_inflight=s.worker_inflight,
        default_timeout_ms=s.default_timeout_ms,
        max_spin_us=s.max_spin_us,
        max_connections=s.max_connections,
        max_frame_bytes_before_auth=s.max_frame_bytes_before_auth,
        handshake_timeout_seconds=s.handshake_timeout_seconds,
        frame_timeout_seconds=s.frame_timeout_seconds,
        max_tensor_rank=s.max_tensor_rank,
        max_regions_per_connection=s.max_regions_per_connection,
        max_region_bytes_per_connection=s.max_region_bytes_per_connection,
        models=tuple(model_settings(m) for m in cfg.models),
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
    """One wanted worker position (model, version, index) across its restarts."""

    model: ModelConfig
    version: int
    placement: Placement
    handle: WorkerHandle | None = None
    failures: int = 0
    restarts: int = 0
    retry: asyncio.TimerHandle | None = None
    wanted: bool = True
    replacing: bool = False  # a successor with a new placement is on its way
    ready_once: bool = False
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.model.name


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        listeners: list[socket.socket] | None = None,
        config_path: str | None = None,
        loader: Callable[[], Config] | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        # How a reload reads the config again (TF Serving's flags over the file); None:
        # load(config_path).
        self.loader = loader
        self.listeners = listeners or []
        self.slots: list[Slot] = []
        self.generation = 0
        self.stopping = False
        self.ready_sent = False
        self.exit_code = EXIT_OK
        self._done: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reloading = False
        self.frontend: Frontend | None = None
        # Per (model, version, index): counters that outlive any one process or slot.
        self.counters: dict[tuple[str, int, int], PositionCounters] = {}
        self.gpus: gpu.Nvml | None = None
        self._gpu_checked: tuple[int, ...] | None = None
        self._quick = False
        self._skip_delay = asyncio.Event()

    @property
    def fe(self) -> Frontend:
        assert self.frontend is not None
        return self.frontend

    def _task(self, coro: Any) -> None:
        t = self.fe.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ---- main ----------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        fe = self.frontend = Frontend(frontend_settings(self.cfg), loop)
        fe.dispatcher.workers_hook = self.describe_workers
        fe.dispatcher.on_broken = self._link_broken
        fe.extra_stats = self._server_stats
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, True)
        loop.add_signal_handler(signal.SIGINT, self.request_stop, False)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
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
        for note in self.cfg.notes:
            log(note)
        systemd.notify("STATUS=loading models")
        for m in self.cfg.models:
            self.reconcile(m)
        self._check_ready()
        self._task(self._monitor())
        self._task(self._poll_versions())
        interval = systemd.watchdog_interval()
        if interval:
            self._task(self._watchdog(interval))
        code = await self._done
        for t in list(self._tasks):
            t.cancel()
        return code

    def _inherited(self) -> tuple[socket.socket | None, socket.socket | None]:
        tcp = unix = None
        for s in self.listeners:
            if s.family == socket.AF_UNIX:
                unix = s
            else:
                tcp = s
        return tcp, unix

    def _server_stats(self) -> dict[str, Any]:
        out = {
            "positions": self.describe_positions(),
            "server": {
                "pid": os.getpid(),
                "name": self.cfg.server.name,
                "config": self.config_path or "<demo>",
                "restarts": {
                    f"{s.name}/{s.version}/w{s.placement.index}": s.restarts
                    for s in self.slots
                    if s.restarts
                },
            },
        }
        gpus = self._gpu_figures()
        if gpus is not None:
            out["gpus"] = gpus
        return out

    def _gpu_figures(self) -> list[dict[str, Any]] | None:
        """NVML's figures for the GPUs workers are placed on; None without any (no GPU
        worker configured, no nvidia-ml-py, or no driver): absent, not zero."""
        wanted = gpu.indices(s.placement.device for s in self.slots)
        if wanted != self._gpu_checked:
            self._gpu_checked = wanted
            if self.gpus is not None:
                self.gpus.close()
            self.gpus = gpu.load(wanted, log)
        return self.gpus.read() if self.gpus is not None else None

    # ---- reconcile -----------------------------------------------------------------
    def reconcile(self, m: ModelConfig) -> None:
        """Bring one model's versions and workers to what its config and folder want."""
        if self.stopping:
            return
        model = self.fe.registry.set_model(model_settings(m))
        valid = valid_versions(m.base_path)
        wanted = m.version_policy.select(valid)
        incomplete = [n for n in list_versions(m.base_path) if n not in valid]
        notes = []
        if not wanted:
            notes.append(
                f"no version folder with a saved_model.pb under {m.base_path} "
                f"matches version_policy {m.version_policy.describe()!r}"
            )
        if incomplete:
            notes.append(f"version folders {incomplete} have no saved_model.pb yet: not loaded")
        message = "; ".join(notes)
        if message and message != model.message:
            log(f"model {m.name}: {message}")
        model.message = message
        for number in wanted:
            v = model.versions.get(number)
            if v is None or v.state == R.UNLOADING:
                if v is None:
                    log(f"model {m.name}: loading version {number}")
                v = self.fe.registry.version_state(m.name, number)
                v.state = R.LOADING
            self._fit_workers(m, number)
        # An unwanted version goes only once every wanted one serves with its full
        # count of workers (or min_available_during_swap): a new version that fails
        # to load must not take an old one down with it, and a swap must not leave
        # one worker carrying what `count` workers carried.
        need = m.swap_threshold
        all_serving = all(
            n in model.versions
            and model.versions[n].state == R.AVAILABLE
            and len(model.versions[n].serving_links()) >= need
            for n in wanted
        )
        for number, v in list(model.versions.items()):
            if number not in wanted and v.state != R.UNLOADING and all_serving:
                self._task(self._unload_version(m.name, number))

    def _fit_workers(self, m: ModelConfig, version: int) -> None:
        """Start missing workers; roll those whose placement changed, one at a time.

        A slot being replaced stays wanted (it serves) until its successor is ready;
        `replacing` keeps a later reconcile from starting a second roll for it.
        """
        want = [place(m.instances, i) for i in range(m.instances.count)]
        have = [s for s in self.slots if s.name == m.name and s.version == version and s.wanted]
        for s in have:
            s.model = m
        to_roll: list[tuple[Slot, Placement]] = []
        for p in want:
            same = [s for s in have if s.placement.index == p.index]
            if any(s.placement == p for s in same):
                continue  # in place, or its replacement is already starting
            old = [s for s in same if not s.replacing]
            if old:
                old[0].replacing = True
                to_roll.append((old[0], p))
            elif not same:
                self._add_slot(m, version, p)
        for s in have:
            if s.placement.index >= len(want) and not s.replacing:
                s.replacing = True
                self._task(self._retire(s))
        if to_roll:
            self._task(self._roll(m, version, to_roll))

    def _add_slot(self, m: ModelConfig, version: int, p: Placement) -> Slot:
        slot = Slot(m, version, p)
        self.slots.append(slot)
        self._spawn(slot)
        return slot

    async def _roll(self, m: ModelConfig, version: int, pairs: list[tuple[Slot, Placement]]):
        """Replace workers one by one: the new one serves before the old one stops."""
        for i, (old, p) in enumerate(pairs):
            if self.stopping or not old.wanted:
                continue
            log(f"rolling {m.name}/{version}/w{p.index}: {old.placement} -> {p}")
            new = self._add_slot(m, version, p)
            try:
                limit = self.cfg.server.worker_start_timeout_seconds
                await asyncio.wait_for(new.ready.wait(), limit)
            except TimeoutError:
                log(f"roll of {m.name}/{version}/w{p.index} abandoned: new worker not ready")
                await self._retire(new)
                for o, _ in pairs[i:]:
                    o.replacing = False
                return
            await self._retire(old)

    async def _unload_version(self, model: str, number: int) -> None:
        """Drain a version no longer wanted, stop its workers, forget it."""
        reg = self.fe.registry
        m = reg.models.get(model)
        if m is None or number not in m.versions:
            return
        v = m.versions[number]
        v.state = R.UNLOADING
        log(f"model {model}: unloading version {number}")
        deadline = time.monotonic() + self.cfg.server.grace_seconds
        while (self.fe.dispatcher.queued(v) or any(ln.inflight for ln in v.links)) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.005)
        slots = [s for s in self.slots if s.name == model and s.version == number]
        await asyncio.gather(*(self._retire(s) for s in slots))
        self.fe.dispatcher.fail_queue(v, UNAVAILABLE, f"model {model!r} version {number} unloaded")
        if m.versions.get(number) is v and v.state == R.UNLOADING:
            del m.versions[number]
            log(f"model {model}: version {number} unloaded")

    async def _retire(self, slot: Slot) -> None:
        """Stop one worker after what it holds is answered (bounded by the grace period)."""
        slot.wanted = False
        if slot.retry is not None:
            slot.retry.cancel()
            slot.retry = None
        h = slot.handle
        if h is not None:
            h.state = "stopping"
            h.link.draining = True
            deadline = time.monotonic() + self.cfg.server.grace_seconds
            while h.link.inflight and time.monotonic() < deadline and h.exit_code is None:
                await asyncio.sleep(0.005)
            if h.exit_code is None and not h.link.send_stop():
                _kill(h.pid)
            kill_at = time.monotonic() + 10.0
            while slot.handle is h and time.monotonic() < kill_at:
                await asyncio.sleep(0.005)
            if slot.handle is h:
                _kill(h.pid)
            while slot.handle is h:
                await asyncio.sleep(0.005)
        if slot in self.slots:
            self.slots.remove(slot)

    async def _poll_versions(self) -> None:
        """Pick up version folders that appear or disappear, without a restart."""
        while True:
            interval = self.cfg.server.version_poll_seconds  # re-read: a reload may change it
            await asyncio.sleep(interval if interval > 0 else 1.0)
            if interval <= 0:
                continue
            for m in self.cfg.models:
                if self.stopping:
                    return
                self.reconcile(m)

    # ---- workers -------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        fe = self.fe
        slot.retry = None
        if self.stopping or not slot.wanted:
            return
        self.generation += 1
        try:
            h = spawn(
                instance=self.cfg.server.name,
                model=slot.name,
                version=slot.version,
                path=slot.model.base_path / str(slot.version),
                placement=slot.placement,
                ring_bytes=self.cfg.server.ring_bytes,
                max_spin_us=self.cfg.server.max_spin_us,
                generation=self.generation,
                on_response=fe.dispatcher.on_response,
            )
        except OSError as exc:
            log(f"cannot start a worker for {slot.name}/{slot.version}: {exc}")
            self._schedule_retry(slot, str(exc))
            return
        slot.handle = h
        slot.started = time.monotonic()
        slot.ready.clear()
        fe.registry.version_state(h.model, h.version).links.append(h.link)
        fe.dispatcher.add_link(h.link)
        reader = control.Reader()
        fe.loop.add_reader(h.ctl_fd, self._on_control, slot, h, reader)
        fe.loop.add_reader(h.pidfd, self._on_exit, slot, h)
        log(f"worker {h.label} started, pid {h.pid}")

    def _on_control(self, slot: Slot, h: WorkerHandle, reader: control.Reader) -> None:
        try:
            data = os.read(h.ctl_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.fe.loop.remove_reader(h.ctl_fd)
            return
        for msg in reader.feed(data):
            kind = msg.get("t")
            if kind == "ready":
                self._worker_ready(slot, h, msg)
            elif kind == "failed":
                slot.last_error = f"load failed: {msg.get('message', '')}"

    def _worker_ready(self, slot: Slot, h: WorkerHandle, msg: dict[str, Any]) -> None:
        fe = self.fe
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
        m = next((c for c in self.cfg.models if c.name == h.model), None)
        if m is not None:
            self.reconcile(m)
        self._check_ready()

    def _on_exit(self, slot: Slot, h: WorkerHandle) -> None:
        fe = self.fe
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
        counters = self._counters(slot)
        counters.gone(h.pid, own_figures(final, h.link))
        h.close()
        if slot.handle is h:
            slot.handle = None
        if self.stopping or not slot.wanted:
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
        self._schedule_retry(slot, reason)
        slot.last_error = ""
        self._check_ready()

    def _schedule_retry(self, slot: Slot, reason: str) -> None:
        # A worker that served for a while before dying starts the backoff over.
        if slot.ready_once and time.monotonic() - slot.started > 60:
            slot.failures = 0
        delay = min(MAX_BACKOFF, 0.25 * (2**slot.failures))
        slot.failures += 1
        slot.restarts += 1
        self._counters(slot).restarts += 1
        log(f"restarting {slot.name}/{slot.version}/w{slot.placement.index} in {delay:.2f}s")
        slot.retry = self.fe.loop.call_later(delay, self._spawn, slot)

    def _check_ready(self) -> None:
        if self.frontend is None or self.stopping:
            return
        ready = self.fe.registry.ready()
        if ready and not self.ready_sent:
            self.ready_sent = True
            log("ready: every model has a serving worker")
            systemd.notify("READY=1", "STATUS=serving")
        elif not ready and self.ready_sent:
            self.ready_sent = False
            systemd.notify("STATUS=degraded: a model has no serving worker")

    async def _monitor(self) -> None:
        """Hung workers: silent past the heartbeat limit while holding a request."""
        while True:
            limit = self.cfg.server.heartbeat_timeout_seconds  # re-read: a reload may change it
            await asyncio.sleep(min(1.0, max(0.05, limit / 4)))
            for slot in self.slots:
                h = slot.handle
                if h is None or h.state != "ready" or not h.link.inflight:
                    continue
                if not h.link.busy_id():
                    continue
                age = h.link.heartbeat_age()
                if age > limit:
                    log(f"worker {h.label} silent for {age:.1f}s holding a request: killing")
                    slot.last_error = f"hung: no heartbeat for {age:.1f}s (limit {limit}s)"
                    _kill(h.pid)

    async def _watchdog(self, interval: float) -> None:
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def _link_broken(self, link: Any, why: str) -> None:
        for slot in self.slots:
            h = slot.handle
            if h is not None and h.link is link:
                log(f"worker {h.label}: corrupt response ring ({why}): killing")
                slot.last_error = f"corrupt ring: {why}"
                _kill(h.pid)

    def _counters(self, s: Slot) -> PositionCounters:
        key = (s.name, s.version, s.placement.index)
        c = self.counters.get(key)
        if c is None:
            c = self.counters[key] = PositionCounters()
        return c

    def describe_positions(self) -> list[dict[str, Any]]:
        """One row per worker position: its counters across restarts (positions.py)."""
        rows: dict[tuple[str, int, int], dict[str, Any]] = {}
        for s in self.slots:
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
            self._counters(s).observe(h.pid, own_figures(f, h.link))
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
        for s in self.slots:
            if s.handle is not None:
                d = s.handle.describe()
                d["restarts"] = s.restarts
                out.append(d)
        return out

    # ---- reload --------------------------------------------------------------------
    def request_reload(self) -> None:
        if self.stopping or self._reloading:
            return
        self._task(self._reload())

    async def _reload(self) -> None:
        self._reloading = True
        try:
            systemd.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(1) // 1000}")
            if not self.config_path and self.loader is None:
                log("reload: no config file to re-read (serving the demo)")
                return
            try:
                new = self.loader() if self.loader is not None else load(self.config_path or "")
            except ConfigError as exc:
                log(f"reload refused, keeping the running config: {exc}")
                systemd.notify("STATUS=reload refused: see the log")
                return
            self.apply(new)
        finally:
            self._reloading = False
            if not self.stopping:
                systemd.notify("READY=1", "STATUS=serving")

    def apply(self, new: Config) -> None:
        old = self.cfg
        fixed = [
            k
            for k in (
                "tcp",
                "unix",
                "unix_mode",
                "name",
                "ring_bytes",
                "max_frame_bytes",
                "max_frame_bytes_before_auth",
                "auth_token_file",
                "metrics",
                "http",
            )
            if getattr(old.server, k) != getattr(new.server, k)
        ]
        if fixed:
            log(f"reload: changes to server.{', server.'.join(fixed)} need a restart; kept")
        self.cfg = Config(
            server=old.server.__class__(
                **{**new.server.__dict__, **{k: getattr(old.server, k) for k in fixed}}
            ),
            models=new.models,
            path=new.path,
        )
        self.fe.apply_settings(frontend_settings(self.cfg))
        new_names = {m.name for m in new.models}
        for m in old.models:
            if m.name not in new_names:
                self._task(self._remove_model(m.name))
        for m in new.models:
            self.reconcile(m)
        log(f"reloaded {self.config_path}: models {sorted(new_names)}")

    async def _remove_model(self, name: str) -> None:
        reg = self.fe.registry
        m = reg.models.get(name)
        if m is None:
            return
        log(f"model {name}: removed from the config; draining")
        await asyncio.gather(*(self._unload_version(name, n) for n in list(m.versions)))
        for s in [s for s in self.slots if s.name == name]:
            await self._retire(s)
        if not any(c.name == name for c in self.cfg.models):
            reg.drop_model(name)
            self.fe.dispatcher.stats.pop(name, None)
            log(f"model {name}: removed")

    # ---- stopping ------------------------------------------------------------------
    # SIGTERM: readiness off, serve `drain_delay_seconds` more, then drain: refuse new
    # requests, answer what was accepted, close connections as they go idle, stop the
    # workers, exit 0; `grace_seconds` after the delay whatever is left is killed.
    # A second SIGTERM skips what remains of the delay. SIGINT: a quick stop: no delay,
    # queued requests answered UNAVAILABLE at once, only what workers already hold
    # runs; a SIGINT during a drain turns it quick, and a second SIGINT kills the
    # workers now (what they held is answered UNAVAILABLE). docs/deploy.md.
    def request_stop(self, graceful: bool) -> None:
        if not self.stopping:
            self._quick = not graceful
            self._task(self._shutdown(graceful))
            return
        if graceful:
            if not self._skip_delay.is_set() and not self._quick:
                log("second SIGTERM: skipping the rest of the drain delay")
                self._skip_delay.set()
            return
        if not self._quick:
            log("SIGINT while draining: quick stop, queued requests are answered UNAVAILABLE")
            self._quick = True
            self._skip_delay.set()
            if self.fe.draining:
                self._fail_all_queued(f"{STOPPING}: quick stop (SIGINT)")
            return
        log("second SIGINT: killing the workers now")
        self._kill_all()

    async def _shutdown(self, graceful: bool) -> None:
        fe = self.fe
        self.stopping = True
        log(f"stopping ({'drain' if graceful else 'fast'})")
        systemd.notify("STOPPING=1", "STATUS=stopping")
        fe.stop_ready()
        for slot in self.slots:
            if slot.retry is not None:
                slot.retry.cancel()
        delay = self.cfg.server.drain_delay_seconds if graceful else 0.0
        if delay > 0:
            log(f"readiness off; serving {delay:g}s more before draining (drain_delay_seconds)")
            try:
                await asyncio.wait_for(self._skip_delay.wait(), delay)
            except TimeoutError:
                pass
        fe.begin_drain()
        log("draining: new requests are answered UNAVAILABLE, idle connections closed")
        deadline = time.monotonic() + self.cfg.server.grace_seconds
        if self._quick:
            self._fail_all_queued(f"{STOPPING}: quick stop (SIGINT)")
        # Done when every accepted request is answered and every client has gone (the
        # drain closes each connection once idle); a quick stop does not wait for idle.
        while time.monotonic() < deadline and (
            fe.dispatcher.inflight_total() or (fe.connections and not self._quick)
        ):
            await asyncio.sleep(0.005)
        for slot in self.slots:
            h = slot.handle
            if h is not None:
                h.state = "stopping"
                h.link.draining = True
                if time.monotonic() >= deadline or not h.link.send_stop():
                    _kill(h.pid)
        while any(s.handle is not None for s in self.slots) and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.005)
        self._kill_all()
        while any(s.handle is not None for s in self.slots):
            await asyncio.sleep(0.005)
        self._fail_all_queued("server stopped")
        await self._flush_replies(1.0)
        fe.close_connections()
        log("stopped")
        if self._done is not None and not self._done.done():
            self._done.set_result(self.exit_code)

    async def _flush_replies(self, limit: float) -> None:
        """Let replies already written reach their clients before closing."""
        t_end = time.monotonic() + limit
        while time.monotonic() < t_end and any(
            c.transport is not None and c.transport.get_write_buffer_size()
            for c in self.fe.connections
        ):
            await asyncio.sleep(0.005)

    def _fail_all_queued(self, why: str) -> None:
        for m in self.fe.registry.models.values():
            for v in m.versions.values():
                self.fe.dispatcher.fail_queue(v, UNAVAILABLE, why)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.handle is not None:
                _kill(slot.handle.pid)


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
    except OSError:
        os.unlink(path)  # nobody answers: left by a dead run
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another server is listening on this socket")


def run(
    cfg: Config,
    listeners: list[socket.socket] | None = None,
    config_path: str | None = None,
    loader: Callable[[], Config] | None = None,
) -> int:
    refused = machine.refusal()
    if refused:
        log(f"cannot start: {refused}")
        return 1
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # the SDK-only install can still run a server, slower
        runner = asyncio.run
    return int(runner(Supervisor(cfg, listeners, config_path, loader).run()))
