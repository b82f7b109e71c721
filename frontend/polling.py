"""When the frontend looks at the response rings and at batches that are due.

The loop must never block, yet a completion seen late idles a worker and a batch
sent late delays its requests: so after each submission or completion the frontend
spins (polls the rings every loop turn, cheap, see ipc/wake.py), sleeps on the fine
timer (finetimer.py) until just before a batch is due, and otherwise waits for a
worker's eventfd. That decision is a concept of its own, tuned by measurement
(perf/RESULTS.md); dispatch.py only tells it when there is something to look for
(`start`, `extend_spin`) and gets each completion back through the links.
"""

from __future__ import annotations

import math
import os
import time
from typing import TYPE_CHECKING

from ringserve.ipc import wake
from ringserve.ipc.ring import RingCorrupt

from .finetimer import FineTimer
from .links import WorkerLink

if TYPE_CHECKING:
    from .dispatch import Dispatcher

# How long before a known event (a batch due) the frontend's timer is set: a loop
# woken by a timerfd on a small VM is about this late in the median
# (perf/timer_lateness.py, perf/RESULTS.md), so the batch leaves near its due time,
# itself HANDOVER_S before the running batch is expected to end.
SPIN_LEAD_S = 30e-6
# A sleep shorter than this is not worth the timer's system calls: spin through it.
MIN_SLEEP_S = 40e-6


class Poller:
    """The dispatcher's spin: owned by it, and reads its links, batcher and registry."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.d = dispatcher
        self.loop = dispatcher.loop
        self.links = dispatcher.links  # the same list: links come and go in dispatch.py
        self.batcher = dispatcher.batcher
        self.registry = dispatcher.registry
        self.spinning = False  # a _poll_tick is scheduled
        self._timer: FineTimer | None = None  # created on first use
        self._no_timer = False
        self._spin_until = 0.0
        self.spin_s = dispatcher.settings.max_spin_us / 1e6

    def extend_spin(self) -> None:
        """Something happened that may soon be followed by more: spin a while longer."""
        self._spin_until = time.perf_counter() + self.spin_s

    def _sleep_until(self, now: float) -> float | None:
        """When the spin may stop: None to keep spinning, else the time to be back
        (inf: only when a worker's eventfd rings).

        The spin catches two things early: a completion, and a batch that is due. A
        batching worker holding all the records it may (its next batch is ready in its
        ring) idles no less if its completion is seen a wake-up later, and says when
        through its eventfd. An unbatched one is spun for all the same: its completions
        come every call, and a frontend woken for each lands on the worker's CPU and
        slows it (unbatched c=32 served 0.65 of the spinning code's rate, RESULTS.md).
        A batch due is waited for asleep on the fine timer until just before it is due
        (on two cores a spinning frontend takes CPU from the worker and the clients it
        waits for). A completion that decides what a worker does next, with no batch
        due, is spun for: a wake-up would add its latency to a lone request's (a sleep
        through part of the expected service time measured slower at concurrency 1).
        Except while the clients answer a batch's replies (the version's
        `replied_last`: no request for it has come in since): the batch then running
        ends a whole service time later, its eventfd rings, and the next requests wake
        the loop from their socket, so polling for either only spent the frontend's
        CPU (perf/RESULTS.md, sixth pass)."""
        at = math.inf
        due = self.batcher.due
        for link in self.links:
            if not link.inflight:
                continue
            m = self.registry.models.get(link.model)
            batching = m is not None and m.settings.max_batch_size > 0
            if batching and len(link.inflight) >= self.batcher.record_limit(True):
                continue  # (Batcher.full, without looking the model up again)
            v = m.versions.get(link.version) if m is not None else None
            d = due.get(id(v)) if v is not None else None
            if d is None:
                if batching and v is not None and v.replied_last:
                    continue
                return None
            at = min(at, d[0])
        for when, _ in due.values():
            at = min(at, when)
        if at - now < SPIN_LEAD_S + MIN_SLEEP_S:
            return None
        return at - SPIN_LEAD_S

    def _arm(self, delay: float) -> bool:
        """Wake the spin in `delay` seconds; False if there is no fine timer here."""
        if self._timer is None:
            if self._no_timer:
                return False
            try:
                self._timer = FineTimer(self.loop, self.start)
            except (OSError, AttributeError, NotImplementedError) as exc:
                self._no_timer = True
                self.d.log(f"no fine timer ({exc}): the frontend spins instead of sleeping")
                return False
        self._timer.arm(delay)
        return True

    def start(self) -> None:
        self._spin_until = time.perf_counter() + self.spin_s
        if not self.spinning and self.spin_s > 0:
            self.spinning = True
            for link in self.links:
                link.set_sleeping(False)
            self.loop.call_soon(self._poll_tick)

    def service(self) -> bool:
        """Pick up completions and batches that are due; True while work is in flight.

        Called on every poll tick, and between the frames of a long read: a socket
        buffer can hold a hundred requests, a millisecond of decoding, and a worker
        that finished meanwhile would otherwise wait that long for its next batch."""
        busy = False
        for link in self.links:
            if link.inflight:
                self._poll(link)
                busy = busy or bool(link.inflight)
        if self.batcher.due:
            for v in self.batcher.due_now():
                self.d._pump(v)
        return busy

    def _poll_tick(self) -> None:
        """One turn of the frontend's spin: poll the rings, let the loop run, again."""
        busy = self.service()
        now = time.perf_counter()
        if busy and now < self._spin_until:
            until = self._sleep_until(now)
            if until is None or (until != math.inf and not self._arm(until - now)):
                # Give the CPU to the worker if it shares ours: a spin must never slow
                # the computation it waits for.
                os.sched_yield()
                self.loop.call_soon(self._poll_tick)
                return
        self.spinning = False
        for link in self.links:
            link.set_sleeping(True)
        wake.fence()  # then look once more: a completion may have raced the flag
        for link in self.links:
            if link.inflight:
                self._poll(link)

    def on_efd(self, link: WorkerLink) -> None:
        wake.drain(link.resp_efd)
        self._poll(link)
        # The worker also rings when it freed ring room without answering anything.
        for v in self.d._versions_of(link):
            if v.queue:
                self.d._pump(v)
        if not self.spinning and any(ln.inflight for ln in self.links):
            self.start()  # the spin may have slept while the worker was full

    def _poll(self, link: WorkerLink) -> None:
        """Never raises: it runs inside loop callbacks, and an exception there would
        strand the completions of every worker behind it."""
        try:
            link.poll()
        except Exception as exc:  # RingCorrupt, or anything a hostile record provokes
            if not link.alive:
                return
            link.alive = False  # read nothing more from it; its exit answers the rest
            why = str(exc) if isinstance(exc, RingCorrupt) else f"{type(exc).__name__}: {exc}"
            self.d.on_broken(link, why[:500])
