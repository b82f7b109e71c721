"""From a validated `infer` to a worker ring and back: queues, records, deadlines,
completions, worker links coming and going.

The pieces it ties: request checks (checks.py), the batcher's decisions (batcher.py),
replies (replies.py), and when to look for completions and due batches (polling.py).
Runs on the event loop and never blocks it: a full ring leaves the request queued,
and completions are found by the poller's spin after each submission and otherwise
by the worker's eventfd.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError
from ringserve.ipc.requests import InferRequest
from ringserve.ipc.ring import RecordTooLarge
from ringserve.ipc.tensors import STRING, count, itemsize

from . import checks, fairness
from .batcher import Batcher
from .links import WorkerLink
from .pending import NO_TENSORS, Job, Pending, Replier
from .polling import Poller
from .registry import ModelState, Registry, VersionState
from .replies import Replies
from .settings import FrontendSettings
from .stats import ModelStats


class Dispatcher:
    def __init__(
        self, settings: FrontendSettings, registry: Registry, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.loop = loop
        self.links: list[WorkerLink] = []
        self.replies = Replies(registry.models)
        self._typed_checks = checks.TypedInputChecks()
        self.stats: dict[str, ModelStats] = self.replies.stats
        self.batcher = Batcher(
            settings, registry, self._submit, self._pump, self.replies.model_stats, loop.call_later
        )
        self._next_rid = 0
        # Deadlines are kept on perf_counter; workers compare with time.monotonic.
        self._clock_skew = time.perf_counter() - time.monotonic()
        self.workers_hook: Callable[[], list[dict[str, Any]]] = list
        # Called when a worker's ring can't be trusted; the supervisor kills it.
        self.on_broken: Callable[[WorkerLink, str], None] = lambda link, why: None
        self.log: Callable[[str], None] = lambda text: print(f"ringserve: {text}", file=sys.stderr)
        self.poller = Poller(self)

    def apply_settings(self, settings: FrontendSettings) -> None:
        self.settings = settings
        self.batcher.settings = settings
        self.poller.spin_s = settings.max_spin_us / 1e6

    def model_stats(self, name: str) -> ModelStats:
        return self.replies.model_stats(name)

    # ---- links ---------------------------------------------------------------------
    def add_link(self, link: WorkerLink) -> None:
        self.links.append(link)
        self.loop.add_reader(link.resp_efd, self.poller.on_efd, link)

    def link_ready(self, link: WorkerLink) -> None:
        link.ready = True
        for v in self._versions_of(link):
            self._pump(v)

    def _versions_of(self, link: WorkerLink) -> list[VersionState]:
        """The versions a worker serves: its group's (in round-robin order), or its one."""
        if link.group:
            return fairness.rotation(link)
        m = self.registry.models.get(link.model)
        v = m.versions.get(link.version) if m is not None else None
        return [v] if v is not None else []

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
        versions = self._versions_of(link)
        # Per version (a group's worker held several): requests to hand to a sibling.
        retry: dict[int, tuple[VersionState, list[Pending]]] = {}
        for rid, job in sorted(link.inflight.items()):
            v = job.parts[0][0].version
            others = any(ln.serving for ln in v.links if ln is not link)
            for p, _, _ in job.parts:
                if p.done:
                    continue
                if rid != busy and others and not p.retried:
                    p.retried = True
                    p.running = False
                    retry.setdefault(id(v), (v, []))[1].append(p)
                else:
                    self.replies.fail(
                        p, E.UNAVAILABLE, f"worker {link.key} {reason} while running it"
                    )
        link.inflight.clear()
        for v in versions:
            if link in v.links:
                v.links.remove(link)
        for v, ps in retry.values():
            v.queue.extendleft(reversed(ps))
            if v not in versions:
                versions.append(v)
        for v in versions:
            self._pump(v)

    def fail_queue(self, v: VersionState, code: str, message: str) -> None:
        while v.queue:
            p = v.queue.popleft()
            if not p.done:
                self.replies.fail(p, code, message)

    # ---- infer ---------------------------------------------------------------------
    def infer(self, conn: Replier, cid: int, msg: dict[str, Any] | InferRequest) -> None:
        """Validate and queue; the reply comes later through `conn`. Raises ProtocolError
        for a request that is answered at once.

        `msg` is the decoded map, or the typed form of a plain infer (ipc/requests.py):
        the same checks, the same errors; the typed one's inputs are checked once per
        layout (checks.TypedInputChecks)."""
        if isinstance(msg, InferRequest):
            model = self.registry.model(msg.model)
            v = model.resolve(msg.version)
        else:
            model, v = self.registry.lookup(msg)
        v.replied_last = False
        try:
            self._accept(conn, cid, msg, model, v)
        except ProtocolError as exc:
            # Answered at once, but answered: counted like any other reply.
            self.model_stats(model.name).fail(exc.code)
            v.metrics.refused(exc.code)
            raise

    def _accept(
        self,
        conn: Replier,
        cid: int,
        msg: dict[str, Any] | InferRequest,
        model: ModelState,
        v: VersionState,
    ) -> None:
        ms = model.settings
        p = Pending(conn, cid, model.name, v)
        if isinstance(msg, InferRequest):
            sig = checks.check_signature(msg.signature, model, v)
            p.sig = msg.signature
            p.tensors = self._typed_checks.check(
                msg.inputs, sig["inputs"], self.settings.max_tensor_rank
            )
            p.wanted = checks.check_outputs(msg.outputs, sig["outputs"])
            timeout_ms: Any = msg.timeout_ms
        else:
            assert isinstance(msg, dict)
            sig_name = msg.get("signature", "serving_default")
            sig = checks.check_signature(sig_name, model, v)
            p.sig = sig_name
            p.tensors = checks.check_inputs(
                msg.get("inputs"), sig["inputs"], conn.regions, self.settings.max_tensor_rank
            )
            p.wanted = checks.check_outputs(msg.get("outputs"), sig["outputs"])
            if "output_shm" in msg:
                p.output_shm = checks.check_output_shm(
                    msg["output_shm"], sig["outputs"], conn.regions
                )
            timeout_ms = msg.get("timeout_ms")
        timeout = checks.check_timeout(timeout_ms, self.settings.default_timeout_ms)
        checks.check_rows(p, ms.max_batch_size)
        if not v.has_serving_link():
            raise ProtocolError(
                E.UNAVAILABLE, f"model {model.name!r} version {v.number}: no live worker"
            )
        if self.queued(v) >= ms.max_queue:
            self.model_stats(model.name).rejected += 1
            raise ProtocolError(
                E.RESOURCE_EXHAUSTED,
                f"model {model.name!r}: queue full (max_queue {ms.max_queue})",
            )
        if timeout:
            p.deadline = p.t0 + timeout / 1000.0
            p.timer = self.loop.call_later(timeout / 1000.0, self.replies.expire, p)
        v.queue.append(p)
        if (
            1 < len(v.queue)
            and self.batcher.timed(v)
            and not self.batcher.may_fill(v, ms.max_batch_size)
        ):
            # A batch is already timed and the queued rows cannot fill it: no news.
            # (Alone in the queue, it pumps: the requests that timed the batch may have
            # expired or left, and the worker may be idle by now.)
            return
        # Also the due check while a burst of requests keeps the loop from a poll tick.
        self._pump(v)

    # ---- records -------------------------------------------------------------------
    def _pump(self, v: VersionState) -> None:
        """The batcher's `pump_queue`, and never raises: it is called from `infer`
        after the request joined the queue (an exception there would answer it once as
        an error and leave it queued to be answered again) and from loop callbacks. A
        request the failing step held is answered INTERNAL, exactly once, so the queue
        moves on."""
        b = self.batcher
        b.in_hand = None
        try:
            if b.pump_queue(v) or (b.due and not self.poller.spinning):
                self.poller.start()  # (a batch timed while the spin sleeps: wake for it)
        except Exception as exc:
            held = b.take_in_hand() or (list(v.queue)[:1] if v.queue else [])
            self.log(f"internal error dispatching {v.model}/{v.number}: {exc!r}")
            for p in held:
                if not p.done and not p.running:
                    self.replies.fail(
                        p, E.INTERNAL, f"dispatching the request: {type(exc).__name__}"
                    )
            rest = [p for p in v.queue if not p.done]
            v.queue.clear()  # in place: callers up the stack may hold it
            v.queue.extend(rest)

    def _submit(self, link: WorkerLink, job: Job, v: VersionState) -> bool:
        parts = job.parts
        first = parts[0][0]
        pad = job.pad
        if job.batched:
            tensors = []
            for i, (name, dtype, shape, _) in enumerate(first.tensors):
                if dtype == STRING:
                    chunks: list[Any] = []
                    for p, _, _ in parts:
                        chunks.extend(p.tensors[i][3])
                else:
                    chunks = [p.tensors[i][3] for p, _, _ in parts]
                if pad:
                    per_row = count(shape[1:])
                    if dtype == STRING:
                        chunks.extend([b""] * (pad * per_row))
                    else:
                        chunks.append(bytes(pad * per_row * itemsize(dtype)))
                tensors.append((name, dtype, [job.rows, *shape[1:]], chunks))
        else:
            tensors = [
                (n, dt, sh, data if dt == STRING else [data]) for n, dt, sh, data in first.tensors
            ]
        self._next_rid += 1
        rid = self._next_rid
        try:
            # The worker drops a record whose every request expired before it starts.
            deadline = 0.0
            if first.deadline:  # (none unless every request of the record has one)
                deadlines = [p.deadline for p, _, _ in parts]
                if all(deadlines):
                    deadline = max(deadlines) - self._clock_skew
            head = [rid, first.sig, first.wanted, deadline]
            if link.group:  # a group's worker holds several models: name the one
                head += [v.model, v.number]
                fairness.served(link, v)
            ok = link.submit(rid, head, tensors)
        except RecordTooLarge as exc:
            for p, _, _ in job.parts:
                self.replies.fail(p, E.RESOURCE_EXHAUSTED, f"field 'inputs': {exc}")
            if not job.batched:
                v.queue.popleft()
            return True
        if not ok:
            if job.batched:  # put the batch back at the front, in order
                v.queue.extendleft(reversed([p for p, _, _ in job.parts]))
            return False
        now = self.batcher.sent(link, job.rows)
        if not job.batched:
            v.queue.popleft()
        queued = v.metrics.queue
        for p, _, _ in job.parts:
            p.running = True  # tensors are kept: a retry after a crash needs them
            if not p.retried:
                queued.observe(now - p.t0)
        link.inflight[rid] = job
        # A request whose client region shrank under it read short: answer it now; its
        # rows of the batch are computed and dropped, the others are not affected.
        for p, _, _ in job.parts:
            why = checks.short_read(p)
            if why is not None:
                self.replies.fail(p, E.FAILED_PRECONDITION, why)
        return True

    # ---- completions ---------------------------------------------------------------
    def on_response(self, link: WorkerLink, head: list[Any], outs: dict[str, Any]) -> None:
        rid, code, message = head[0], head[1], head[2]
        job = link.inflight.pop(rid, None)
        if job is None:
            return
        v = job.parts[0][0].version
        if head[3] >= 0:  # -1: expired unseen
            v.metrics.computed(head)
        self.batcher.finished(link, job.rows, head[3])
        # Refill the worker before building the replies: the worker computes the next
        # batch while this one is split, encoded and sent. A group's worker offers the
        # room to its models in turn (fairness.py).
        if link.group:
            for s in fairness.rotation(link):
                if s.queue:
                    self._pump(s)
        elif v.queue:
            self._pump(v)
        try:
            self.replies.complete(job, code, message, outs)
        except Exception as exc:  # a reply we could not build still gets an answer
            for p, _, _ in job.parts:
                if not p.done:
                    self.replies.fail(
                        p, E.INTERNAL, f"building the reply: {type(exc).__name__}: {exc}"
                    )
        v.replied_last = job.batched
        self.poller.extend_spin()

    # ---- connections and counts ----------------------------------------------------
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
                        p.tensors = NO_TENSORS
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
            if job.parts[0][0].version is v  # a group's worker holds other models' too
        )

    def inflight_total(self) -> int:
        queued = sum(
            self.queued(v) for m in self.registry.models.values() for v in m.versions.values()
        )
        return queued + sum(len(ln.inflight) for ln in self.links)
