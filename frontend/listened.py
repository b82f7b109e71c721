"""What every connection of every listener (msgpack and HTTP) keeps the same way:
its place among the listener's `max_connections`, and the transport's write flow
control, which pauses reading so a client that does not read its replies cannot
make the server buffer them without bound."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .server import Frontend


class Listened:
    frontend: Frontend
    kind: str  # the listener: "tcp", "unix", "http", "metrics"
    counted: bool  # holds one of its listener's max_connections places
    _write_paused: bool

    def _update_reading(self) -> None:
        raise NotImplementedError

    def _full(self) -> int | None:
        """The listener's cap when it is already reached, else None."""
        cap = self.frontend.settings.max_connections
        return cap if self.frontend.open_count.get(self.kind, 0) >= cap else None

    def _take_place(self) -> None:
        fe = self.frontend
        fe.open_count[self.kind] = fe.open_count.get(self.kind, 0) + 1
        self.counted = True

    def _give_place(self) -> None:
        if self.counted:
            self.counted = False
            self.frontend.open_count[self.kind] -= 1

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
