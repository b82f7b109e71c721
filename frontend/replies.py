"""From a worker's completion to each request's reply: a batch split into its
requests' rows, outputs packed or written to client regions, failures and expiry,
and the statistics every answer counts in. One request, one reply: a second answer
by any path is dropped (`Pending.done`)."""

from __future__ import annotations

from time import perf_counter
from typing import Any

import numpy as np

from ringserve.ipc import errors as E
from ringserve.ipc.batchreplies import BatchReplies, Layout
from ringserve.ipc.errors import ProtocolError
from ringserve.ipc.tensors import STRING, byte_view, dtype_name
from ringserve.ipc.wire import INLINE_LIMIT

from .pending import NO_TENSORS, Job, Pending
from .recorder import OK
from .stats import ModelStats

# Reply layouts remembered (model, version, output names, dtypes and row shapes).
TEMPLATES = 256


def output_layout(outs: dict[str, np.ndarray[Any, Any]]) -> list[Layout]:
    """Per output of a batch: name, protocol dtype, row shape, bytes of a row."""
    return [(k, dtype_name(a.dtype), list(a.shape[1:]), a.strides[0]) for k, a in outs.items()]


class Replies:
    def __init__(self, models: Any = ()) -> None:
        self.stats: dict[str, ModelStats] = {m: ModelStats() for m in models}
        self._templates: dict[tuple[Any, ...], BatchReplies] = {}

    def model_stats(self, name: str) -> ModelStats:
        st = self.stats.get(name)
        if st is None:
            st = self.stats[name] = ModelStats()
        return st

    def complete(self, job: Job, code: str, message: str, outs: dict[str, Any]) -> None:
        if code:
            for p, _, _ in job.parts:
                if not p.done:
                    self.fail(p, code, message)
        elif not job.batched:
            p = job.parts[0][0]
            if not p.done:
                self.succeed(p, job.version, outs)
        else:
            self.split(job, outs)

    def split(self, job: Job, outs: dict[str, np.ndarray[Any, Any]]) -> None:
        total = job.rows  # the requests' rows plus padding
        bad = {k: list(a.shape) for k, a in outs.items() if a.ndim == 0 or a.shape[0] != total}
        # Numeric outputs small enough to pack at once: each reply takes a byte slice
        # of the ring (copied into its frame), with the dtype and row shape worked out
        # once a batch, or once a layout for msgpack replies (ipc/batchreplies.py).
        small = not bad and all(
            a.dtype.kind != "O" and a.nbytes <= 65536 and a.flags.c_contiguous
            for a in outs.values()
        )
        views = [byte_view(a) for a in outs.values()] if small else []
        layout: list[Layout] | None = None
        frames: BatchReplies | None = None
        # A batch's packed replies share one clock reading and one statistics lookup.
        now = 0.0
        st: ModelStats | None = None
        for p, start, rows in job.parts:
            if p.done:
                continue
            if bad:
                # Slicing an output whose first dimension is not the batch's rows would
                # hand each request someone else's numbers: fail the batch instead.
                self.fail(
                    p,
                    E.FAILED_PRECONDITION,
                    f"outputs: expected a first dimension of exactly {total} (the rows of "
                    f"the batch) to split the batch, received shapes {bad}; "
                    "this model's outputs are not batch-major: disable batching for it",
                )
            elif small and not p.output_shm and p.conn.takes_frames:
                if frames is None or st is None:
                    frames = self._frames(p.model, job.version, outs)
                    st = self.model_stats(p.model)
                    now = perf_counter()
                frame = frames.frame(p.cid, start, rows, views)
                self.finish(p)
                p.conn.send_frame(frame)
                self.answered_ok(p, st, now)
            elif small and not p.output_shm:
                if layout is None:
                    layout = output_layout(outs)
                wire = {
                    k: {
                        "dtype": dt,
                        "shape": [rows, *tail],
                        "data": mv[start * stride : (start + rows) * stride],
                    }
                    for (k, dt, tail, stride), mv in zip(layout, views, strict=True)
                }
                self.reply_ok(p, job.version, wire, large=False)
            else:
                self.succeed(p, job.version, {k: a[start : start + rows] for k, a in outs.items()})

    def _frames(
        self, model: str, version: int, outs: dict[str, np.ndarray[Any, Any]]
    ) -> BatchReplies:
        """The pieces of the replies for this model, version and output layout, encoded
        the first time a batch has them (a bounded cache: cleared when full)."""
        key = (model, version, *[(k, a.dtype.str, a.shape[1:]) for k, a in outs.items()])
        frames = self._templates.get(key)
        if frames is None:
            if len(self._templates) >= TEMPLATES:
                self._templates.clear()
            frames = self._templates[key] = BatchReplies(model, version, output_layout(outs))
        return frames

    def succeed(self, p: Pending, version: int, outs: dict[str, np.ndarray[Any, Any]]) -> None:
        wire: dict[str, Any] = {}
        total = 0
        for name, a in outs.items():
            dest = p.output_shm.get(name)
            if dest is not None:
                region, off, size = dest
                if a.nbytes > size:
                    self.fail(
                        p,
                        E.INVALID_ARGUMENT,
                        f"output_shm.{name}.size: expected at least {a.nbytes} bytes for shape "
                        f"{list(a.shape)}, received {size}",
                    )
                    return
                try:
                    region.write(f"output_shm.{name}", off, a)
                except ProtocolError as exc:
                    self.fail(p, exc.code, exc.message)
                    return
                ref = {"region": region.name, "offset": off, "size": a.nbytes}
                wire[name] = {"dtype": dtype_name(a.dtype), "shape": list(a.shape), "shm": ref}
                continue
            total += a.nbytes
            if a.dtype.kind == "O":
                wire[name] = {"dtype": STRING, "shape": list(a.shape), "data": a.ravel().tolist()}
            else:
                # A small output is packed into the reply at once, so a view of the ring
                # saves a copy; a large one is sent by reference after the ring record
                # is released, so it must be copied out.
                small = a.nbytes <= INLINE_LIMIT and a.flags.c_contiguous
                data = byte_view(a) if small else a.tobytes()
                wire[name] = {"dtype": dtype_name(a.dtype), "shape": list(a.shape), "data": data}
        self.reply_ok(p, version, wire, large=total > 65536)

    def reply_ok(self, p: Pending, version: int, wire: dict[str, Any], large: bool) -> None:
        if p.done:  # answered already: one request, one reply, whatever path got here
            return
        self.finish(p)
        msg = {"id": p.cid, "ok": True, "model": p.model, "version": version, "outputs": wire}
        p.conn.reply(msg, large)
        self.answered_ok(p, self.model_stats(p.model), perf_counter())

    def answered_ok(self, p: Pending, st: ModelStats, now: float) -> None:
        """Count an ok reply sent at `now` in the model's statistics and metrics."""
        seconds = now - p.t0
        st.ok(seconds)
        p.version.metrics.answered(OK, seconds)

    def fail(self, p: Pending, code: str, message: str) -> None:
        if p.done:
            return
        self.finish(p)
        p.conn.reply({"id": p.cid, "ok": False, "error": {"code": code, "message": message}})
        self.model_stats(p.model).fail(code)
        p.version.metrics.answered(code, perf_counter() - p.t0)

    def finish(self, p: Pending) -> None:
        p.done = True
        p.tensors = NO_TENSORS
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        p.conn.request_done()

    def expire(self, p: Pending) -> None:
        if p.done:
            return
        p.timer = None
        if not p.running:
            where = "while queued (it was not computed)"
            try:  # out of the queue now, so len(queue) counts live requests only
                p.version.queue.remove(p)
            except ValueError:
                pass
        else:
            where = "after it was handed to a worker (it is not computed if it had not started)"
        self.model_stats(p.model).expired += 1
        self.fail(p, E.DEADLINE_EXCEEDED, f"field 'timeout_ms': deadline passed {where}")
