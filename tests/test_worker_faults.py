"""A worker that writes garbage into its response ring: the frontend treats the ring as
corrupt (kills that worker, answers what it held, respawns it) and keeps serving every
other model. The garbage is written for real, into the worker's own ring, through a
duplicate of the worker's fd (pidfd_getfd): what a broken or hostile worker could
write, published the way the worker publishes."""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ringserve.ipc import layout, records
from ringserve.ipc.ring import Ring

from conftest import models_toml
from faults import (
    FOREVER,
    LoggedServer,
    code_of,
    send_many,
    slow_inputs,
    take_fd,
    wait_for,
    worker_spec,
)

GARBAGE_HEADS: list[list[Any]] = [
    [],  # short: used to raise IndexError inside the poll callback
    ["rid", 3, None, "busy"],  # every field of the wrong type
    [1, "NOT_A_CODE", "m", -5],  # an unknown code, an impossible busy time
]


def write_garbage(pid: int, head: list[Any]) -> None:
    spec = worker_spec(pid)
    fd = take_fd(pid, spec["resp_fd"])
    efd = take_fd(pid, spec["resp_efd"])
    try:
        with mmap.mmap(fd, spec["segment_bytes"]) as m:
            ring = Ring(m)
            assert records.write(ring, layout.KIND_RESPONSE, head, []) is not None
            ring.close()
        os.eventfd_write(efd, 1)
    finally:
        os.close(fd)
        os.close(efd)


def ready_slow_workers(srv: LoggedServer, n: int, not_pids: set[int]) -> list[dict[str, Any]]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (
            len(ws := [w for w in srv.workers("slow") if w["state"] == "ready"]) == n
            and not {w["pid"] for w in ws} & not_pids
            and ws
        ),
        120,
        f"{n} ready slow workers, none of {sorted(not_pids)}",
        srv,
    )


class Bystander(threading.Thread):
    """Another model served all along, with the right values."""

    def __init__(self, srv: LoggedServer) -> None:
        super().__init__(daemon=True)
        self.srv = srv
        self.served = 0
        self.errors: list[BaseException] = []
        self.halt = threading.Event()

    def run(self) -> None:
        x = np.ones((2, 16), np.float32)
        try:
            with self.srv.client() as c:
                want = c.infer("linear", {"x": x})["y"]
                while not self.halt.is_set():
                    np.testing.assert_array_equal(c.infer("linear", {"x": x})["y"], want)
                    self.served += 1
        except BaseException as exc:
            self.errors.append(exc)


def test_garbage_response_heads_kill_only_that_worker(model_root: Path) -> None:
    """Three workers of one model, each fed a different malformed head at once."""
    n = len(GARBAGE_HEADS)
    toml = models_toml(
        model_root, ["linear", "slow"], {"slow": f"  [models.instances]\n  count = {n}"}
    )
    with LoggedServer(toml, "ring_bytes = 1048576") as srv:
        other = Bystander(srv)
        other.start()
        victims = ready_slow_workers(srv, n, set())
        with srv.client() as c, srv.client() as watch:
            # Each worker holds a request it would never finish by itself.
            ids = send_many(c, "slow", [slow_inputs(n=FOREVER)] * n)
            wait_for(
                lambda: all(
                    w["inflight"] == 1 for w in watch.stats()["workers"] if w["model"] == "slow"
                ),
                30,
                "one slow request in flight on every worker",
                srv,
            )
            before = other.served
            for w, head in zip(victims, GARBAGE_HEADS, strict=True):
                write_garbage(w["pid"], head)
            for rid in ids:
                r = c.recv(rid)
                assert code_of(r) == "UNAVAILABLE", r
                assert "corrupt ring: response head" in r["error"]["message"], r
            assert len(srv.grep("corrupt response ring")) == n
            ready_slow_workers(srv, n, {w["pid"] for w in victims})
            assert c.infer("slow", slow_inputs(n=3))["y"].shape == (1, 4)
            wait_for(lambda: other.served > before, 10, "the other model served", srv)
        other.halt.set()
        other.join(30)
        assert not other.errors, other.errors
        assert not srv.grep("Traceback"), srv.log()
        assert srv.stop() == 0
