"""The supervisor: owns every worker process and shared object, runs the frontend.

One process on a small host: the frontend's uvloop runs here too (see
docs/architecture.md). Signal handlers only enqueue (loop.add_signal_handler); the
loop acts. A worker's exit is seen at once through a pidfd on the loop.

This module wires the parts and holds what they share (the config, the slots, the
frontend, the stopping flag): reconcile.py (what runs against what is wanted),
spawner.py (starting, readiness, exits, backoff), stopping.py (drain and quick stop),
monitor.py (hung workers, corrupt rings, counters and descriptions), reload.py
(SIGHUP), settings.py (config to frontend settings).

Exit codes: 0 clean stop; 2 configuration refused; 4 cannot bind / another server
owns the socket; 1 anything else.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from ringserve import native
from ringserve.frontend.server import Frontend
from ringserve.ipc import machine, shm

from . import systemd
from .config import Config
from .grouped import Groups
from .monitor import Monitor
from .reconcile import Reconciler
from .reload import Reloader
from .settings import frontend_settings
from .slots import Slot, log
from .spawner import Spawner
from .stopping import Stopper

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_BIND = 4


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
        self.stopping = False
        self.ready_sent = False
        self.exit_code = EXIT_OK
        self._done: asyncio.Future[int] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.frontend: Frontend | None = None
        self.reconciler = Reconciler(self)
        self.spawner = Spawner(self)
        self.stopper = Stopper(self)
        self.monitor = Monitor(self)
        self.reloader = Reloader(self)
        self.groups = Groups(self)

    @property
    def fe(self) -> Frontend:
        assert self.frontend is not None
        return self.frontend

    def task(self, coro: Any) -> None:
        t = self.fe.loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        fe = self.frontend = Frontend(frontend_settings(self.cfg), loop)
        fe.dispatcher.workers_hook = self.monitor.describe_workers
        fe.dispatcher.on_broken = self.monitor.link_broken
        fe.extra_stats = self.monitor.server_stats
        loop.add_signal_handler(signal.SIGTERM, self.stopper.request_stop, True)
        loop.add_signal_handler(signal.SIGINT, self.stopper.request_stop, False)
        loop.add_signal_handler(signal.SIGHUP, self.reloader.request_reload)
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
        runner = type(asyncio.get_running_loop()).__module__.partition(".")[0]
        log(f"listening on {fe.bound()}; {native.describe()}; event loop: {runner}")
        for note in self.cfg.notes:
            log(note)
        systemd.notify("STATUS=loading models")
        self.reconciler.reconcile_all()
        self.check_ready()
        self.task(self.monitor.hung_workers())
        self.task(self.reconciler.poll_versions())
        interval = systemd.watchdog_interval()
        if interval:
            self.task(self.monitor.watchdog(interval))
        code = await self._done
        for t in list(self._tasks):
            t.cancel()
        return code

    def finish(self) -> None:
        """The stop is complete: `run` returns the exit code."""
        if self._done is not None and not self._done.done():
            self._done.set_result(self.exit_code)

    def _inherited(self) -> tuple[socket.socket | None, socket.socket | None]:
        tcp = unix = None
        for s in self.listeners:
            if s.family == socket.AF_UNIX:
                unix = s
            else:
                tcp = s
        return tcp, unix

    def check_ready(self) -> None:
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
