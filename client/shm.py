"""Shared-memory regions a local client owns, for zero-copy tensors over a Unix socket.

    region = SharedRegion.create("inputs", 1 << 20)       # the client owns it
    c.shm_register(region)
    x = region.array((1, 784), "float32")                 # write inputs in place
    out = c.infer("mlp", {"x": region.tensor(x)}, output_shm={"logits": region.ref(4096, 40)})
    c.shm_unregister(region); region.close(); region.unlink()

The socket then carries only references; the server copies input bytes once into
its ring and writes outputs straight into the region.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np
import posix_ipc

from ringserve.ipc.tensors import NUMPY, check_wire_tensor, dtype_name


class ShmTensor:
    """A tensor that lives in a registered region: sent as a reference."""

    def __init__(self, region: SharedRegion, offset: int, shape: tuple[int, ...], dtype: str):
        self.region = region
        self.offset = offset
        self.shape = list(shape)
        self.dtype = dtype

    def to_wire(self) -> dict[str, Any]:
        size = int(np.prod(self.shape, dtype=np.int64)) * NUMPY[self.dtype].itemsize
        ref = {"region": self.region.name, "offset": self.offset, "size": size}
        return {"dtype": self.dtype, "shape": self.shape, "shm": ref}


class SharedRegion:
    def __init__(self, name: str, key: str, size: int, shm: posix_ipc.SharedMemory) -> None:
        self.name = name
        self.key = key
        self.size = size
        self.map = mmap.mmap(shm.fd, size)
        shm.close_fd()
        self._next = 0

    @classmethod
    def create(cls, name: str, size: int, key: str | None = None) -> SharedRegion:
        key = key or f"/ringserve-client-{os.getpid()}-{name}"
        shm = posix_ipc.SharedMemory(key, posix_ipc.O_CREX, mode=0o600, size=size)
        return cls(name, key, size, shm)

    def array(self, shape: tuple[int, ...], dtype: str, offset: int | None = None) -> np.ndarray:
        """A numpy view of the region at `offset` (default: the next 64-aligned slot)."""
        dt = NUMPY[dtype]
        n = int(np.prod(shape, dtype=np.int64))
        if offset is None:
            offset = self._next
        self._next = max(self._next, (offset + n * dt.itemsize + 63) & ~63)
        return np.frombuffer(self.map, dtype=dt, count=n, offset=offset).reshape(shape)

    def tensor(self, arr: np.ndarray) -> ShmTensor:
        """Reference to an array made by `array()` (it must view this region)."""
        base = np.frombuffer(self.map, dtype=np.uint8)
        offset = arr.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        if not 0 <= offset <= self.size - arr.nbytes:
            raise ValueError("array does not live in this region")
        return ShmTensor(self, offset, arr.shape, dtype_name(arr.dtype))

    def ref(self, offset: int, size: int) -> dict[str, Any]:
        return {"region": self.name, "offset": offset, "size": size}

    def read(self, t: dict[str, Any]) -> np.ndarray:
        """The array an output reference (`{"dtype", "shape", "shm"}`) points at."""
        dtype, shape, ref = check_wire_tensor("output", t)  # rank checked before any product
        dt = NUMPY[dtype]
        n = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.map, dtype=dt, count=n, offset=ref["offset"]).reshape(shape)

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:
            pass  # arrays still view it; unmapped with them

    def unlink(self) -> None:
        try:
            posix_ipc.unlink_shared_memory(self.key)
        except posix_ipc.ExistentialError:
            pass
