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
import time
from collections.abc import Callable

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_create = _libc.timerfd_create
_create.argtypes = [ctypes.c_int, ctypes.c_int]
_create.restype = ctypes.c_int
_settime = _libc.timerfd_settime
_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
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
        self.armed_until = 0.0  # perf_counter time it fires at; 0.0 when disarmed
        self._spec = _Itimerspec()
        loop.add_reader(fd, self._fired)

    def arm(self, delay: float) -> None:
        ns = max(1000, int(delay * 1e9))  # a zero it_value would disarm it
        v = self._spec.it_value
        v.tv_sec, v.tv_nsec = divmod(ns, 1_000_000_000)
        if _settime(self.fd, 0, ctypes.byref(self._spec), None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"timerfd_settime: {os.strerror(err)}")
        self.armed_until = time.perf_counter() + ns / 1e9

    def disarm(self) -> None:
        if self.armed_until:
            v = self._spec.it_value
            v.tv_sec = v.tv_nsec = 0
            _settime(self.fd, 0, ctypes.byref(self._spec), None)
            self.armed_until = 0.0

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:  # disarmed or re-armed after it fired: not due
            return
        self.armed_until = 0.0
        self.callback()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
