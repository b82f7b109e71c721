"""From a validated `infer` to a worker ring and back: queues, worker choice,
deadlines, completions.

Runs on the event loop and never blocks it: a full ring leaves the request queued,
and completions are found by polling the response rings for a short spin after
each submission (cheap, see ipc/wake.py) and otherwise by the worker's eventfd.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ringserve.ipc import errors as E
from ringserve.ipc import wake
from ringserve.ipc.errors import ProtocolError, clip
from ringserve.ipc.fdslice import FdSlice
from ringserve.ipc.ring import RecordTooLarge, RingCorrupt
from ringserve.ipc.tensors import (
    STRING,
    byte_view,
    check_wire_tensor,
    count,
    dtype_name,
    itemsize,
    shape_matches,
)
from ringserve.ipc.wire import INLINE_LIMIT

from .links import WorkerLink
from .recorder import OK
from .regions import Region, Regions
from .registry import ModelState, Registry, VersionState
from .settings import FrontendSettings
from .stats import ModelStats


class Replier(Protocol):
    regions: Regions | None

    def reply(self, msg: dict[str, Any], large: bool = False) -> None: ...
    def request_done(self) -> None: ...


class Pending:
    """One client request, from validation to its reply."""

    __slots__ = (
        "cid",
        "conn",
        "deadline",
        "done",
        "key",
        "model",
        "output_shm",
        "retried",
        "rows",
        "running",
        "sig",
        "t0",
        "tensors",
        "timer",
        "version",
        "wanted",
    )

    def __init__(self, conn: Replier, cid: int, model: str, version: VersionState) -> None:
        self.conn = conn
        self.cid = cid
        self.model = model
        self.version = version
        self.sig = "serving_default"
        self.tensors: list[Any] = []
        self.wanted: list[str] | None = None
        self.output_shm: dict[str, tuple[Region, int, int]] = {}
        self.rows: int | None = None  # batch dimension shared by every input, if any
        self.key: tuple[Any, ...] = ()  # what must match to share a batch
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.t0 = time.perf_counter()
        self.running = False
        self.retried = False
        self.done = False


class Job:
    """What one ring record carries: one request, or a batch of them."""

    __slots__ = ("batched", "pad", "parts", "rows", "version")

    def __init__(
        self, version: int, parts: list[tuple[Pending, int, int]], batched: bool, pad: int = 0
    ) -> None:
        self.version = version
        self.parts = parts  # (request, first row, rows)
        self.batched = batched
        self.pad = pad  # zero rows appended to reach an allowed batch size
        self.rows = sum(r for _, _, r in parts) + pad


# How long before a busy worker's expected finish its next batch is sent: the time to
# write the batch into the ring and for the spinning worker to see it.
HANDOVER_S = 50e-6
# Longest accepted timeout_ms (about 24.8 days): a timer far past that overflows the
# loop's clock arithmetic.
MAX_TIMEOUT_MS = 2**31 - 1


class Dispatcher:
    def __init__(
        self, settings: FrontendSettings, registry: Registry, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.loop = loop
        self.links: list[WorkerLink] = []
        self.stats: dict[str, ModelStats] = {m: ModelStats() for m in registry.models}
        self._next_rid = 0
        self._polling = False
        self._spin_until = 0.0
        self._spin_s = settings.max_spin_us / 1e6
        self._batch_timers: dict[int, asyncio.TimerHandle] = {}
        # Batches to form at a perf_counter time, checked on every poll tick (the
        # loop's timers round to milliseconds; a batch runs in hundreds of microseconds).
        self._due: dict[int, tuple[float, VersionState]] = {}
        # Deadlines are kept on perf_counter; workers compare with time.monotonic.
        self._clock_skew = time.perf_counter() - time.monotonic()
        self.workers_hook: Callable[[], list[dict[str, Any]]] = list
        # Called when a worker's ring can't be trusted; the supervisor kills it.
        self.on_broken: Callable[[WorkerLink, str], None] = lambda link, why: None
        self.log: Callable[[str], None] = lambda text: print(f"ringserve: {text}", file=sys.stderr)
        # The requests the pump is placing right now, failed if a step raises.
        self._in_hand: list[Pending] | None = None

    def apply_settings(self, settings: FrontendSettings) -> None:
        self.settings = settings
        self._spin_s = settings.max_spin_us / 1e6

    def model_stats(self, name: str) -> ModelStats:
        st = self.stats.get(name)
        if st is None:
            st = self.stats[name] = ModelStats()
        return st

    # ---- links ---------------------------------------------------------------------
    def add_link(self, link: WorkerLink) -> None:
        self.links.append(link)
        self.loop.add_reader(link.resp_efd, self._on_efd, link)

    def link_ready(self, link: WorkerLink) -> None:
        link.ready = True
        self._pump(self.registry.version_state(link.model, link.version))

    def remove_link(self, link: WorkerLink, reason: str) -> None:
        """The worker is gone: answer what it held, stop listening to it."""
        if link in self.links:
            self.links.remove(link)
            self.loop.remove_reader(link.resp_efd)
        if link.alive:
            try:
                link.poll()  # completions it published before dying still count
            except Exception:
                pass
        busy = link.busy_id()  # the record it was computing; later ones never started
        link.alive = False
        m = self.registry.models.get(link.model)
        v = m.versions.get(link.version) if m is not None else None
        others = v is not None and any(ln.serving for ln in v.links if ln is not link)
        retry: list[Pending] = []
        for rid, job in sorted(link.inflight.items()):
            for p, _, _ in job.parts:
                if p.done:
                    continue
                if rid != busy and others and not p.retried:
                    p.retried = True
                    p.running = False
                    retry.append(p)
                else:
                    self._fail(p, E.UNAVAILABLE, f"worker {link.key} {reason} while running it")
        link.inflight.clear()
        if v is not None:
            if link in v.links:
                v.links.remove(link)
            v.queue.extendleft(reversed(retry))
            self._pump(v)

    def fail_queue(self, v: VersionState, code: str, message: str) -> None:
        while v.queue:
            p = v.queue.popleft()
            if not p.done:
                self._fail(p, code, message)

    # ---- infer ---------------------------------------------------------------------
    def infer(self, conn: Replier, cid: int, msg: dict[str, Any]) -> None:
        """Validate and queue; the reply comes later through `conn`. Raises ProtocolError
        for a request that is answered at once."""
        model, v = self.registry.lookup(msg)
        try:
            self._accept(conn, cid, msg, model, v)
        except ProtocolError as exc:
            # Answered at once, but answered: counted like any other reply.
            self.model_stats(model.name).fail(exc.code)
            v.metrics.refused(exc.code)
            raise

    def _accept(
        self, conn: Replier, cid: int, msg: dict[str, Any], model: ModelState, v: VersionState
    ) -> None:
        sig_name = msg.get("signature", "serving_default")
        if not isinstance(sig_name, str):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'signature': expected a string, received {clip(sig_name)}",
            )
        sig = v.signatures.get(sig_name)
        if sig is None:
            raise ProtocolError(
                E.NOT_FOUND,
                f"field 'signature': model {model.name!r} version {v.number} has signatures "
                f"{sorted(v.signatures)}, received {clip(sig_name)}",
            )
        ms = model.settings
        p = Pending(conn, cid, model.name, v)
        p.sig = sig_name
        p.tensors = self._check_inputs(msg.get("inputs"), sig["inputs"], conn.regions)
        p.wanted = self._check_outputs(msg.get("outputs"), sig["outputs"])
        if "output_shm" in msg:
            p.output_shm = self._check_output_shm(msg["output_shm"], sig["outputs"], conn)
        timeout = msg.get("timeout_ms")
        if timeout is None:
            timeout = self.settings.default_timeout_ms or None
        elif (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0 < timeout < MAX_TIMEOUT_MS  # NaN fails both comparisons
        ):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'timeout_ms': expected a positive finite number below {MAX_TIMEOUT_MS}, "
                f"received {clip(timeout)}",
            )
        dims = {t[2][0] if t[2] else None for t in p.tensors}
        if len(dims) == 1 and None not in dims:
            p.rows = dims.pop()
            p.key = (sig_name, tuple(p.wanted or ()), *((t[0], tuple(t[2][1:])) for t in p.tensors))
        if ms.max_batch_size and p.rows is not None and p.rows > ms.max_batch_size:
            name = p.tensors[0][0]
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"inputs.{name}.shape[0]: expected at most max_batch_size "
                f"({ms.max_batch_size}) rows, received {p.rows}",
            )
        if not v.serving_links():
            raise ProtocolError(
                E.UNAVAILABLE, f"model {model.name!r} version {v.number}: no live worker"
            )
        st = self.model_stats(model.name)
        if self.queued(v) >= ms.max_queue:
            st.rejected += 1
            raise ProtocolError(
                E.RESOURCE_EXHAUSTED,
                f"model {model.name!r}: queue full (max_queue {ms.max_queue})",
            )
        if timeout:
            p.deadline = p.t0 + timeout / 1000.0
            p.timer = self.loop.call_later(timeout / 1000.0, self._expire, p)
        v.queue.append(p)
        due = self._due.get(id(v))
        if (
            due is not None
            and 1 < len(v.queue) < ms.max_batch_size
            and time.perf_counter() < due[0]
        ):
            # A batch is already timed and this request cannot fill it: no news. (Alone
            # in the queue, it pumps: the requests that timed the batch may have
            # expired or left, and the worker may be idle by now.)
            return
        # Also the due check while a burst of requests keeps the loop from a poll tick.
        self._pump(v)

    def _check_inputs(
        self, inputs: Any, spec: dict[str, Any], regions: Regions | None
    ) -> list[Any]:
        if not isinstance(inputs, dict):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                "field 'inputs': expected a map of name to tensor, "
                f"received {type(inputs).__name__}",
            )
        missing = sorted(set(spec) - set(inputs))
        if missing:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'inputs': missing {missing}; expected {sorted(spec)}, "
                f"received {clip(sorted(map(str, inputs)))}",
            )
        extra = sorted(map(str, set(inputs) - set(spec)))
        if extra:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'inputs': unknown {clip(extra)}; expected {sorted(spec)}, "
                f"received {clip(sorted(map(str, inputs)))}",
            )
        out = []
        for name in sorted(spec):
            want = spec[name]
            field = f"inputs.{name}"
            dtype, shape, data = check_wire_tensor(
                field, inputs[name], self.settings.max_tensor_rank
            )
            if "shm" in inputs[name]:
                if regions is None:
                    raise ProtocolError(
                        E.INVALID_ARGUMENT,
                        f"{field}.shm: shared-memory tensors need a Unix-socket connection",
                    )
                if dtype == STRING:
                    raise ProtocolError(
                        E.INVALID_ARGUMENT,
                        f"{field}.shm: expected a numeric dtype in shared memory, received string",
                    )
                region = regions.get(f"{field}.shm", data)
                data = region.slice(f"{field}.shm", data, count(shape) * itemsize(dtype))
            if dtype != want["dtype"]:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.dtype: expected {want['dtype']}, received {dtype}",
                )
            if want["shape"] is not None and not shape_matches(want["shape"], shape):
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.shape: expected {want['shape']} (-1 = any), received {clip(shape)}",
                )
            out.append((name, dtype, shape, data))
        return out

    def _check_outputs(self, wanted: Any, spec: dict[str, Any]) -> list[str] | None:
        if wanted is None:
            return None
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'outputs': expected a list of output names, received {clip(wanted)}",
            )
        unknown = sorted(set(wanted) - set(spec))
        if unknown:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'outputs': expected names from {sorted(spec)}, received {clip(unknown)}",
            )
        return list(dict.fromkeys(wanted))

    def _check_output_shm(
        self, refs: Any, spec: dict[str, Any], conn: Replier
    ) -> dict[str, tuple[Region, int, int]]:
        if conn.regions is None:
            raise ProtocolError(
                E.INVALID_ARGUMENT, "field 'output_shm': needs a Unix-socket connection"
            )
        if not isinstance(refs, dict):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                "field 'output_shm': expected a map of output name to region, "
                f"received {clip(refs)}",
            )
        out = {}
        for name, ref in refs.items():
            field = f"output_shm.{clip(name, 64)}"
            if name not in spec:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}: expected an output name from {sorted(spec)}, received {clip(name)}",
                )
            if spec[name]["dtype"] == STRING:
                raise ProtocolError(
                    E.INVALID_ARGUMENT, f"{field}: string outputs cannot go to shared memory"
                )
            region = conn.regions.get(field, ref)
            off, size = region.check(field, ref, None)
            out[name] = (region, off, size)
        return out

    # ---- scheduling ----------------------------------------------------------------
    def _pick(self, v: VersionState, limit: int) -> WorkerLink | None:
        best = None
        for ln in v.links:
            if ln.serving and len(ln.inflight) < limit:
                if best is None or len(ln.inflight) < len(best.inflight):
                    best = ln
        return best

    def _pump(self, v: VersionState) -> None:
        """`_pump_queue`, and never raises: it is called from `infer` after the request
        joined the queue (an exception there would answer it once as an error and
        leave it queued to be answered again) and from loop callbacks. A request the
        failing step held is answered INTERNAL, exactly once, so the queue moves on."""
        self._in_hand = None
        try:
            self._pump_queue(v)
        except Exception as exc:
            held = self._in_hand or (list(v.queue)[:1] if v.queue else [])
            self._in_hand = None
            self.log(f"internal error dispatching {v.model}/{v.number}: {exc!r}")
            for p in held:
                if not p.done and not p.running:
                    self._fail(p, E.INTERNAL, f"dispatching the request: {type(exc).__name__}")
            rest = [p for p in v.queue if not p.done]
            v.queue.clear()  # in place: callers up the stack may hold it
            v.queue.extend(rest)

    def _pump_queue(self, v: VersionState) -> None:
        """Move queued requests onto the least loaded workers that have room.

        With batching the dispatch is work-conserving: an idle worker gets whatever is
        queued at once (waiting could only add latency). A busy worker gets its next
        batch when the batch is full, when its oldest request has waited
        batch_timeout_us, or just before the running batch is expected to end
        (servicetime.py), whichever comes first. A worker holds at most two batches
        (one running, the next ready), so it never idles while a batch waits, and
        batches grow while it is busy.
        """
        self._due.pop(id(v), None)
        ms = self.registry.models[v.model].settings if v.model in self.registry.models else None
        if ms is None:
            return
        batching = ms.max_batch_size > 0
        limit = min(2, self.settings.worker_inflight) if batching else self.settings.worker_inflight
        q = v.queue
        submitted = False
        while q:
            while q and q[0].done:
                q.popleft()
            if not q:
                break
            link = self._pick(v, limit)
            if link is None:
                break
            head = q[0]
            self._in_hand = [head]
            # A request queued before a reload lowered max_batch_size cannot join a
            # batch any more: it runs alone (it was accepted; refusing it now would
            # break that), instead of wedging the queue behind it.
            if batching and head.rows is not None and head.rows <= ms.max_batch_size:
                now = time.perf_counter()
                wait = head.t0 + ms.batch_timeout_us / 1e6 - now
                # A busy worker gets its next batch just before it is expected to
                # finish: it never idles, and the batch takes in whatever arrives
                # until then. An idle one gets what is queued at once.
                busy_for = link.busy_until - now - HANDOVER_S if link.inflight else 0.0
                if wait > 0 and busy_for > 0 and len(q) < ms.max_batch_size:
                    # Too few requests to fill a batch (each has a row or more): wait,
                    # without scanning the queue on every arrival.
                    self._batch_later(v, min(wait, busy_for), wait)
                    break
                parts, rows = self._gather(q, ms.max_batch_size)
                if rows < ms.max_batch_size and wait > 0 and busy_for > 0:
                    self._batch_later(v, min(wait, busy_for), wait)
                    break
                self._in_hand = parts
                job = self._batch_job(v, parts, rows, ms.allowed_batch_sizes)
            else:
                job = Job(v.number, [(head, 0, head.rows or 0)], batched=False)
            if not self._submit(link, job, v):
                break
            self._in_hand = None
            submitted = True
        if submitted:
            self._start_polling()

    def _gather(self, q: Any, max_rows: int) -> tuple[list[Pending], int]:
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

    def _batch_job(
        self, v: VersionState, parts: list[Pending], rows: int, allowed: tuple[int, ...]
    ) -> Job:
        q = v.queue
        chosen = {id(p) for p in parts}
        if all(id(q[i]) in chosen for i in range(len(parts))):
            for _ in parts:  # the usual case: the batch is the head of the queue
                q.popleft()
        else:
            rest = [p for p in q if id(p) not in chosen]
            q.clear()  # in place: _pump holds a reference to this queue
            q.extend(rest)
        padded = next((a for a in allowed if a >= rows), rows)
        out = []
        start = 0
        for p in parts:
            assert p.rows is not None
            out.append((p, start, p.rows))
            start += p.rows
        self.model_stats(v.model).batch(rows, padded - rows)
        v.metrics.batched(rows, padded - rows)
        return Job(v.number, out, batched=True, pad=padded - rows)

    def _batch_later(self, v: VersionState, wait: float, timeout: float) -> None:
        """Pump `v` again in `wait` seconds: on a poll tick while the frontend spins,
        and in any case by the loop timer at the batch timeout."""
        self._due[id(v)] = (time.perf_counter() + wait, v)
        self._batch_timer(v, timeout)

    def _batch_timer(self, v: VersionState, wait: float) -> None:
        key = id(v)
        if key in self._batch_timers:
            return

        def fire() -> None:
            self._batch_timers.pop(key, None)
            self._pump(v)

        self._batch_timers[key] = self.loop.call_later(wait, fire)

    def _submit(self, link: WorkerLink, job: Job, v: VersionState) -> bool:
        first = job.parts[0][0]
        pad = job.pad
        if job.batched:
            tensors = []
            for i, (name, dtype, shape, _) in enumerate(first.tensors):
                total = sum(r for _, _, r in job.parts) + pad
                chunks: list[Any] = []
                for p, _, _ in job.parts:
                    data = p.tensors[i][3]
                    chunks.extend(data) if dtype == STRING else chunks.append(data)
                if pad:
                    per_row = count(shape[1:])
                    if dtype == STRING:
                        chunks.extend([b""] * (pad * per_row))
                    else:
                        chunks.append(bytes(pad * per_row * itemsize(dtype)))
                tensors.append((name, dtype, [total, *shape[1:]], chunks))
        else:
            tensors = [
                (n, dt, sh, data if dt == STRING else [data]) for n, dt, sh, data in first.tensors
            ]
        self._next_rid += 1
        rid = self._next_rid
        try:
            # The worker drops a record whose every request expired before it starts.
            deadlines = [p.deadline for p, _, _ in job.parts]
            deadline = 0.0 if not all(deadlines) else max(deadlines) - self._clock_skew
            ok = link.submit(rid, [rid, first.sig, first.wanted, deadline], tensors)
        except RecordTooLarge as exc:
            for p, _, _ in job.parts:
                self._fail(p, E.RESOURCE_EXHAUSTED, f"field 'inputs': {exc}")
            if not job.batched:
                v.queue.popleft()
            return True
        if not ok:
            if job.batched:  # put the batch back at the front, in order
                v.queue.extendleft(reversed([p for p, _, _ in job.parts]))
            return False
        now = time.perf_counter()
        link.busy_until = max(link.busy_until, now) + link.service.estimate(job.rows)
        if not job.batched:
            v.queue.popleft()
        queued = v.metrics.queue
        for p, _, _ in job.parts:
            p.running = True  # tensors are kept: a retry after a crash needs them
            if not p.retried:
                queued.observe(now - p.t0)
        link.inflight[rid] = job
        self._check_region_reads(job)
        return True

    def _check_region_reads(self, job: Job) -> None:
        """A request whose client region shrank under it read short (zeros in the
        ring, never SIGBUS): answer it now; its rows of the batch are computed and
        dropped, the other requests of the batch are not affected."""
        for p, _, _ in job.parts:
            for t in p.tensors:
                data = t[3]
                if type(data) is FdSlice and data.short is not None:
                    self._fail(p, E.FAILED_PRECONDITION, data.describe_short())
                    break

    # ---- completions ---------------------------------------------------------------
    def _start_polling(self) -> None:
        self._spin_until = time.perf_counter() + self._spin_s
        if not self._polling and self._spin_s > 0:
            self._polling = True
            for link in self.links:
                link.set_sleeping(False)
            self.loop.call_soon(self._poll_tick)

    def service(self) -> bool:
        """Pick up completions and batches that are due; True while work is in flight.

        Called on every poll tick, and between the frames of a long read: a socket
        buffer can hold a hundred requests, a millisecond of decoding, and a worker
        that finished meanwhile would otherwise wait that long for its next batch."""
        busy = False
        for link in self.links:
            if link.inflight:
                self._poll(link)
                busy = busy or bool(link.inflight)
        if self._due:
            now = time.perf_counter()
            for v in [v for at, v in self._due.values() if at <= now]:
                self._pump(v)
        return busy

    def _poll_tick(self) -> None:
        """One turn of the frontend's spin: poll the rings, let the loop run, again."""
        busy = self.service()
        if busy and time.perf_counter() < self._spin_until:
            # Give the CPU to the worker if it shares ours: a spin must never slow the
            # computation it waits for.
            os.sched_yield()
            self.loop.call_soon(self._poll_tick)
            return
        self._polling = False
        for link in self.links:
            link.set_sleeping(True)
        wake.fence()  # then look once more: a completion may have raced the flag
        for link in self.links:
            if link.inflight:
                self._poll(link)

    def _on_efd(self, link: WorkerLink) -> None:
        wake.drain(link.resp_efd)
        self._poll(link)
        # The worker also rings when it freed ring room without answering anything.
        m = self.registry.models.get(link.model)
        v = m.versions.get(link.version) if m is not None else None
        if v is not None and v.queue:
            self._pump(v)

    def _poll(self, link: WorkerLink) -> None:
        """Never raises: it runs inside loop callbacks, and an exception there would
        strand the completions of every worker behind it."""
        try:
            link.poll()
        except Exception as exc:  # RingCorrupt, or anything a hostile record provokes
            if not link.alive:
                return
            link.alive = False  # read nothing more from it; its exit answers the rest
            why = str(exc) if isinstance(exc, RingCorrupt) else f"{type(exc).__name__}: {exc}"
            self.on_broken(link, why[:500])

    def on_response(self, link: WorkerLink, head: list[Any], outs: dict[str, Any]) -> None:
        rid, code, message = head[0], head[1], head[2]
        job = link.inflight.pop(rid, None)
        if job is None:
            return
        m = self.registry.models.get(link.model)
        v = m.versions.get(link.version) if m is not None else None
        if head[3] >= 0:  # -1: expired unseen, says nothing of the service time
            link.service.observe(job.rows, head[3] / 1e9)
            if v is not None:
                v.metrics.computed(head)
        est = link.service.estimate
        link.busy_until = time.perf_counter() + sum(est(j.rows) for j in link.inflight.values())
        # Refill the worker before building the replies: the worker computes the next
        # batch while this one is split, encoded and sent.
        if v is not None and v.queue:
            self._pump(v)
        try:
            self._complete(job, code, message, outs)
        except Exception as exc:  # a reply we could not build still gets an answer
            for p, _, _ in job.parts:
                if not p.done:
                    self._fail(p, E.INTERNAL, f"building the reply: {type(exc).__name__}: {exc}")
        self._spin_until = time.perf_counter() + self._spin_s

    def _complete(self, job: Job, code: str, message: str, outs: dict[str, Any]) -> None:
        if code:
            for p, _, _ in job.parts:
                if not p.done:
                    self._fail(p, code, message)
        elif not job.batched:
            p = job.parts[0][0]
            if not p.done:
                self._succeed(p, job.version, outs)
        else:
            self._split(job, outs)

    def _split(self, job: Job, outs: dict[str, np.ndarray[Any, Any]]) -> None:
        total = job.rows  # the requests' rows plus padding
        bad = {k: list(a.shape) for k, a in outs.items() if a.ndim == 0 or a.shape[0] != total}
        # Numeric outputs small enough to pack at once: each reply takes a byte slice
        # of the ring (msgpack copies it), with the dtype and row shape worked out once.
        rows_out = None
        small = all(a.dtype.kind != "O" and a.nbytes <= 65536 for a in outs.values())
        if not bad and small and all(a.flags.c_contiguous for a in outs.values()):
            rows_out = [
                (k, dtype_name(a.dtype), list(a.shape[1:]), a.strides[0], byte_view(a))
                for k, a in outs.items()
            ]
        for p, start, rows in job.parts:
            if p.done:
                continue
            if bad:
                # Slicing an output whose first dimension is not the batch's rows would
                # hand each request someone else's numbers: fail the batch instead.
                self._fail(
                    p,
                    E.FAILED_PRECONDITION,
                    f"outputs: expected a first dimension of exactly {total} (the rows of "
                    f"the batch) to split the batch, received shapes {bad}; "
                    "this model's outputs are not batch-major: disable batching for it",
                )
            elif rows_out is not None and not p.output_shm:
                wire = {
                    k: {
                        "dtype": dt,
                        "shape": [rows, *tail],
                        "data": mv[start * stride : (start + rows) * stride],
                    }
                    for k, dt, tail, stride, mv in rows_out
                }
                self._reply_ok(p, job.version, wire, large=False)
            else:
                self._succeed(p, job.version, {k: a[start : start + rows] for k, a in outs.items()})

    def _succeed(self, p: Pending, version: int, outs: dict[str, np.ndarray[Any, Any]]) -> None:
        wire: dict[str, Any] = {}
        total = 0
        for name, a in outs.items():
            dest = p.output_shm.get(name)
            if dest is not None:
                region, off, size = dest
                if a.nbytes > size:
                    self._fail(
                        p,
                        E.INVALID_ARGUMENT,
                        f"output_shm.{name}.size: expected at least {a.nbytes} bytes for shape "
                        f"{list(a.shape)}, received {size}",
                    )
                    return
                try:
                    region.write(f"output_shm.{name}", off, a)
                except ProtocolError as exc:
                    self._fail(p, exc.code, exc.message)
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
        self._reply_ok(p, version, wire, large=total > 65536)

    def _reply_ok(self, p: Pending, version: int, wire: dict[str, Any], large: bool) -> None:
        if p.done:  # answered already: one request, one reply, whatever path got here
            return
        self._finish(p)
        msg = {"id": p.cid, "ok": True, "model": p.model, "version": version, "outputs": wire}
        p.conn.reply(msg, large=large)
        seconds = time.perf_counter() - p.t0
        self.model_stats(p.model).ok(seconds)
        p.version.metrics.answered(OK, seconds)

    def _fail(self, p: Pending, code: str, message: str) -> None:
        if p.done:
            return
        self._finish(p)
        p.conn.reply({"id": p.cid, "ok": False, "error": {"code": code, "message": message}})
        self.model_stats(p.model).fail(code)
        p.version.metrics.answered(code, time.perf_counter() - p.t0)

    def _finish(self, p: Pending) -> None:
        p.done = True
        p.tensors = []
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        p.conn.request_done()

    def _expire(self, p: Pending) -> None:
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
        self._fail(p, E.DEADLINE_EXCEEDED, f"field 'timeout_ms': deadline passed {where}")

    def cancel_connection(self, conn: Replier) -> None:
        """The client went away: drop its queued requests (running ones finish unseen)."""
        for m in self.registry.models.values():
            for v in m.versions.values():
                if not any(p.conn is conn for p in v.queue):
                    continue
                keep = []
                for p in v.queue:
                    if p.conn is not conn:
                        keep.append(p)
                    elif not p.done:
                        p.done = True
                        p.tensors = []
                        self.model_stats(p.model).cancelled += 1
                        if p.timer is not None:
                            p.timer.cancel()
                v.queue.clear()  # in place: a _pump up the stack may hold it
                v.queue.extend(keep)

    def queued(self, v: VersionState) -> int:
        """Requests waiting: expired and cancelled ones leave the queue at once."""
        return len(v.queue)

    def inflight(self, v: VersionState) -> int:
        """Requests handed to a worker of `v` and not answered yet."""
        return sum(
            sum(not p.done for p, _, _ in job.parts)
            for ln in v.links
            for job in ln.inflight.values()
        )

    def inflight_total(self) -> int:
        queued = sum(
            self.queued(v) for m in self.registry.models.values() for v in m.versions.values()
        )
        return queued + sum(len(ln.inflight) for ln in self.links)
