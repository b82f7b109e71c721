"""How one side wakes the other: an eventfd per direction, a "sleeping" word, a spin.

A blocking cross-core wake-up costs tens of microseconds on a small VM, a spin on the
ring's head word well under one. The waiter spins for a budget that follows the gaps
it observes (up to `max_spin_us`) and shrinks while nothing comes, so an idle process
spins at most once per arrival and then sleeps in poll().

Before sleeping the waiter sets the ring's `sleeping` word; after publishing, the
signaller writes the eventfd only if that word is set, so a spinning peer costs no
system call. This is Dekker's pattern (each side stores, then loads the other's
word), which x86's store buffer breaks unless both sides fence between the store and
the load. Python has no fence, but an uncontended threading.Lock acquire/release is
a locked compare-and-swap in glibc (a full barrier on x86-64) for about 100 ns; see
`fence`. The eventfd is count based, so a wake-up that does fire is never lost.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

from . import layout

_fence_lock = threading.Lock()


def fence() -> None:
    """A full memory barrier: orders this thread's earlier stores before later loads."""
    _fence_lock.acquire()
    _fence_lock.release()


def ring_doorbell(words: memoryview, fd: int) -> None:
    """After publishing a record: wake the consumer if it may be asleep."""
    fence()
    if words[layout.W_SLEEPING]:
        signal(fd)


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

    def __init__(
        self, fd: int, ready: Callable[[], bool], words: memoryview, max_spin_us: int = 2000
    ) -> None:
        self.fd = fd
        self.words = words
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
        words = self.words
        words[layout.W_SLEEPING] = 1
        try:
            while True:
                drain(self.fd)
                fence()  # the sleeping store must be visible before we look at head
                if ready():
                    gap = time.perf_counter_ns() - start
                    if gap < self.max_spin_ns:
                        self.budget_ns = min(self.max_spin_ns, max(self.budget_ns, 2 * gap, 50_000))
                    return True
                left_ms = (end - time.perf_counter_ns()) / 1e6
                if left_ms <= 0:
                    return False
                self._poll.poll(max(1, int(left_ms + 0.999)))
        finally:
            words[layout.W_SLEEPING] = 0
