"""The batcher: which worker takes the next record, when a batch is sent, how many
rows it holds and what it is padded to.

Dispatch is work-conserving: an idle worker gets whatever is queued at once (waiting
could only add latency). A busy worker gets its next batch when the batch is full,
when its oldest request has waited batch_timeout_us, or just before the running
batch is expected to end (servicetime.py), whichever comes first. A worker holds at
most two batches (one running, the next ready), so it never idles while a batch
waits, and batches grow while it is busy.

Time comes from `clock` and timers from `call_later`, and records leave through
`submit`, so the decisions can be driven by a fake clock and fake links.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from . import fairness
from .links import WorkerLink
from .pending import Job, Pending
from .registry import Registry, VersionState
from .settings import FrontendSettings
from .stats import ModelStats

# How long before a busy worker's expected finish its next batch is sent: the time to
# write the batch into the ring and for the spinning worker to see it.
HANDOVER_S = 50e-6

# Writes a job into the link's ring: False when the ring has no room right now.
Submit = Callable[[WorkerLink, Job, VersionState], bool]


def padded_size(rows: int, allowed: tuple[int, ...]) -> int:
    """The smallest allowed batch size that holds `rows` (`rows` itself when none
    does, or none is configured)."""
    return next((a for a in allowed if a >= rows), rows)


def gather(q: Any, max_rows: int) -> tuple[list[Pending], int]:
    """The requests of the queue that can share a batch with its head, in order, up
    to `max_rows` rows."""
    head = q[0]
    parts = []
    rows = 0
    for p in q:
        if p.done or p.key != head.key or p.rows is None:
            continue
        if rows + p.rows > max_rows:
            break
        parts.append(p)
        rows += p.rows
        if rows == max_rows:
            break
    return parts, rows


def pick(v: VersionState, limit: int) -> WorkerLink | None:
    """The least loaded serving worker of `v` holding fewer than `limit` records."""
    best = None
    for ln in v.links:
        # A group's worker is shared by its models: each gets its share (fairness.py).
        if (
            ln.serving
            and len(ln.inflight) < limit
            and (not ln.group or fairness.has_share(ln, v, limit))
        ):
            if best is None or len(ln.inflight) < len(best.inflight):
                best = ln
    return best


class Batcher:
    def __init__(
        self,
        settings: FrontendSettings,
        registry: Registry,
        submit: Submit,
        pump: Callable[[VersionState], None],
        model_stats: Callable[[str], ModelStats],
        call_later: Callable[..., Any],
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.submit = submit
        self.pump = pump  # what a batch timer calls: the caller's guarded pump
        self.model_stats = model_stats
        self.call_later = call_later
        self.clock = clock
        self.timers: dict[int, Any] = {}
        # Batches to form at a clock time, checked on every poll tick (the loop's
        # timers round to milliseconds; a batch runs in hundreds of microseconds).
        self.due: dict[int, tuple[float, VersionState]] = {}
        # The requests being placed right now, failed by the caller if a step raises.
        self.in_hand: list[Pending] | None = None
        # Per version waiting for company: (head, last, requests, rows) of its queue
        # when last counted (see may_fill).
        self.counted: dict[int, tuple[Pending, Pending, int, int]] = {}

    def take_in_hand(self) -> list[Pending] | None:
        """The requests a failed step held, once. (Read through a call: after the
        caller's `in_hand = None`, mypy would take the field for None for good, and the
        compiled code checks that it is.)"""
        held, self.in_hand = self.in_hand, None
        return held

    # ---- the just-in-time estimate -------------------------------------------------
    def sent(self, link: WorkerLink, rows: int) -> float:
        """`link` took a record of `rows` rows; returns the clock time."""
        now = self.clock()
        link.busy_until = max(link.busy_until, now) + link.service.estimate(rows)
        return now

    def finished(self, link: WorkerLink, rows: int, busy_ns: int) -> None:
        """`link` answered a record of `rows` rows after `busy_ns` of computing (-1:
        it expired unseen, which says nothing of the service time)."""
        if busy_ns >= 0:
            link.service.observe(rows, busy_ns / 1e9)
        est = link.service.estimate
        link.busy_until = self.clock() + sum(est(j.rows) for j in link.inflight.values())

    # ---- timing --------------------------------------------------------------------
    def timed(self, v: VersionState) -> bool:
        """A batch of `v` is already timed for later."""
        due = self.due.get(id(v))
        return due is not None and self.clock() < due[0]

    def due_now(self) -> list[VersionState]:
        now = self.clock()
        return [v for at, v in self.due.values() if at <= now]

    def batch_later(self, v: VersionState, wait: float, timeout: float) -> None:
        """Pump `v` again in `wait` seconds: on a poll tick while the frontend spins,
        and in any case by the loop timer at the batch timeout."""
        self.due[id(v)] = (self.clock() + wait, v)
        self.batch_timer(v, timeout)

    def batch_timer(self, v: VersionState, wait: float) -> None:
        key = id(v)
        if key in self.timers:
            return

        def fire() -> None:
            self.timers.pop(key, None)
            self.pump(v)

        self.timers[key] = self.call_later(wait, fire)

    def record_limit(self, batching: bool) -> int:
        """Records a worker may hold: with batching two (one running, the next ready,
        so batches grow while it is busy), else server.worker_inflight."""
        w = self.settings.worker_inflight
        return min(2, w) if batching else w

    def full(self, link: WorkerLink) -> bool:
        """`link` holds all the records it may: nothing more goes to it before one of
        them is answered."""
        m = self.registry.models.get(link.model)
        return m is not None and len(link.inflight) >= self.record_limit(
            m.settings.max_batch_size > 0
        )

    # ---- placing the queue ---------------------------------------------------------
    def pump_queue(self, v: VersionState) -> bool:
        """Move queued requests onto the least loaded workers that have room; True if
        any record was submitted."""
        self.due.pop(id(v), None)
        ms = self.registry.models[v.model].settings if v.model in self.registry.models else None
        if ms is None:
            return False
        batching = ms.max_batch_size > 0
        limit = self.record_limit(batching)
        q = v.queue
        submitted = False
        while q:
            while q and q[0].done:
                q.popleft()
            if not q:
                break
            link = pick(v, limit)
            if link is None:
                break
            head = q[0]
            self.in_hand = [head]
            # A request queued before a reload lowered max_batch_size cannot join a
            # batch any more: it runs alone (it was accepted; refusing it now would
            # break that), instead of wedging the queue behind it.
            if batching and head.rows is not None and head.rows <= ms.max_batch_size:
                now = self.clock()
                wait = head.t0 + ms.batch_timeout_us / 1e6 - now
                # A busy worker gets its next batch just before it is expected to
                # finish: it never idles, and the batch takes in whatever arrives
                # until then. An idle one gets what is queued at once.
                busy_for = link.busy_until - now - HANDOVER_S if link.inflight else 0.0
                if wait > 0 and busy_for > 0 and not self.may_fill(v, ms.max_batch_size):
                    # Too few rows to fill a batch: wait.
                    self.batch_later(v, min(wait, busy_for), wait)
                    break
                self.counted.pop(id(v), None)
                parts, rows = gather(q, ms.max_batch_size)
                if rows < ms.max_batch_size and wait > 0 and busy_for > 0:
                    self.batch_later(v, min(wait, busy_for), wait)
                    break
                self.in_hand = parts
                job = self.batch_job(v, parts, rows, ms.allowed_batch_sizes)
            else:
                job = Job(v.number, [(head, 0, head.rows or 0)], batched=False)
            if not self.submit(link, job, v):
                break
            self.in_hand = None
            submitted = True
        if not q:
            self.counted.pop(id(v), None)  # holds requests (their tensors) no longer queued
        return submitted

    def may_fill(self, v: VersionState, max_rows: int) -> bool:
        """The rows queued for `v` may reach `max_rows`, so gathering is worth a scan.

        The rows are counted once a request, not on every arrival: while the queue
        keeps its head and its counted requests, only those appended since are added.
        An upper bound (requests already done or of another key count too): it only
        decides whether gather() looks.
        """
        q = v.queue
        n, rows = 0, 0
        seen = self.counted.get(id(v))
        if seen is not None:
            head, last, k, r = seen
            if q[0] is head and k <= len(q) and q[k - 1] is last:
                n, rows = k, r
        if n == len(q) - 1:  # one arrival since the last count: the usual case
            rows += q[-1].rows or 0
        else:
            for p in itertools.islice(q, n, None):
                rows += p.rows or 0
        self.counted[id(v)] = (q[0], q[-1], len(q), rows)
        return rows >= max_rows

    def batch_job(
        self, v: VersionState, parts: list[Pending], rows: int, allowed: tuple[int, ...]
    ) -> Job:
        """Take `parts` out of the queue as one padded batch."""
        q = v.queue
        if all(a is b for a, b in zip(q, parts, strict=False)):  # q may be longer
            for _ in parts:  # the usual case: the batch is the head of the queue
                q.popleft()
        else:
            chosen = {id(p) for p in parts}
            rest = [p for p in q if id(p) not in chosen]
            q.clear()  # in place: the pump holds a reference to this queue
            q.extend(rest)
        padded = padded_size(rows, allowed)
        out = []
        start = 0
        for p in parts:
            assert p.rows is not None
            out.append((p, start, p.rows))
            start += p.rows
        self.model_stats(v.model).batch(rows, padded - rows)
        v.metrics.batched(rows, padded - rows)
        return Job(v.number, out, batched=True, pad=padded - rows)
