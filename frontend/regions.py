"""Client shared-memory regions (`shm_register`), per Unix-socket connection.

The client creates and owns the POSIX object; the server only maps it, so it never
unlinks it. A region is released when unregistered or when its connection closes.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import posix_ipc

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError


class Region:
    def __init__(self, name: str, key: str, size: int) -> None:
        path = key if key.startswith("/") else f"/{key}"
        try:
            shm = posix_ipc.SharedMemory(path)
        except posix_ipc.ExistentialError:
            raise ProtocolError(
                E.NOT_FOUND, f"field 'key': no POSIX shared-memory object named {key!r}"
            ) from None
        except posix_ipc.PermissionsError:
            raise ProtocolError(
                E.FAILED_PRECONDITION, f"field 'key': no permission to open {key!r}"
            ) from None
        try:
            actual = os.fstat(shm.fd).st_size
            if size > actual:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"field 'size': expected at most the object's {actual} bytes, received {size}",
                )
            self.map = mmap.mmap(shm.fd, size) if size else None
        finally:
            shm.close_fd()
        self.name = name
        self.key = key
        self.size = size
        self.view = memoryview(self.map) if self.map is not None else memoryview(b"")

    def slice(self, field: str, ref: Any, want: int | None) -> memoryview:
        """The bytes a `{region, offset, size}` reference names, bounds-checked."""
        off, size = ref.get("offset", 0), ref.get("size")
        for key, v in (("offset", off), ("size", size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.{key}: expected a non-negative integer, received {v!r}",
                )
        if off + size > self.size:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}: expected offset + size within region {self.name!r} of {self.size} "
                f"bytes, received {off} + {size}",
            )
        if want is not None and size != want:
            raise ProtocolError(
                E.INVALID_ARGUMENT, f"{field}.size: expected {want} bytes, received {size}"
            )
        return self.view[off : off + size]

    def close(self) -> None:
        self.view.release()
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:
                pass  # a queued request still reads it; unmapped with the last view


class Regions:
    def __init__(self) -> None:
        self.by_name: dict[str, Region] = {}

    def register(self, msg: dict[str, Any]) -> None:
        name, key, size = msg.get("name"), msg.get("key"), msg.get("size")
        for field, v in (("name", name), ("key", key)):
            if not isinstance(v, str) or not v:
                raise ProtocolError(
                    E.INVALID_ARGUMENT, f"field '{field}': expected a string, received {v!r}"
                )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'size': expected a non-negative integer, received {size!r}",
            )
        assert isinstance(name, str) and isinstance(key, str)
        if name in self.by_name:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'name': expected a name not yet registered, received {name!r}",
            )
        self.by_name[name] = Region(name, key, size)

    def unregister(self, msg: dict[str, Any]) -> None:
        name = msg.get("name")
        region = self.by_name.pop(name, None) if isinstance(name, str) else None
        if region is None:
            raise ProtocolError(
                E.NOT_FOUND,
                f"field 'name': expected one of {sorted(self.by_name)}, received {name!r}",
            )
        region.close()

    def get(self, field: str, ref: Any) -> Region:
        if not isinstance(ref, dict):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}: expected a map {{region, offset, size}}, received {ref!r}",
            )
        region = self.by_name.get(ref.get("region"))  # type: ignore[arg-type]
        if region is None:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}.region: expected a region registered on this connection "
                f"{sorted(self.by_name)}, received {ref.get('region')!r}",
            )
        return region

    def close(self) -> None:
        for r in self.by_name.values():
            r.close()
        self.by_name.clear()
