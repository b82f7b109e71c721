"""From a validated `infer` to a worker ring and back: queues, worker choice,
deadlines, completions.

Runs on the event loop and never blocks it: a full ring leaves the request queued,
and completions are found by polling the response rings for a short spin after
each submission (cheap, see ipc/wake.py) and otherwise by the worker's eventfd.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError
from ringserve.ipc.ring import RecordTooLarge
from ringserve.ipc.tensors import STRING, check_wire_tensor, shape_matches

from .links import WorkerLink
from .registry import Registry, VersionState
from .settings import FrontendSettings
from .stats import ModelStats


class Replier(Protocol):
    def reply(self, msg: dict[str, Any], large: bool = False) -> None: ...
    def request_done(self) -> None: ...


class Pending:
    __slots__ = (
        "cid",
        "conn",
        "deadline",
        "done",
        "link",
        "model",
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
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.t0 = time.perf_counter()
        self.link: WorkerLink | None = None
        self.done = False


class Dispatcher:
    def __init__(
        self, settings: FrontendSettings, registry: Registry, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.loop = loop
        self.links: list[WorkerLink] = []
        self.stats = {m.name: ModelStats() for m in settings.models}
        self._next_rid = 0
        self._polling = False
        self._spin_until = 0.0
        self._spin_s = settings.max_spin_us / 1e6
        self.workers_hook: Callable[[], list[dict[str, Any]]] = list

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
        link.alive = False
        for p in list(link.inflight.values()):
            self._fail(p, E.UNAVAILABLE, f"worker {link.key} {reason} while running the request")
        link.inflight.clear()
        v = self.registry.models[link.model].versions.get(link.version)
        if v is not None:
            if link in v.links:
                v.links.remove(link)
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
        model = self.registry.model(msg.get("model"))
        version = msg.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ProtocolError(
                E.INVALID_ARGUMENT, f"field 'version': expected an integer, received {version!r}"
            )
        v = model.resolve(version)
        sig_name = msg.get("signature", "serving_default")
        if not isinstance(sig_name, str):
            raise ProtocolError(
                E.INVALID_ARGUMENT, f"field 'signature': expected a string, received {sig_name!r}"
            )
        sig = v.signatures.get(sig_name)
        if sig is None:
            raise ProtocolError(
                E.NOT_FOUND,
                f"field 'signature': model {model.name!r} version {v.number} has signatures "
                f"{sorted(v.signatures)}, received {sig_name!r}",
            )
        p = Pending(conn, cid, model.name, v)
        p.sig = sig_name
        p.tensors = self._check_inputs(msg.get("inputs"), sig["inputs"])
        p.wanted = self._check_outputs(msg.get("outputs"), sig["outputs"])
        timeout = msg.get("timeout_ms", self.settings.default_timeout_ms or None)
        if timeout is not None:
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"field 'timeout_ms': expected a non-negative number, received {timeout!r}",
                )
        if "output_shm" in msg:
            raise ProtocolError(
                E.INVALID_ARGUMENT, "field 'output_shm': shared-memory outputs need shm_register"
            )
        if not v.serving_links():
            raise ProtocolError(
                E.UNAVAILABLE, f"model {model.name!r} version {v.number}: no live worker"
            )
        if len(v.queue) >= model.settings.max_queue:
            self.stats[model.name].rejected += 1
            raise ProtocolError(
                E.RESOURCE_EXHAUSTED,
                f"model {model.name!r}: queue full (max_queue {model.settings.max_queue})",
            )
        if timeout:
            p.deadline = p.t0 + timeout / 1000.0
            p.timer = self.loop.call_later(timeout / 1000.0, self._expire, p)
        v.queue.append(p)
        self._pump(v)

    def _check_inputs(self, inputs: Any, spec: dict[str, Any]) -> list[Any]:
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
                f"received {sorted(map(str, inputs))}",
            )
        extra = sorted(map(str, set(inputs) - set(spec)))
        if extra:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'inputs': unknown {extra}; expected {sorted(spec)}, "
                f"received {sorted(map(str, inputs))}",
            )
        out = []
        for name in sorted(spec):
            want = spec[name]
            field = f"inputs.{name}"
            dtype, shape, data = check_wire_tensor(field, inputs[name])
            if "shm" in inputs[name]:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.shm: region not registered on this connection (use shm_register)",
                )
            if dtype != want["dtype"]:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.dtype: expected {want['dtype']}, received {dtype}",
                )
            if want["shape"] is not None and not shape_matches(want["shape"], shape):
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.shape: expected {want['shape']} (-1 = any), received {shape}",
                )
            out.append((name, dtype, shape, data if dtype == STRING else [data]))
        return out

    def _check_outputs(self, wanted: Any, spec: dict[str, Any]) -> list[str] | None:
        if wanted is None:
            return None
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'outputs': expected a list of output names, received {wanted!r}",
            )
        unknown = sorted(set(wanted) - set(spec))
        if unknown:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'outputs': expected names from {sorted(spec)}, received {unknown}",
            )
        return list(dict.fromkeys(wanted))

    def _pump(self, v: VersionState) -> None:
        """Move queued requests onto the least loaded workers that have room."""
        limit = self.settings.worker_inflight
        submitted = False
        q = v.queue
        while q:
            links = [ln for ln in v.links if ln.serving and len(ln.inflight) < limit]
            if not links:
                break
            link = min(links, key=lambda ln: len(ln.inflight))
            p = q[0]
            if p.done:
                q.popleft()
                continue
            self._next_rid += 1
            rid = self._next_rid
            try:
                ok = link.submit(rid, [rid, p.sig, p.wanted], p.tensors)
            except RecordTooLarge as exc:
                q.popleft()
                self._fail(p, E.RESOURCE_EXHAUSTED, f"field 'inputs': {exc}")
                continue
            if not ok:
                break  # ring full: retried when a completion frees room
            q.popleft()
            p.tensors = []
            p.link = link
            link.inflight[rid] = p
            submitted = True
        if submitted:
            self._start_polling()

    # ---- completions ---------------------------------------------------------------
    def _start_polling(self) -> None:
        self._spin_until = time.perf_counter() + self._spin_s
        if not self._polling and self._spin_s > 0:
            self._polling = True
            self.loop.call_soon(self._poll_tick)

    def _poll_tick(self) -> None:
        busy = False
        for link in self.links:
            if link.inflight:
                link.poll()
                busy = busy or bool(link.inflight)
        if busy and time.perf_counter() < self._spin_until:
            self.loop.call_soon(self._poll_tick)
        else:
            self._polling = False

    def _on_efd(self, link: WorkerLink) -> None:
        from ringserve.ipc import wake

        wake.drain(link.resp_efd)
        link.poll()

    def on_response(self, link: WorkerLink, head: list[Any], outs: dict[str, Any]) -> None:
        rid, code, message = head[0], head[1], head[2]
        p = link.inflight.pop(rid, None)
        if p is None:
            return
        if not p.done:
            if code:
                self._fail(p, code, message)
            else:
                self._succeed(p, link.version, outs)
        self._spin_until = time.perf_counter() + self._spin_s
        v = self.registry.models[link.model].versions.get(link.version)
        if v is not None and v.queue:
            self._pump(v)

    def _succeed(self, p: Pending, version: int, outs: dict[str, np.ndarray[Any, Any]]) -> None:
        wire = {}
        total = 0
        for name, a in outs.items():
            total += a.nbytes
            if a.dtype == object:
                wire[name] = {"dtype": STRING, "shape": list(a.shape), "data": a.ravel().tolist()}
            else:
                wire[name] = {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}
        self._finish(p)
        self.stats[p.model].ok(time.perf_counter() - p.t0)
        msg = {"id": p.cid, "ok": True, "model": p.model, "version": version, "outputs": wire}
        p.conn.reply(msg, large=total > 65536)

    def _fail(self, p: Pending, code: str, message: str) -> None:
        self._finish(p)
        self.stats[p.model].fail(code)
        p.conn.reply({"id": p.cid, "ok": False, "error": {"code": code, "message": message}})

    def _finish(self, p: Pending) -> None:
        p.done = True
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        p.conn.request_done()

    def _expire(self, p: Pending) -> None:
        if p.done:
            return
        p.timer = None
        where = "while queued" if p.link is None else "while running"
        self.stats[p.model].expired += 1
        self._fail(p, E.DEADLINE_EXCEEDED, f"field 'timeout_ms': deadline passed {where}")

    def cancel_connection(self, conn: Replier) -> None:
        """The client went away: drop its queued requests (running ones finish unseen)."""
        for m in self.registry.models.values():
            for v in m.versions.values():
                for p in v.queue:
                    if p.conn is conn and not p.done:
                        p.done = True
                        self.stats[p.model].cancelled += 1
                        if p.timer is not None:
                            p.timer.cancel()

    def inflight_total(self) -> int:
        queued = sum(
            sum(1 for p in v.queue if not p.done)
            for m in self.registry.models.values()
            for v in m.versions.values()
        )
        return queued + sum(len(ln.inflight) for ln in self.links)
