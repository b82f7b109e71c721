"""Shared-memory segments: create (owner only), attach by fd, sweep leftovers.

A ring segment is a memfd, not a /dev/shm object: it has no name to leak (a kill -9
of everything leaves nothing behind), and it can be sealed. Before the worker ever
sees the fd, the owner
- reserves every page (posix_fallocate), so memory that is not there fails the spawn
  with an error naming the ring, instead of SIGBUS at the first write under traffic;
- seals it against shrinking and growing (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL):
  a worker that ftruncates its ring gets EPERM, where it used to make the frontend's
  next read of that ring a SIGBUS that killed the server and every worker.
The memory still counts as Shmem in /proc/meminfo and in the service's cgroup.

`sweep` still removes /dev/shm names of this instance that a dead earlier release
(which used named POSIX objects) left behind.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
from dataclasses import dataclass

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


SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


def create(instance: str, tag: str, size: int) -> Segment:
    """A sealed memfd of `size` bytes, every page reserved, mapped; the caller owns the
    returned fd. Raises OSError naming the segment when the memory cannot be had."""
    label = f"{name_prefix(instance)}{os.getpid()}-{tag}"  # shown in /proc/<pid>/fd
    fd = os.memfd_create(label, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        try:
            os.ftruncate(fd, size)
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot reserve {size} bytes of shared memory for ring {tag!r}: "
                f"{exc.strerror} (rings are memfds, counted as Shmem in /proc/meminfo and "
                "in the service's memory cgroup, not in /dev/shm; free memory or lower "
                "server.ring_bytes)",
            ) from None
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        # Mapped with every page present: posix_fallocate has already taken the memory,
        # so this costs none, and the server's RSS then counts each ring whole from the
        # start instead of growing with the pages the ring's head has passed since the
        # worker was (re)spawned (a swing of up to 2 x ring_bytes per worker that looked
        # like a leak in the soak), and no request pays a first-touch page fault.
        m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
    except BaseException:
        os.close(fd)
        raise
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
