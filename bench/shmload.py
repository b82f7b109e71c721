"""`--shm`: request inputs placed once in a client shared-memory region.

The bench process creates the region (it owns it and unlinks it when done), writes
the inputs into it and sends references; each load connection registers the region
first (regions belong to the connection that registered them). Strings cannot live
in a region and stay inline.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Any

import numpy as np

from ringserve.client.shm import SharedRegion

ALIGN = 64


def _size(inputs: dict[str, np.ndarray[Any, Any]]) -> int:
    total = 0
    for a in inputs.values():
        if a.dtype.kind not in "OSU":
            total += (a.nbytes + ALIGN - 1) // ALIGN * ALIGN
    return max(4096, (total + 4095) // 4096 * 4096)


class InputRegion:
    """The inputs in a fresh region; `tensors` for the template, `setup` per connection."""

    def __init__(self, inputs: dict[str, np.ndarray[Any, Any]]) -> None:
        self.region = SharedRegion.create(f"bench{os.getpid()}", _size(inputs))
        self.tensors: dict[str, Any] = {}
        try:
            for name, a in inputs.items():
                if a.dtype.kind in "OSU":
                    self.tensors[name] = a
                    continue
                view = self.region.array(a.shape, a.dtype.name)
                view[...] = a
                self.tensors[name] = self.region.tensor(view)
                del view
        except BaseException:
            self.close()
            raise

    @property
    def setup(self) -> list[dict[str, Any]]:
        r = self.region
        return [{"op": "shm_register", "name": r.name, "key": r.key, "size": r.size}]

    def close(self) -> None:
        self.region.close()
        self.region.unlink()

    def __enter__(self) -> InputRegion:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
