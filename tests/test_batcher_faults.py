"""The batcher under reloads, failures and models whose outputs are not batch-major.

Models (tests/models.py): `paced` runs x[0, 0] iterations of a small loop before
answering y = 2x + 1 (so one request can hold the worker while others queue), and
`offby` answers one row more than it was given."""

from __future__ import annotations

import asyncio
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from ringserve.client.common import infer_request
from ringserve.frontend.dispatch import Dispatcher
from ringserve.frontend.links import WorkerLink
from ringserve.frontend.regions import Regions
from ringserve.frontend.registry import AVAILABLE, Registry
from ringserve.frontend.settings import FrontendSettings, ModelSettings
from ringserve.ipc import layout
from ringserve.ipc.ring import Ring

from conftest import models_toml
from faults import LoggedServer, code_of, collect, wait_for

ITERS_PER_SECOND = 200_000


def batching(max_batch: int) -> str:
    return f"[models.batching]\nmax_batch_size = {max_batch}\nbatch_timeout_us = 1000\n"


def x_of(rows: int, seed: int, iters: int = 0) -> np.ndarray:
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) + seed * 100
    x[0, 0] = iters
    return x


def test_reload_lowering_max_batch_size_under_queued_requests(model_root: Path) -> None:
    toml = models_toml(model_root, ["paced"], {"paced": batching(8)})
    with LoggedServer(toml, "worker_inflight = 1") as srv, srv.client() as c:
        hold = c.send(infer_request("paced", {"x": x_of(1, 0, 2 * ITERS_PER_SECOND)}, *[None] * 4))
        wait_for(lambda: srv.workers("paced")[0]["inflight"] == 1, 30, "the worker held", srv)
        xs = {
            c.send(infer_request("paced", {"x": x_of(4, i)}, *[None] * 4)): x_of(4, i)
            for i in range(1, 7)
        }
        with srv.client() as w:
            wait_for(lambda: w.stats()["models"]["paced"]["queue_depth"] == 6, 30, "6 queued", srv)
        server = srv.config_path.read_text().split("[[models]]")[0]
        srv.config_path.write_text(
            server + models_toml(model_root, ["paced"], {"paced": batching(2)})
        )
        assert srv.proc is not None
        srv.proc.send_signal(1)  # SIGHUP
        srv.wait_log("reloaded")
        replies = collect(c, [hold, *xs])
        for rid, x in xs.items():
            r = replies[rid][1]
            assert r["ok"], r
            got = np.frombuffer(r["outputs"]["y"]["data"], np.float32).reshape(4, 4)
            np.testing.assert_array_equal(got, x * 2 + 1)
        assert replies[hold][1]["ok"]
        # New requests follow the new limit; the server is not wedged.
        r = c.recv(c.send(infer_request("paced", {"x": x_of(4, 9)}, *[None] * 4)))
        assert code_of(r) == "INVALID_ARGUMENT" and "max_batch_size (2)" in r["error"]["message"]
        out = c.infer("paced", {"x": x_of(2, 9)})["y"]
        np.testing.assert_array_equal(out, x_of(2, 9) * 2 + 1)
        assert srv.stop() == 0


def test_output_first_dim_not_the_batch_rows_fails_the_batch(model_root: Path) -> None:
    toml = models_toml(model_root, ["offby"], {"offby": batching(8)})
    with LoggedServer(toml, "worker_inflight = 1") as srv, srv.client() as c:
        ids = [c.send(infer_request("offby", {"x": x_of(2, i)}, *[None] * 4)) for i in range(6)]
        replies = collect(c, ids)
        for _, r in replies.values():
            assert code_of(r) == "FAILED_PRECONDITION", r
            msg = r["error"]["message"]
            assert "expected a first dimension of exactly" in msg and "disable batching" in msg
        assert srv.stop() == 0


# ---- an exception inside the pump: one request, one answer ------------------------------
class Recorder:
    """The connection side of a Dispatcher: records what would be sent."""

    regions: Regions | None = None
    takes_frames = False  # replies as maps, to read them here

    def __init__(self) -> None:
        self.replies: list[dict[str, Any]] = []
        self.done = 0

    def reply(self, msg: dict[str, Any], large: bool = False) -> None:
        self.replies.append(msg)

    def send_frame(self, frame: bytes) -> None:
        raise AssertionError("takes_frames is False: replies come as maps")

    def request_done(self) -> None:
        self.done += 1


def test_an_exception_in_the_pump_answers_each_request_once() -> None:
    """A ring that raises on write (its views were released: a real ValueError from the
    real ring code). Before, the exception left `infer` after the request had joined
    the queue: the connection answered INTERNAL and the queue answered it again."""
    loop = asyncio.new_event_loop()
    cap = 1 << 16
    maps = [mmap.mmap(-1, layout.segment_size(cap)) for _ in range(2)]
    req, resp = (Ring(m, create=True, capacity=cap) for m in maps)
    efds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(2)]
    try:
        reg = Registry((ModelSettings("m"),))
        d = Dispatcher(FrontendSettings(max_spin_us=0), reg, loop)
        logged: list[str] = []
        d.log = logged.append
        link = WorkerLink("m/1/w0.1", "m", 1, req, resp, efds[0], efds[1], d.on_response)
        v = reg.version_state("m", 1)
        v.state = AVAILABLE
        spec = {"dtype": "float32", "shape": [-1, 4]}
        v.signatures = {"serving_default": {"inputs": {"x": spec}, "outputs": {"y": spec}}}
        v.links.append(link)
        d.add_link(link)
        link.ready = True
        req.close()  # every later write raises ValueError
        conn = Recorder()
        x = {"dtype": "float32", "shape": [1, 4], "data": bytes(16)}
        for cid in (1, 2, 3):
            d.infer(conn, cid, {"op": "infer", "model": "m", "inputs": {"x": x}})
        assert [r["id"] for r in conn.replies] == [1, 2, 3]
        assert all(r["error"]["code"] == "INTERNAL" for r in conn.replies)
        assert conn.done == 3 and not v.queue
        assert logged and "ValueError" in logged[0]
        d._pump(v)  # nothing left to answer twice
        assert len(conn.replies) == 3
    finally:
        loop.remove_reader(efds[1])
        loop.close()
        for fd in efds:
            os.close(fd)
