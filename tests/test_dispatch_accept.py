"""The Dispatcher's side of batching on arrival, with the real Dispatcher, batcher,
checks and rings, driven request by request (no sockets, no worker process: the test
reads the request ring as the worker would). A busy worker's next batch leaves as soon
as the queued rows fill it, whatever the number of requests holding them; until then
arrivals only queue."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ringserve.frontend.dispatch import Dispatcher
from ringserve.frontend.links import WorkerLink
from ringserve.frontend.pending import Job
from ringserve.frontend.regions import Regions
from ringserve.frontend.registry import AVAILABLE, Registry, VersionState
from ringserve.frontend.settings import FrontendSettings, ModelSettings
from ringserve.ipc import layout as L
from ringserve.ipc import records
from ringserve.ipc.requests import InferRequest, WireTensor
from ringserve.ipc.ring import Ring

from idleloop import IdleLoop

RING = 1 << 20


class _Conn:
    regions: Regions | None = None
    takes_frames = False

    def reply(self, msg: dict[str, Any], large: bool = False) -> None:
        raise AssertionError(f"no reply expected here: {msg}")

    def send_frame(self, frame: bytes) -> None:
        raise AssertionError("no reply expected here (a packed one)")

    def request_done(self) -> None:
        pass


class Rig:
    def __init__(self, max_batch_size: int) -> None:
        reg = Registry((ModelSettings("m", max_batch_size=max_batch_size, batch_timeout_us=10**6),))
        self.v: VersionState = reg.version_state("m", 1)
        self.v.state = AVAILABLE
        self.v.signatures = {
            "serving_default": {
                "inputs": {"x": {"dtype": "float32", "shape": [-1, 3]}},
                "outputs": {"y": {"dtype": "float32", "shape": [-1, 1]}},
            }
        }
        self.d = Dispatcher(FrontendSettings(), reg, IdleLoop())  # type: ignore[arg-type]
        self.maps = [mmap.mmap(-1, L.segment_size(RING)) for _ in range(2)]
        req, resp = (Ring(m, create=True, capacity=RING) for m in self.maps)
        self.worker_side = Ring(self.maps[0])
        self.worker_resp = Ring(self.maps[1])
        self.efds = [os.eventfd(0), os.eventfd(0)]
        self.link = WorkerLink(
            "w", "m", 1, req, resp, self.efds[0], self.efds[1], self.d.on_response
        )
        self.d.add_link(self.link)
        self.link.ready = True
        self.v.links.append(self.link)
        # Busy for a long while with a record of its own: arrivals wait for company.
        self.link.inflight[-1] = Job(1, [], batched=True, pad=1)
        self.link.busy_until = time.perf_counter() + 60.0
        self.ids = 0

    def close(self) -> None:
        for fd in self.efds:
            os.close(fd)
        self.link.alive = False

    def send(self, rows: int, conn: Any = None) -> None:
        self.ids += 1
        data = memoryview(np.zeros((rows, 3), dtype=np.float32).tobytes())
        req = InferRequest(
            id=self.ids,
            op="infer",
            model="m",
            inputs={"x": WireTensor(dtype="float32", shape=[rows, 3], data=data)},
        )
        self.d.infer(conn or _Conn(), self.ids, req)

    def answer(self) -> None:
        """Answer the oldest record in the ring as the worker would: y = zeros."""
        rec = self.worker_side.peek()
        assert rec is not None
        head, tensors = records.read(rec.payload)
        self.worker_side.release()
        y = np.zeros((tensors["x"].shape[0], 1), dtype=np.float32)
        out = [("y", "float32", y.shape, [y])]
        records.write(self.worker_resp, L.KIND_RESPONSE, [head[0], "", "", 1000], out)
        self.link.poll()

    def records(self) -> list[list[int]]:
        """The batch shapes the worker would find in its ring, taken out of it."""
        out = []
        while (rec := self.worker_side.peek()) is not None:
            _, tensors = records.read(rec.payload)
            out.append(list(tensors["x"].shape))
            self.worker_side.release()
        return out


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig(max_batch_size=8)
    yield r
    r.close()


def test_two_requests_whose_rows_fill_the_batch_leave_at_once(rig: Rig) -> None:
    rig.send(4)
    assert rig.records() == []  # waits for company while the worker is busy
    rig.send(4)
    assert rig.records() == [[8, 3]]
    assert not rig.v.queue


def test_single_rows_wait_until_the_batch_is_full(rig: Rig) -> None:
    for _ in range(7):
        rig.send(1)
        assert rig.records() == []
    rig.send(1)
    assert rig.records() == [[8, 3]]


def test_rows_that_cannot_fill_a_batch_exactly_keep_waiting(rig: Rig) -> None:
    """3 + 3 + 3 rows with room for 8: the first two make 6 and the third would pass
    8, so nothing is full; all three wait for the worker's expected finish."""
    for _ in range(3):
        rig.send(3)
    assert rig.records() == []
    assert [p.rows for p in rig.v.queue] == [3, 3, 3]


class _Collects(_Conn):
    takes_frames = True

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(frame)


def test_a_batch_answered_is_the_clients_turn_until_one_of_them_sends(rig: Rig) -> None:
    """The frontend's spin stops for a running batch while the clients answer the
    last one (frontend/polling.py): the dispatcher marks that on the version."""
    conn = _Collects()
    rig.link.inflight.clear()  # an idle worker: the first request leaves at once
    rig.send(1, conn)
    assert not rig.v.replied_last
    rig.answer()
    assert len(conn.frames) == 1 and rig.v.replied_last
    rig.send(1, conn)
    assert not rig.v.replied_last
