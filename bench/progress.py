"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total_s: float, enabled: bool | None = None, out: TextIO | None = None):
        self.out = out or sys.stderr
        self.enabled = self.out.isatty() if enabled is None else enabled
        self.total_s = max(1e-9, total_s)
        self.t0 = time.monotonic()
        self.label = ""
        self.width = 30

    def point(self, label: str) -> None:
        self.label = label
        self.tick()

    def tick(self) -> None:
        if not self.enabled:
            return
        el = time.monotonic() - self.t0
        frac = min(1.0, el / self.total_s)
        bar = "#" * int(frac * self.width)
        self.out.write(
            f"\r[{bar:<{self.width}}] {el:5.0f}/{self.total_s:.0f} s  {self.label[:60]:<60}"
        )
        self.out.flush()

    def note(self, line: str) -> None:
        """A line that stays (a finished point), above the bar."""
        if self.enabled:
            self.out.write("\r" + " " * (self.width + 75) + "\r")
        self.out.write(line + "\n")
        self.tick()

    def done(self) -> None:
        if self.enabled:
            self.out.write("\r" + " " * (self.width + 75) + "\r")
            self.out.flush()
