"""What every connection of every listener (msgpack and HTTP) keeps the same way: its
place among the listener's `max_connections`, taken when it opens and given back once
when it closes.

A part each connection holds, not a base class: the msgpack connection is compiled
(pkg/native.py) and a compiled class can only inherit from compiled ones, while the
HTTP connection, which is not compiled, uses the same part."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Frontend


class Place:
    def __init__(self, frontend: Frontend, kind: str) -> None:
        self.frontend = frontend
        self.kind = kind  # the listener: "tcp", "unix", "http", "metrics"
        self.held = False

    def full(self) -> int | None:
        """The listener's cap when it is already reached, else None."""
        fe = self.frontend
        cap = fe.settings.max_connections
        return cap if fe.open_count.get(self.kind, 0) >= cap else None

    def take(self) -> None:
        fe = self.frontend
        fe.open_count[self.kind] = fe.open_count.get(self.kind, 0) + 1
        self.held = True

    def give(self) -> None:
        if self.held:
            self.held = False
            self.frontend.open_count[self.kind] -= 1
