"""Stopping the server.

SIGTERM: readiness off, serve `drain_delay_seconds` more, then drain: refuse new
requests, answer what was accepted, close connections as they go idle, stop the
workers, exit 0; `grace_seconds` after the delay whatever is left is killed. A second
SIGTERM skips what remains of the delay. SIGINT: a quick stop: no delay, queued
requests answered UNAVAILABLE at once, only what workers already hold runs; a SIGINT
during a drain turns it quick, and a second SIGINT kills the workers now (what they
held is answered UNAVAILABLE). docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from . import systemd
from .slots import STOPPING, UNAVAILABLE, kill, log

if TYPE_CHECKING:
    from .supervisor import Supervisor


class Stopper:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.quick = False
        self.skip_delay = asyncio.Event()

    def request_stop(self, graceful: bool) -> None:
        sup = self.sup
        if not sup.stopping:
            self.quick = not graceful
            sup.task(self.shutdown(graceful))
            return
        if graceful:
            if not self.skip_delay.is_set() and not self.quick:
                log("second SIGTERM: skipping the rest of the drain delay")
                self.skip_delay.set()
            return
        if not self.quick:
            log("SIGINT while draining: quick stop, queued requests are answered UNAVAILABLE")
            self.quick = True
            self.skip_delay.set()
            if sup.fe.draining:
                self.fail_all_queued(f"{STOPPING}: quick stop (SIGINT)")
            return
        log("second SIGINT: killing the workers now")
        self.kill_all()

    async def shutdown(self, graceful: bool) -> None:
        sup = self.sup
        fe = sup.fe
        sup.stopping = True
        log(f"stopping ({'drain' if graceful else 'fast'})")
        systemd.notify("STOPPING=1", "STATUS=stopping")
        fe.stop_ready()
        for slot in sup.slots:
            if slot.retry is not None:
                slot.retry.cancel()
        delay = sup.cfg.server.drain_delay_seconds if graceful else 0.0
        if delay > 0:
            log(f"readiness off; serving {delay:g}s more before draining (drain_delay_seconds)")
            try:
                await asyncio.wait_for(self.skip_delay.wait(), delay)
            except TimeoutError:
                pass
        fe.begin_drain()
        log("draining: new requests are answered UNAVAILABLE, idle connections closed")
        deadline = time.monotonic() + sup.cfg.server.grace_seconds
        if self.quick:
            self.fail_all_queued(f"{STOPPING}: quick stop (SIGINT)")
        # Done when every accepted request is answered and every client has gone (the
        # drain closes each connection once idle); a quick stop does not wait for idle.
        while time.monotonic() < deadline and (
            fe.dispatcher.inflight_total() or (fe.connections and not self.quick)
        ):
            await asyncio.sleep(0.005)
        for slot in sup.slots:
            h = slot.handle
            if h is not None:
                h.state = "stopping"
                h.link.draining = True
                if time.monotonic() >= deadline or not h.link.send_stop():
                    kill(h.pid)
        while any(s.handle is not None for s in sup.slots) and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.005)
        self.kill_all()
        while any(s.handle is not None for s in sup.slots):
            await asyncio.sleep(0.005)
        self.fail_all_queued("server stopped")
        await self.flush_replies(1.0)
        fe.close_connections()
        log("stopped")
        sup.finish()

    async def flush_replies(self, limit: float) -> None:
        """Let replies already written reach their clients before closing."""
        t_end = time.monotonic() + limit
        while time.monotonic() < t_end and any(
            c.transport is not None and c.transport.get_write_buffer_size()
            for c in self.sup.fe.connections
        ):
            await asyncio.sleep(0.005)

    def fail_all_queued(self, why: str) -> None:
        fe = self.sup.fe
        for m in fe.registry.models.values():
            for v in m.versions.values():
                fe.dispatcher.fail_queue(v, UNAVAILABLE, why)

    def kill_all(self) -> None:
        for slot in self.sup.slots:
            if slot.handle is not None:
                kill(slot.handle.pid)
