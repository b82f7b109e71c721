"""One bench run: the request built from the model, then each load point measured with
what the server did meanwhile. Used by `ringserve bench` and `ringserve tune`."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .frames import RequestTemplate, infer_template
from .inputs import file_inputs, random_inputs, signature_spec
from .loops import closed_loop, open_loop
from .progress import Progress
from .serverside import ServerWatch
from .shmload import InputRegion
from .target import Target, call_ok

# Closed loop without --connections: one connection per request in flight up to this
# many, then they share (pipelined). A server accepts server.max_connections (256 by
# default) per listener, and other clients need some.
DEFAULT_MAX_CONNECTIONS = 64


@dataclass
class Request:
    """What each request of a run carries."""

    model: str
    batch_size: int = 1
    signature: str | None = None
    outputs: list[str] | None = None
    version: int | None = None
    input_file: str | None = None
    seed: int = 0
    timeout_ms: float | None = None
    shm: bool = False


@dataclass
class Load:
    """The load points of a run: a closed loop per concurrency, or an open loop per rate."""

    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    rates: list[float] = field(default_factory=list)
    poisson: bool = False
    duration_s: float = 5.0
    warmup_s: float = 1.0
    connections: int = 0  # closed loop: 0 = one per request in flight, at most 64
    max_inflight: int = 4096  # open loop
    seed: int = 0

    def points(self) -> list[tuple[str, float]]:
        if self.rates:
            return [("open", r) for r in self.rates]
        return [("closed", float(c)) for c in self.concurrency]

    def seconds(self) -> float:
        return len(self.points()) * (self.warmup_s + self.duration_s + 0.2)


@contextlib.contextmanager
def prepared(
    target: Target, req: Request, token: str | None = None
) -> Iterator[tuple[RequestTemplate, list[dict[str, Any]]]]:
    """The request template and the per-connection set-up messages (a region with --shm)."""
    meta_f: dict[str, Any] = {"model": req.model}
    if req.version is not None:
        meta_f["version"] = req.version
    meta = call_ok(target, "metadata", token=token, **meta_f)
    spec = signature_spec(meta, req.signature)
    if req.outputs:
        unknown = sorted(set(req.outputs) - set(spec.get("outputs", {})))
        if unknown:
            raise ValueError(f"outputs {unknown}: the signature has {sorted(spec['outputs'])}")
    if req.input_file:
        inputs = file_inputs(Path(req.input_file), spec)
    else:
        inputs = random_inputs(spec, req.batch_size, req.seed)
    kw: dict[str, Any] = {
        "signature": req.signature,
        "outputs": req.outputs,
        "version": req.version,
        "timeout_ms": req.timeout_ms,
    }
    if not req.shm:
        yield infer_template(req.model, inputs, **kw), []
        return
    if target.kind != "unix":
        raise ValueError("--shm needs a Unix socket address (regions are local to the host)")
    with InputRegion(inputs) as region:
        yield infer_template(req.model, region.tensors, **kw), region.setup


def measure(
    target: Target,
    tpl: RequestTemplate,
    load: Load,
    mode: str,
    value: float,
    *,
    model: str | None,
    token: str | None = None,
    setup: list[dict[str, Any]] | None = None,
    tick: Callable[[], None] | None = None,
    transport: str | None = None,
) -> dict[str, Any]:
    """One point; with `model`, what the server did meanwhile joins the row."""
    watch = ServerWatch(target, model, token) if model else None
    if watch is not None:
        watch.before()
    common: dict[str, Any] = {
        "duration_s": load.duration_s,
        "warmup_s": load.warmup_s,
        "token": token,
        "setup": setup,
        "tick": tick,
        "window": watch,
        "transport": transport,
    }
    if mode == "closed":
        c = int(value)
        conns = load.connections or min(c, DEFAULT_MAX_CONNECTIONS)
        r = closed_loop(target, tpl, concurrency=c, connections=conns, **common)
    else:
        r = open_loop(
            target,
            tpl,
            rate=value,
            poisson=load.poisson,
            seed=load.seed,
            max_inflight=load.max_inflight,
            connections=max(1, load.connections),
            **common,
        )
    row = r.row()
    if watch is not None:
        watch.after()
        row.update(watch.figures(r.mean_us))
    return row


def run_points(
    target: Target,
    tpl: RequestTemplate,
    load: Load,
    *,
    model: str | None,
    token: str | None = None,
    setup: list[dict[str, Any]] | None = None,
    progress: Progress | None = None,
    transport: str | None = None,
    stop_when: Callable[[dict[str, Any]], bool] | None = None,
    label: str = "",
) -> list[dict[str, Any]]:
    rows = []
    for mode, v in load.points():
        what = f"c={int(v)}" if mode == "closed" else f"{v:g}/s"
        if progress is not None:
            progress.point(f"{label} {transport or target.kind} {what}".strip())
        row = measure(
            target,
            tpl,
            load,
            mode,
            v,
            model=model,
            token=token,
            setup=setup,
            tick=progress.tick if progress is not None else None,
            transport=transport,
        )
        rows.append(row)
        if progress is not None:
            progress.note(summary(row))
        if stop_when is not None and stop_when(row):
            break
    return rows


def summary(row: dict[str, Any]) -> str:
    what = f"c={row['concurrency']}" if row["mode"] == "closed" else f"{row['offered_rate']:g}/s"
    errs = sum(row.get("errors", {}).values())
    return (
        f"  {row['transport']} {what}: {row['rps']:.0f} req/s, p50 {_ms(row['p50_us'])} ms, "
        f"p99 {_ms(row['p99_us'])} ms{f', {errs} errors' if errs else ''}"
    )


def _ms(us: float) -> str:
    return "-" if not math.isfinite(us) else f"{us / 1000:.2f}"
