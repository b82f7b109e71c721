"""How one side wakes the other: an eventfd per direction, plus an adaptive spin.

A blocking cross-core wake-up costs tens of microseconds on a small VM, a spin on the
ring's head word well under one. The waiter spins for a budget that follows the gaps
it observes (up to `max_spin_us`) and shrinks while nothing comes, so an idle process
spins at most once per arrival and then sleeps in poll().

The signaller always writes the eventfd after publishing (about a microsecond): with a
count-based eventfd a wake-up can't be lost, which a shared "sleeping" flag can't
promise without fences Python can't issue. The waiter drains the count before it
re-checks the ring and sleeps.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable


def new_eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def signal(fd: int) -> None:
    try:
        os.eventfd_write(fd, 1)
    except BlockingIOError:  # counter saturated: the peer is already due to wake
        pass


def drain(fd: int) -> int:
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


class Waiter:
    """Blocking side of a ring (a worker): spin, then sleep on the eventfd."""

    def __init__(self, fd: int, ready: Callable[[], bool], max_spin_us: int = 2000) -> None:
        self.fd = fd
        self.ready = ready
        self.max_spin_ns = max_spin_us * 1000
        self.budget_ns = self.max_spin_ns // 4
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self.spins_hit = 0
        self.sleeps = 0

    def wait(self, timeout_s: float) -> bool:
        """Return True when `ready()`; False after `timeout_s` with nothing."""
        ready = self.ready
        if ready():
            return True
        start = time.perf_counter_ns()
        budget = self.budget_ns
        if budget:
            deadline = start + budget
            yield_ = os.sched_yield
            clock = time.perf_counter_ns
            while True:
                if ready():
                    gap = clock() - start
                    self.spins_hit += 1
                    # Keep the budget comfortably above the gaps we see.
                    self.budget_ns = min(self.max_spin_ns, max(budget, 2 * gap))
                    return True
                yield_()
                if clock() > deadline:
                    break
        # Nothing came within the budget: spin less next time.
        self.budget_ns = budget // 2 if budget > 20_000 else 0
        self.sleeps += 1
        end = start + int(timeout_s * 1e9)
        while True:
            drain(self.fd)
            if ready():
                gap = time.perf_counter_ns() - start
                if gap < self.max_spin_ns:
                    self.budget_ns = min(self.max_spin_ns, max(self.budget_ns, 2 * gap, 50_000))
                return True
            left_ms = (end - time.perf_counter_ns()) / 1e6
            if left_ms <= 0:
                return False
            self._poll.poll(max(1, int(left_ms + 0.999)))
