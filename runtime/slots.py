"""What every part of the supervisor shares: a wanted worker position (`Slot`), its
log line and the last resort of killing a worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import ModelConfig
from .placement import Placement
from .workers import WorkerHandle

UNAVAILABLE = "UNAVAILABLE"
STOPPING = "server is stopping"


def log(text: str) -> None:
    """Never raises: a stderr whose reader went away (EPIPE) or was closed must not
    stop the supervisor in the middle of what it logs, a stop included."""
    try:
        sys.stderr.write(f"ringserve: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass(eq=False)
class Slot:
    """One wanted worker position (model, version, index) across its restarts."""

    model: ModelConfig
    version: int
    placement: Placement
    handle: WorkerHandle | None = None
    failures: int = 0
    restarts: int = 0
    retry: asyncio.TimerHandle | None = None
    wanted: bool = True
    replacing: bool = False  # a successor with a new placement is on its way
    ready_once: bool = False
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # A group's worker: every (model, version, path) it loads; None for a model's own.
    content: tuple[tuple[str, int, Path], ...] | None = None
    # A group's worker to replace although its content is unchanged: a member failed
    # to load in it and a fresh worker tries again (grouped.py, load retries).
    stale: bool = False

    @property
    def name(self) -> str:
        return self.model.name
