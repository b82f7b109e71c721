"""A request between its validation and its reply, and the ring record that carries
one request or a batch of them."""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any, Protocol

from .regions import Region, Regions
from .registry import VersionState


class Replier(Protocol):
    regions: Regions | None
    # Whether a reply may come packed (`send_frame`): the msgpack connection's do; an
    # HTTP connection's are JSON, built from the reply map (`reply`).
    takes_frames: bool

    def reply(self, msg: dict[str, Any], large: bool = False) -> None: ...
    def send_frame(self, frame: bytes) -> None: ...
    def request_done(self) -> None: ...


# What a request holds before its checks and after its answer, and the output
# regions of one that names none: shared, never mutated (each is replaced whole), so
# a request allocates neither.
NO_TENSORS: list[Any] = []
NO_OUTPUT_SHM: dict[str, tuple[Region, int, int]] = {}


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
        self.tensors = NO_TENSORS
        self.wanted: list[str] | None = None
        self.output_shm = NO_OUTPUT_SHM
        self.rows: int | None = None  # batch dimension shared by every input, if any
        self.key: tuple[Any, ...] = ()  # what must match to share a batch
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.t0 = perf_counter()
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
