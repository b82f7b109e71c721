"""A one-shot loop timer with microsecond resolution: a Linux timerfd the loop watches.

uvloop rounds call_later to whole milliseconds (0.4 ms fires at once, 0.6 ms after 1
ms), while the frontend waits for events hundreds of microseconds apart: the next
batch is due just before a worker's running one ends. Instead of spinning through
that wait, the frontend arms this timer a little before the event and sleeps in the
loop (sockets still wake it at once). Python gains os.timerfd_create only in 3.13,
so the two calls go through ctypes on 3.11 and 3.12.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


# struct itimerspec: it_interval (tv_sec, tv_nsec), then it_value (tv_sec, tv_nsec),
# as four C longs (x86-64 and aarch64 Linux alike).
_Itimerspec = ctypes.c_long * 4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_create = _libc.timerfd_create
_create.argtypes = [ctypes.c_int, ctypes.c_int]
_create.restype = ctypes.c_int
# No argtypes: the call passes two ints, a byref made once and None (NULL) as they are,
# without a conversion per argument; the timer is set once or twice a batch.
_settime = _libc.timerfd_settime
_settime.restype = ctypes.c_int


class FineTimer:
    """Calls `callback` once, `delay` seconds after `arm(delay)`; re-arming replaces the
    previous time. Times are relative, on CLOCK_MONOTONIC (as time.perf_counter)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        fd = _create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_create: {os.strerror(err)}")
        self.fd = fd
        self.loop = loop
        self.callback = callback
        self.armed = False
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)
        loop.add_reader(fd, self._fired)

    def arm(self, delay: float) -> None:
        ns = max(1000, int(delay * 1e9))  # a zero it_value would disarm it
        spec = self._spec
        spec[2], spec[3] = divmod(ns, 1_000_000_000)
        if _settime(self.fd, 0, self._ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self.armed = True

    def disarm(self) -> None:
        if self.armed:
            spec = self._spec
            spec[2] = spec[3] = 0
            _settime(self.fd, 0, self._ref, None)
            self.armed = False

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:  # disarmed or re-armed after it fired: not due
            return
        self.armed = False
        self.callback()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
