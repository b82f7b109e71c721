"""What the frontend records per model version for /metrics and `stats`.

Everything here is on the request path: counters are plain ints, durations are
bucket increments (histogram.py). Nothing is formatted until a scrape.
"""

from __future__ import annotations

from typing import Any

from .histogram import BATCH_BOUNDS, DURATION_BOUNDS, Histogram

OK = "OK"


class VersionMetrics:
    __slots__ = (
        "batch",
        "codes",
        "compute",
        "compute_infer",
        "compute_input",
        "compute_output",
        "padding_rows",
        "queue",
        "request",
    )

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        # Arrival (the frame decoded) to the reply handed to the transport.
        self.request = Histogram(DURATION_BOUNDS)
        # Arrival to the first time the request was written into a worker's ring.
        self.queue = Histogram(DURATION_BOUNDS)
        # The worker's own time for a record (one request, or one batch), whole and
        # in its three phases (Triton's compute_input / compute_infer / compute_output).
        self.compute = Histogram(DURATION_BOUNDS)
        self.compute_input = Histogram(DURATION_BOUNDS)
        self.compute_infer = Histogram(DURATION_BOUNDS)
        self.compute_output = Histogram(DURATION_BOUNDS)
        self.batch = Histogram(BATCH_BOUNDS)
        self.padding_rows = 0

    def answered(self, code: str, seconds: float) -> None:
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1
        self.request.observe(seconds)

    def refused(self, code: str) -> None:
        """Answered at once (invalid, queue full, no worker): no duration recorded."""
        codes = self.codes
        codes[code] = codes.get(code, 0) + 1

    def computed(self, head: list[Any]) -> None:
        """A worker's response head: [rid, code, message, busy_ns, input_ns, infer_ns,
        output_ns]; the phases are absent from a worker that does not report them."""
        busy = head[3]
        if type(busy) is not int or busy < 0:  # -1: expired unseen; else a bad worker
            return
        self.compute.observe(busy / 1e9)
        if len(head) >= 7:
            phases = head[4:7]
            if all(type(t) is int and 0 <= t <= busy for t in phases):
                self.compute_input.observe(phases[0] / 1e9)
                self.compute_infer.observe(phases[1] / 1e9)
                self.compute_output.observe(phases[2] / 1e9)

    def batched(self, rows: int, pad: int) -> None:
        self.batch.observe(rows)
        self.padding_rows += pad

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": dict(self.codes),
            "request_duration": self.request.as_dict(),
            "queue_duration": self.queue.as_dict(),
            "compute_duration": self.compute.as_dict(),
            "compute_input_duration": self.compute_input.as_dict(),
            "compute_infer_duration": self.compute_infer.as_dict(),
            "compute_output_duration": self.compute_output.as_dict(),
            "batch_size": self.batch.as_dict(),
            "padding_rows": self.padding_rows,
        }
