"""Client shared-memory regions (`shm_register`), per Unix-socket connection.

The client creates and owns the POSIX object; the server never unlinks it, and never
maps it: a mapping turns the owner's `ftruncate` into SIGBUS in the server. The server
holds an fd and copies with pread/pwrite (ipc/fdslice.py), so a shrunken region is an
error for the request that names it and nothing else.

Registration opens the object and checks, on that fd, that it is a regular file owned
by the uid at the other end of the socket (SO_PEERCRED): a client can only name memory
it could open itself, never borrow the server's uid (docs/security.md). Regions and
registered bytes per connection are bounded (`max_regions_per_connection`,
`max_region_bytes_per_connection`).
"""

from __future__ import annotations

import os
import re
import stat
from typing import Any

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError
from ringserve.ipc.fdslice import FdSlice
from ringserve.ipc.tensors import byte_view

SHM_DIR = "/dev/shm"
# What shm_open accepts as one name, without the leading slash; no "." or "..".
_KEY = re.compile(r"[A-Za-z0-9_.@+-]{1,255}")


class Region:
    def __init__(self, name: str, key: str, size: int, peer_uid: int | None) -> None:
        bare = key[1:] if key.startswith("/") else key
        if not _KEY.fullmatch(bare) or bare in (".", ".."):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'key': expected a POSIX shared-memory name like '/name' "
                f"(letters, digits, '._@+-'), received {E.clip(key)}",
            )
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
        try:
            fd = os.open(os.path.join(SHM_DIR, bare), flags)
        except FileNotFoundError:
            raise ProtocolError(
                E.NOT_FOUND, f"field 'key': no POSIX shared-memory object named {E.clip(key)}"
            ) from None
        except OSError as exc:
            raise ProtocolError(
                E.FAILED_PRECONDITION, f"field 'key': cannot open {E.clip(key)}: {exc.strerror}"
            ) from None
        self.file = open(fd, "r+b", buffering=0, closefd=True)  # closed with its last reference
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self.file.close()
            raise ProtocolError(
                E.FAILED_PRECONDITION,
                f"field 'key': {E.clip(key)} is not a shared-memory object",
            )
        if peer_uid is not None and st.st_uid != peer_uid:
            self.file.close()
            raise ProtocolError(
                E.FAILED_PRECONDITION,
                f"field 'key': {E.clip(key)} is owned by uid {st.st_uid}, expected the "
                f"connecting process's uid {peer_uid}: only a region the client owns "
                "can be registered",
            )
        if size > st.st_size:
            self.file.close()
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'size': expected at most the object's {st.st_size} bytes, received {size}",
            )
        self.name = name
        self.key = key
        self.size = size

    def check(self, field: str, ref: Any, want: int | None) -> tuple[int, int]:
        """(offset, size) of a `{region, offset, size}` reference, bounds-checked."""
        off, size = ref.get("offset", 0), ref.get("size")
        for key, v in (("offset", off), ("size", size)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"{field}.{key}: expected a non-negative integer, received {E.clip(v)}",
                )
        if off + size > self.size:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}: expected offset + size within region {E.clip(self.name)} of {self.size} "
                f"bytes, received {off} + {size}",
            )
        if want is not None and size != want:
            raise ProtocolError(
                E.INVALID_ARGUMENT, f"{field}.size: expected {want} bytes, received {size}"
            )
        return off, size

    def slice(self, field: str, ref: Any, want: int | None) -> FdSlice:
        """The bytes a reference names, read later (straight into a ring) by pread."""
        off, size = self.check(field, ref, want)
        return FdSlice(self.file, off, size, f"{field} (region {E.clip(self.name)})")

    def write(self, field: str, off: int, data: Any) -> None:
        """Write `data` at `off` with pwrite. The region's current size is checked
        first: a pwrite past the end would grow the client's object instead of failing.
        (A truncate racing the check makes the object grow back to at most the size it
        was registered with, which the client may do itself anyway.)"""
        src = byte_view(data)
        n = len(src) if isinstance(src, (bytes, bytearray)) else src.nbytes
        if not n:
            return
        fd = self.file.fileno()
        now = os.fstat(fd).st_size
        if off + n > now:
            raise ProtocolError(
                E.FAILED_PRECONDITION,
                f"{field}: region {E.clip(self.name)} shrank: expected {n} bytes at offset {off}, "
                f"the region now holds {now} bytes",
            )
        done = 0
        mv = memoryview(src).cast("B")
        try:
            while done < n:
                w = os.pwritev(fd, [mv[done:]], off + done)
                if w <= 0:
                    break
                done += w
        except OSError as exc:
            raise ProtocolError(
                E.FAILED_PRECONDITION,
                f"{field}: writing {n} bytes at offset {off} of region {E.clip(self.name)} "
                f"failed: {exc.strerror}",
            ) from None
        if done != n:
            raise ProtocolError(
                E.FAILED_PRECONDITION,
                f"{field}: wrote {done} of {n} bytes at offset {off} of region {E.clip(self.name)}",
            )

    def close(self) -> None:
        """Nothing to unmap. The fd closes with the last reference to `file`: requests
        still queued or running hold it (FdSlice, output_shm), so it is never closed and
        reused under them."""


class Regions:
    """The regions of one connection, with its limits."""

    def __init__(self, max_regions: int, max_bytes: int) -> None:
        self.by_name: dict[str, Region] = {}
        self.max_regions = max_regions
        self.max_bytes = max_bytes
        self.peer_uid: int | None = None  # SO_PEERCRED of the connection, when known
        self.bytes = 0

    def register(self, msg: dict[str, Any]) -> None:
        name, key, size = msg.get("name"), msg.get("key"), msg.get("size")
        for field, v in (("name", name), ("key", key)):
            if not isinstance(v, str) or not v:
                raise ProtocolError(
                    E.INVALID_ARGUMENT,
                    f"field '{field}': expected a string, received {E.clip(v)}",
                )
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'size': expected a non-negative integer, received {E.clip(size)}",
            )
        assert isinstance(name, str) and isinstance(key, str)
        if name in self.by_name:
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"field 'name': expected a name not yet registered, received {E.clip(name)}",
            )
        if len(self.by_name) >= self.max_regions:
            raise ProtocolError(
                E.RESOURCE_EXHAUSTED,
                f"max_regions_per_connection ({self.max_regions}) reached: unregister a "
                "region first",
            )
        if self.bytes + size > self.max_bytes:
            raise ProtocolError(
                E.RESOURCE_EXHAUSTED,
                f"max_region_bytes_per_connection ({self.max_bytes}) would be exceeded: "
                f"{self.bytes} bytes registered, received size {size}",
            )
        if self.peer_uid is None:
            # Without the peer's credentials there is nothing to check ownership
            # against: refuse rather than act with the server's own uid.
            raise ProtocolError(
                E.FAILED_PRECONDITION,
                "op 'shm_register': the connecting process's credentials are unknown",
            )
        self.by_name[name] = Region(name, key, size, self.peer_uid)
        self.bytes += size

    def unregister(self, msg: dict[str, Any]) -> None:
        name = msg.get("name")
        region = self.by_name.pop(name, None) if isinstance(name, str) else None
        if region is None:
            known = sorted(self.by_name)
            shown = known if len(known) <= 8 else [*known[:8], "..."]
            raise ProtocolError(
                E.NOT_FOUND,
                f"field 'name': expected one of {shown}, received {E.clip(name)}",
            )
        self.bytes -= region.size
        region.close()

    def get(self, field: str, ref: Any) -> Region:
        if not isinstance(ref, dict):
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}: expected a map {{region, offset, size}}, received {E.clip(ref)}",
            )
        name = ref.get("region")
        # (A name that is not a string, a list say, is unknown, not a TypeError.)
        region = self.by_name.get(name) if isinstance(name, str) else None
        if region is None:
            known = sorted(self.by_name)
            shown = known if len(known) <= 8 else [*known[:8], "..."]
            raise ProtocolError(
                E.INVALID_ARGUMENT,
                f"{field}.region: expected a region registered on this connection "
                f"{shown}, received {E.clip(ref.get('region'))}",
            )
        return region

    def close(self) -> None:
        for r in self.by_name.values():
            r.close()
        self.by_name.clear()
        self.bytes = 0
