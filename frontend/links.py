"""The frontend's side of one worker: its two rings, two eventfds, in-flight table."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ringserve.ipc import layout, records, wake
from ringserve.ipc.errors import CODES
from ringserve.ipc.ring import Ring, RingCorrupt

from .servicetime import ServiceTime

OnResponse = Callable[["WorkerLink", list[Any], dict[str, np.ndarray[Any, Any]]], None]


# A worker's error message longer than this is cut: it goes into a client's reply.
MESSAGE_LIMIT = 2000


def check_head(head: list[Any]) -> None:
    """A response head is [rid, code, message, busy_ns], optionally followed by the
    three phase times (ns); anything else means the worker's ring cannot be trusted
    (RingCorrupt: the worker is killed and replaced). A long message is cut in place."""
    if len(head) not in (4, 7):
        raise RingCorrupt(f"response head has {len(head)} fields, expected 4 or 7")
    rid, code, message, busy = head[:4]
    if any(type(t) is not int or t < 0 for t in head[4:]):
        raise RingCorrupt(f"response head: phase times {_short(head[4:])} are not ints >= 0")
    if type(rid) is not int or rid < 0:
        raise RingCorrupt(f"response head: request id {_short(rid)} is not a non-negative int")
    if type(code) is not str or (code and code not in CODES):
        raise RingCorrupt(f"response head: code {_short(code)} is not a protocol error code")
    if type(message) is not str:
        raise RingCorrupt(f"response head: message of type {type(message).__name__}")
    if type(busy) is not int or busy < -1:
        raise RingCorrupt(f"response head: busy time {_short(busy)} is not an int >= -1")
    if len(message) > MESSAGE_LIMIT:
        head[2] = message[:MESSAGE_LIMIT] + f"... ({len(message)} characters)"


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:60] + "..."


class WorkerLink:
    """Requests go into `req`, completions come back from `resp`.

    The supervisor creates the rings and eventfds and hands them over; this object
    never unlinks or closes them (their owner does).
    """

    def __init__(
        self,
        key: str,
        model: str,
        version: int,
        req: Ring,
        resp: Ring,
        req_efd: int,
        resp_efd: int,
        on_response: OnResponse,
    ) -> None:
        self.key = key
        self.model = model
        self.version = version
        self.req = req
        self.resp = resp
        self.req_efd = req_efd
        self.resp_efd = resp_efd
        self.on_response = on_response
        self.inflight: dict[int, Any] = {}
        self.ready = False
        self.alive = True
        self.draining = False
        self.info: dict[str, Any] = {}
        self.requests = 0
        self.busy_ns = 0
        self.service = ServiceTime()
        # perf_counter time at which the worker is expected to finish what it holds.
        self.busy_until = 0.0
        # A group's worker (docs/groups.md): the group's name, and the registry's
        # version states this worker serves (several models, each its own queue); the
        # request head then names the model and version. "" and [] for a model's own.
        self.group = ""
        self.serves: list[Any] = []
        # Round-robin position over `serves`: the next queue to offer a free slot to.
        self.turn = 0

    @property
    def serving(self) -> bool:
        return self.ready and self.alive and not self.draining

    def submit(self, rid: int, head: list[Any], tensors: Sequence[records.TensorSpec]) -> bool:
        """Write one request record; False if the ring has no room right now."""
        if records.write(self.req, layout.KIND_REQUEST, head, tensors) is None:
            # The write may have published a wrap pad: the worker must wake to skip it,
            # or the room this record waits for is never freed.
            wake.ring_doorbell(self.req.words, self.req_efd)
            return False
        wake.ring_doorbell(self.req.words, self.req_efd)
        return True

    def send_stop(self) -> bool:
        view = self.req.try_reserve(0)
        if view is None:
            return False
        self.req.commit(layout.KIND_STOP)
        wake.signal(self.req_efd)  # always: the worker must see it even mid-spin
        return True

    def poll(self) -> int:
        """Hand every completed response to `on_response`; return how many."""
        n = 0
        resp = self.resp
        while self.alive:
            rec = resp.peek()
            if rec is None:
                break
            head, outs = records.read(rec.payload)
            check_head(head)
            if head[3] >= 0:  # -1: expired before it was computed
                self.requests += 1
                self.busy_ns += int(head[3])
            self.on_response(self, head, outs)
            del outs
            resp.release()
            n += 1
        return n

    def set_sleeping(self, sleeping: bool) -> None:
        """Tell the worker whether completions need the eventfd (we are not polling)."""
        self.resp.words[layout.W_SLEEPING] = int(sleeping)

    def heartbeat_age(self) -> float:
        """Seconds since the worker last showed life, and the request it holds."""
        beat = self.req.words[layout.W_BEAT]
        return (time.monotonic_ns() - beat) / 1e9 if beat else 0.0

    def busy_id(self) -> int:
        return int(self.req.words[layout.W_BUSY])
