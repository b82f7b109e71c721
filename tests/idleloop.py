"""An event loop stand-in for driving the Dispatcher in one process without sockets
(tests/test_dispatch_accept.py, perf/dispatch_cost.py): it accepts the calls the
dispatcher makes outside the path under test and does nothing with them."""

from __future__ import annotations

from typing import Any


class IdleLoop:
    def call_soon(self, fn: Any, *args: Any) -> None:
        return None

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        return None

    def add_reader(self, *args: Any) -> None:
        pass

    def remove_reader(self, *args: Any) -> None:
        pass
