"""The batcher's decisions (frontend/batcher.py), driven by a fake clock, fake timers
and fake worker links: when a batch is sent, how many rows it takes, what it is padded
to, the just-in-time estimate, and a max_batch_size lowered under a queue. No
processes, no rings, no event loop; the real-process tests (test_batching.py,
test_batcher_faults.py) show the same behaviour end to end."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ringserve.frontend.batcher import HANDOVER_S, Batcher, gather, padded_size, pick
from ringserve.frontend.pending import Job, Pending
from ringserve.frontend.registry import Registry, VersionState
from ringserve.frontend.settings import FrontendSettings, ModelSettings
from ringserve.frontend.stats import ModelStats

# Its stand-in links are not WorkerLinks, which the compiled batcher checks for.
pytestmark = pytest.mark.sources

US = 1e-6


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Service:
    """A worker that takes `fixed + per_row * rows` seconds for a record."""

    def __init__(self, fixed: float = 200 * US, per_row: float = 10 * US) -> None:
        self.fixed = fixed
        self.per_row = per_row
        self.seen: list[tuple[int, float]] = []

    def estimate(self, rows: int) -> float:
        return self.fixed + self.per_row * rows

    def observe(self, rows: int, seconds: float) -> None:
        self.seen.append((rows, seconds))


class Link:
    """The parts of a WorkerLink the batcher reads."""

    def __init__(self, name: str, serving: bool = True) -> None:
        self.key = name
        self.serving = serving
        self.inflight: dict[int, Job] = {}
        self.busy_until = 0.0
        self.service = Service()
        self.room = True  # False: the ring is full, submit refuses
        self.group = ""  # a model's own worker, not a group's (fairness.py)


class Timers:
    def __init__(self) -> None:
        self.armed: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, fn: Callable[[], None]) -> object:
        self.armed.append((delay, fn))
        return object()


class Harness:
    def __init__(
        self,
        max_batch_size: int = 8,
        batch_timeout_us: int = 1000,
        allowed: tuple[int, ...] = (),
        links: int = 1,
        worker_inflight: int = 2,
    ) -> None:
        self.clock = Clock()
        self.timers = Timers()
        self.registry = Registry(
            (
                ModelSettings(
                    "m",
                    max_batch_size=max_batch_size,
                    batch_timeout_us=batch_timeout_us,
                    allowed_batch_sizes=allowed,
                ),
            )
        )
        self.v: VersionState = self.registry.version_state("m", 1)
        self.links = [Link(f"w{i}") for i in range(links)]
        self.v.links.extend(self.links)  # type: ignore[arg-type]
        self.sent: list[tuple[Link, Job]] = []
        self.stats: dict[str, ModelStats] = {}
        self.pumped: list[VersionState] = []
        self._rid = 0
        self.b = Batcher(
            FrontendSettings(worker_inflight=worker_inflight),
            self.registry,
            self.submit,  # type: ignore[arg-type]
            self.pumped.append,
            lambda name: self.stats.setdefault(name, ModelStats()),
            self.timers.call_later,
            clock=self.clock,
        )

    def submit(self, link: Link, job: Job, v: VersionState) -> bool:
        """What the Dispatcher does, minus the ring: unbatched jobs leave the queue
        here, batched ones already left it in batch_job."""
        if not link.room:
            if job.batched:
                v.queue.extendleft(reversed([p for p, _, _ in job.parts]))
            return False
        self._rid += 1
        self.b.sent(link, job.rows)  # type: ignore[arg-type]
        if not job.batched:
            v.queue.popleft()
        for p, _, _ in job.parts:
            p.running = True
        link.inflight[self._rid] = job
        self.sent.append((link, job))
        return True

    def request(self, rows: int | None = 1, key: Any = "k") -> Pending:
        p = Pending(None, len(self.v.queue), "m", self.v)  # type: ignore[arg-type]
        p.t0 = self.clock()
        p.rows = rows
        p.key = (key,) if rows is not None else ()
        self.v.queue.append(p)
        return p

    def busy(self, link: Link, for_s: float) -> None:
        """`link` holds one running record expected to end `for_s` from now."""
        self._rid += 1
        link.inflight[self._rid] = Job(1, [], batched=True, pad=1)
        link.busy_until = self.clock() + for_s

    def pump(self) -> bool:
        return self.b.pump_queue(self.v)

    def rows_sent(self) -> list[tuple[int, int]]:
        """(request rows, padding) of each record sent, in order."""
        return [(j.rows - j.pad, j.pad) for _, j in self.sent]


# ---- pure helpers --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rows", "allowed", "want"),
    [
        (1, (2, 4, 8), 2),
        (2, (2, 4, 8), 2),
        (3, (2, 4, 8), 4),
        (5, (2, 4, 8), 8),
        (8, (2, 4, 8), 8),
        (9, (2, 4, 8), 9),  # none holds it: unpadded
        (3, (), 3),
    ],
)
def test_padded_size(rows: int, allowed: tuple[int, ...], want: int) -> None:
    assert padded_size(rows, allowed) == want


def test_gather_takes_same_key_rows_in_order_up_to_the_limit() -> None:
    h = Harness()
    a = h.request(3)
    h.request(2, key="other")  # different signature/outputs/shape: skipped
    c = h.request(3)
    h.request(3)  # 9 rows would pass 8: the batch stops before it
    e = h.request(1)
    parts, rows = gather(h.v.queue, 8)
    assert parts == [a, c] and rows == 6
    assert e not in parts


def test_gather_stops_at_exactly_full() -> None:
    h = Harness()
    ps = [h.request(2) for _ in range(5)]
    parts, rows = gather(h.v.queue, 8)
    assert parts == ps[:4] and rows == 8


def test_pick_takes_the_least_loaded_serving_link_with_room() -> None:
    h = Harness(links=3)
    w0, w1, w2 = h.links
    h.busy(w0, 1.0)
    w1.serving = False
    assert pick(h.v, 2) is w2
    h.busy(w2, 1.0)
    h.busy(w2, 1.0)
    assert pick(h.v, 2) is w0  # w2 is at the limit, w1 does not serve
    h.busy(w0, 1.0)
    assert pick(h.v, 2) is None


# ---- when a batch is sent --------------------------------------------------------------
def test_idle_worker_gets_a_lone_request_at_once_padded() -> None:
    h = Harness(allowed=(2, 4, 8))
    h.request(1)
    assert h.pump()
    assert h.rows_sent() == [(1, 1)]  # 1 row padded to the smallest allowed size, 2
    assert not h.v.queue and not h.timers.armed and not h.b.due
    assert h.stats["m"].batch_sizes == {1: 1} and h.stats["m"].padding_rows == 1


def test_busy_worker_waits_for_company_until_just_before_it_finishes() -> None:
    h = Harness(batch_timeout_us=1000)
    (w,) = h.links
    h.busy(w, 300 * US)
    t_end = w.busy_until
    h.request(1)
    h.clock.advance(10 * US)
    h.request(1)
    assert not h.pump()
    assert not h.sent and len(h.v.queue) == 2
    # Due just before the running record's expected end, the timer at the batch timeout.
    due_at, _ = h.b.due[id(h.v)]
    assert due_at == pytest.approx(t_end - HANDOVER_S)
    assert [d for d, _ in h.timers.armed] == [pytest.approx(990 * US)]
    h.clock.now = due_at - 1 * US
    assert h.b.due_now() == []
    h.clock.now = due_at
    assert h.b.due_now() == [h.v]
    h.clock.advance(1 * US)  # exactly at the due time a float rounding may re-time it
    assert h.pump()
    assert h.rows_sent() == [(2, 0)]
    assert not h.b.due


def test_batch_timeout_sends_when_it_comes_before_the_worker_finishes() -> None:
    h = Harness(batch_timeout_us=1000, allowed=(2, 4, 8))
    (w,) = h.links
    h.busy(w, 50e-3)  # a long record: the timeout comes first
    for _ in range(3):
        h.request(1)
    assert not h.pump() and not h.sent
    due_at, _ = h.b.due[id(h.v)]
    assert due_at == pytest.approx(h.clock() + 1000 * US)
    h.clock.advance(999 * US)
    assert not h.pump() and not h.sent  # not yet
    h.clock.advance(2 * US)
    assert h.pump()
    assert h.rows_sent() == [(3, 1)]  # 3 rows padded to 4


def test_full_batch_goes_at_once_to_a_busy_worker() -> None:
    h = Harness(max_batch_size=8, batch_timeout_us=1_000_000)
    (w,) = h.links
    h.busy(w, 1.0)
    for _ in range(7):
        h.request(1)
    assert not h.pump() and not h.sent
    h.request(1)
    assert h.pump()
    assert h.rows_sent() == [(8, 0)]
    assert not h.v.queue


def test_full_by_rows_not_by_count() -> None:
    """Fewer requests than max_batch_size can still fill it: 2 x 4 rows = 8."""
    h = Harness(max_batch_size=8, batch_timeout_us=1_000_000)
    (w,) = h.links
    h.busy(w, 1.0)
    h.request(4)
    h.request(4)
    assert h.pump()
    assert h.rows_sent() == [(8, 0)]


def test_rows_counted_across_arrivals_and_removals() -> None:
    """The wait's row count (kept between arrivals, not recounted) follows the queue
    as requests come and go: it neither sends early nor misses a full batch."""
    h = Harness(max_batch_size=8, batch_timeout_us=1_000_000)
    (w,) = h.links
    h.busy(w, 1.0)
    a = h.request(4)
    assert not h.pump()
    b = h.request(1)
    assert not h.pump()  # 5 rows: still waiting
    h.v.queue.remove(b)  # expired while queued (replies.expire)...
    c = h.request(4)  # ...and another came: as many requests as counted, 8 rows
    assert h.pump()
    assert h.rows_sent() == [(8, 0)]
    assert [p for p, _, _ in h.sent[0][1].parts] == [a, c]


def test_partial_batch_leaves_the_rest_queued_in_order() -> None:
    h = Harness(max_batch_size=8, batch_timeout_us=1000, allowed=(2, 4, 8))
    a = h.request(3)
    b = h.request(2, key="other")
    c = h.request(3)
    d = h.request(3)
    assert h.pump()  # idle worker: what is queued goes at once
    ((_, first),) = h.sent
    assert [p for p, _, _ in first.parts] == [a, c]  # d would pass 8 rows
    assert [(s, r) for _, s, r in first.parts] == [(0, 3), (3, 3)]
    assert (first.rows, first.pad) == (8, 2)  # 6 rows padded to 8
    # Now busy: the rest waits for company, in queue order.
    assert list(h.v.queue) == [b, d] and id(h.v) in h.b.due


def test_worker_holds_at_most_two_batches() -> None:
    h = Harness(max_batch_size=2, worker_inflight=4)
    for _ in range(6):
        h.request(1)
    assert h.pump()
    assert h.rows_sent() == [(2, 0), (2, 0)]
    assert len(h.v.queue) == 2


def test_full_ring_puts_the_batch_back_in_order() -> None:
    h = Harness(max_batch_size=8)
    (w,) = h.links
    w.room = False
    ps = [h.request(1) for _ in range(3)]
    assert not h.pump()
    assert list(h.v.queue) == ps and not h.sent


def test_done_requests_at_the_head_are_dropped() -> None:
    h = Harness(max_batch_size=8)
    a = h.request(1)
    b = h.request(1)
    a.done = True
    assert h.pump()
    assert [p for p, _, _ in h.sent[0][1].parts] == [b]


def test_no_serving_worker_keeps_the_queue() -> None:
    h = Harness()
    h.links[0].serving = False
    h.request(1)
    assert not h.pump()
    assert len(h.v.queue) == 1 and not h.sent and not h.b.due


def test_timer_fires_the_callers_pump_once() -> None:
    h = Harness(batch_timeout_us=1000)
    h.busy(h.links[0], 1.0)
    h.request(1)
    h.pump()
    h.pump()  # still waiting: the timer is not armed twice
    assert len(h.timers.armed) == 1
    _, fire = h.timers.armed[0]
    fire()
    assert h.pumped == [h.v] and not h.b.timers


# ---- max_batch_size lowered under a queue ------------------------------------------------
def test_lowered_max_batch_size_runs_earlier_requests_alone() -> None:
    h = Harness(max_batch_size=8, batch_timeout_us=1000)
    (w,) = h.links
    h.busy(w, 1.0)
    h.busy(w, 1.0)  # at its limit of two records: everything stays queued
    big = [h.request(4) for _ in range(3)]
    assert not h.pump() and not h.sent
    h.registry.set_model(ModelSettings("m", max_batch_size=2, batch_timeout_us=1000))
    small = h.request(1)  # (2 rows would fill a batch, which goes at once)
    w.inflight.clear()
    w.busy_until = 0.0  # the worker finished both
    assert h.pump()
    # The 4-row requests accepted under the old limit each run alone (unbatched),
    # two records at most; nothing wedges behind them.
    assert [(j.batched, j.rows, j.parts[0][0]) for _, j in h.sent] == [
        (False, 4, big[0]),
        (False, 4, big[1]),
    ]
    h.sent.clear()
    w.inflight.clear()
    w.busy_until = 0.0
    assert h.pump()
    assert [(j.batched, j.parts[0][0]) for _, j in h.sent] == [(False, big[2])]
    # The new request follows the new limit: batched, waiting for company while busy.
    assert list(h.v.queue) == [small]
    due_at, _ = h.b.due[id(h.v)]
    h.clock.now = due_at + 1 * US
    w.inflight.clear()
    assert h.pump()
    assert [(j.batched, j.parts[0][0]) for _, j in h.sent[1:]] == [(True, small)]
    assert not h.v.queue


def test_unbatched_model_sends_each_request_alone() -> None:
    h = Harness(max_batch_size=0, worker_inflight=3)
    for _ in range(4):
        h.request(2)
    assert h.pump()
    assert [(j.batched, j.rows, j.pad) for _, j in h.sent] == [(False, 2, 0)] * 3
    assert len(h.v.queue) == 1


def test_request_without_a_shared_batch_dimension_runs_alone() -> None:
    h = Harness(max_batch_size=8)
    h.request(None)
    assert h.pump()
    ((_, job),) = h.sent
    assert not job.batched and job.rows == 0


# ---- the just-in-time estimate -------------------------------------------------------------
def test_sent_and_finished_track_the_expected_end() -> None:
    h = Harness()
    (w,) = h.links
    t0 = h.clock()
    h.b.sent(w, 4)  # type: ignore[arg-type]
    assert w.busy_until == pytest.approx(t0 + 240 * US)
    h.b.sent(w, 2)  # type: ignore[arg-type]
    # Queued behind the first: ends after it.
    assert w.busy_until == pytest.approx(t0 + 240 * US + 220 * US)
    w.inflight = {1: Job(1, [], batched=True, pad=2)}
    h.clock.advance(500 * US)
    h.b.finished(w, 4, 250_000)  # type: ignore[arg-type]
    assert w.service.seen == [(4, 250e-6)]
    assert w.busy_until == pytest.approx(h.clock() + 220 * US)  # what is left: 2 rows
    h.b.finished(w, 2, -1)  # type: ignore[arg-type]  # expired unseen: no observation
    assert w.service.seen == [(4, 250e-6)]


def test_within_the_handover_of_the_expected_end_sends_at_once() -> None:
    """A busy worker within HANDOVER_S of its expected end (or past it: the estimate
    was short) gets the queue at once: waiting could only leave it idle."""
    h = Harness(batch_timeout_us=1000)
    (w,) = h.links
    h.busy(w, 100 * US)
    h.request(1)
    h.clock.advance(100 * US - HANDOVER_S + 1 * US)
    assert h.pump()
    assert h.rows_sent() == [(1, 0)]
