"""Shared-memory segments: create (owner only), attach by fd, sweep leftovers.

Every name starts with `ringserve-<instance>-<pid>-` so a new run of the same server
can remove what a dead earlier run left behind, and nothing else. The owner unlinks
the name as soon as the segment is mapped and its fd is ready to hand to the peer: the
object then lives exactly as long as some process holds it, and a kill -9 leaves
nothing in /dev/shm.
"""

from __future__ import annotations

import mmap
import os
import re
from dataclasses import dataclass

import posix_ipc

PREFIX = "ringserve-"
SHM_DIR = "/dev/shm"


def name_prefix(instance: str) -> str:
    return f"{PREFIX}{instance}-"


@dataclass
class Segment:
    fd: int
    size: int
    map: mmap.mmap

    def close(self) -> None:
        try:
            self.map.close()
        except BufferError:
            pass  # views still exported; the mapping goes with the last reference
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def create(instance: str, tag: str, size: int) -> Segment:
    """Create, map and immediately unlink a segment; the caller owns the returned fd."""
    name = f"/{name_prefix(instance)}{os.getpid()}-{tag}"
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    try:
        fd = os.dup(shm.fd)
        m = mmap.mmap(fd, size)
    finally:
        shm.close_fd()
        shm.unlink()
    return Segment(fd, size, m)


def attach(fd: int, size: int) -> Segment:
    """Map a segment received as an inherited fd (worker side)."""
    st = os.fstat(fd)
    if st.st_size < size:
        raise ValueError(f"segment fd {fd} holds {st.st_size} bytes, expected {size}")
    return Segment(fd, size, mmap.mmap(fd, size))


_OWNER = re.compile(r"-(\d+)-")


def sweep(instance: str) -> list[str]:
    """Unlink this instance's objects whose creating process is gone; return their names."""
    prefix = name_prefix(instance)
    removed: list[str] = []
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return removed
    for entry in entries:
        bare = entry[4:] if entry.startswith("sem.") else entry
        if not bare.startswith(prefix):
            continue
        m = _OWNER.match(bare[len(prefix) - 1 :])
        if m and _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, entry))
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
