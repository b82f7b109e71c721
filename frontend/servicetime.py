"""How long a worker takes for a record of n rows, learned from what it reports.

The batcher sends a worker its next batch just before the running one is expected to
finish (frontend/batcher.py), so the worker never idles and the next batch holds
everything that arrived meanwhile. That needs a service-time estimate: a line
a + b * rows, fitted by least squares over exponentially decayed sums of the worker's
own per-record busy times (the record head's `busy` field), so it follows a model
that warms up or a host that gets busier.
"""

from __future__ import annotations


class ServiceTime:
    __slots__ = ("_n", "_x", "_xx", "_xy", "_y", "decay")

    def __init__(self, decay: float = 0.98) -> None:
        self.decay = decay
        self._n = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        d = self.decay
        self._n = self._n * d + 1.0
        self._x = self._x * d + rows
        self._y = self._y * d + seconds
        self._xx = self._xx * d + rows * rows
        self._xy = self._xy * d + rows * seconds

    def estimate(self, rows: int) -> float:
        """Seconds for `rows` rows; 0.0 before anything was observed."""
        n = self._n
        if n <= 0.0:
            return 0.0
        mean_y = self._y / n
        var = self._xx * n - self._x * self._x
        if var <= 1e-9 * n * n:  # one batch size seen so far: no slope to fit
            return mean_y
        b = (self._xy * n - self._x * self._y) / var
        b = max(b, 0.0)  # noise must not make bigger batches look cheaper
        a = mean_y - b * self._x / n
        return max(a + b * rows, 0.0)
