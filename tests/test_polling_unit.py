"""The frontend's spin decision (frontend/polling.py `Poller._sleep_until`), with the
batcher unit tests' fake clock and links: which waits are spun through and which are
slept through until a timer, a worker's eventfd or a client's request wakes the loop.
The real-process tests (test_batching.py) run the same loop end to end."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from test_batcher_unit import Harness

from ringserve.frontend.polling import SPIN_LEAD_S, Poller

# The dispatcher and links are stand-ins, which the compiled poller checks for.
pytestmark = pytest.mark.sources

US = 1e-6


def poller(h: Harness, replied_last: bool = False) -> Poller:
    d = SimpleNamespace(
        loop=None,
        links=h.links,
        batcher=h.b,
        registry=h.registry,
        settings=SimpleNamespace(max_spin_us=500),
    )
    for ln in h.links:
        ln.model, ln.version = "m", 1  # type: ignore[attr-defined]
    h.v.replied_last = replied_last
    return Poller(d)  # type: ignore[arg-type]


def test_a_lone_request_computing_is_spun_for() -> None:
    # Concurrency 1: the completion decides when the client gets its answer.
    h = Harness(max_batch_size=8)
    h.busy(h.links[0], 150 * US)
    p = poller(h)
    assert p._sleep_until(h.clock()) is None


def test_no_spin_for_a_running_batch_while_clients_answer_the_last_one() -> None:
    # A batch's replies just went out and no request came in since: the next
    # requests wake the loop from the socket, the running batch's completion rings
    # the worker's eventfd, and nothing is gained by polling for either.
    h = Harness(max_batch_size=8)
    h.busy(h.links[0], 300 * US)
    p = poller(h, replied_last=True)
    assert p._sleep_until(h.clock()) == math.inf
    h.v.replied_last = False  # a request came in: spin again
    assert p._sleep_until(h.clock()) is None


def test_an_unbatched_worker_is_spun_for_even_after_replies() -> None:
    h = Harness(max_batch_size=0)
    h.busy(h.links[0], 300 * US)
    p = poller(h, replied_last=True)
    assert p._sleep_until(h.clock()) is None


def test_a_due_batch_is_slept_toward_and_a_full_worker_is_not_spun_for() -> None:
    h = Harness(max_batch_size=8)
    w = h.links[0]
    h.busy(w, 500 * US)
    h.request(1)
    assert not h.pump()  # too few rows: timed just before the running batch ends
    p = poller(h)
    due = h.b.due[id(h.v)][0]
    assert p._sleep_until(h.clock()) == pytest.approx(due - SPIN_LEAD_S)
    h.busy(w, 500 * US)  # two records: it holds all it may
    h.b.due.clear()
    assert p._sleep_until(h.clock()) == math.inf
