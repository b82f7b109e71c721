"""The server's own rings against a hostile or broken worker, and the platform check.

- A worker cannot shrink (or grow) its ring: the fd it holds is a sealed memfd, so an
  ftruncate fails (EPERM) instead of turning the frontend's next read into SIGBUS.
- Ring memory is reserved when the worker is spawned: a limit that refuses it fails
  there, with a message naming the ring and where the memory is counted.
- records.read refuses a rank above MAX_RANK before computing any product.
- A non-x86-64 machine is refused by the server with the reason.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import numpy as np
import pytest

from ringserve.client import Client
from ringserve.ipc import layout, machine, records, shm
from ringserve.ipc.ring import Ring, RingCorrupt
from ringserve.ipc.tensors import MAX_RANK
from ringserve.runtime.launch import ServerProcess

from faults import take_fd, worker_spec


def test_worker_cannot_resize_its_rings(server: ServerProcess) -> None:
    with Client(server.unix_url) as c:
        w = next(w for w in c.stats()["workers"] if w["model"] == "linear")
        spec = worker_spec(w["pid"])
        x = np.ones((2, 16), np.float32)
        want = c.infer("linear", {"x": x})["y"]
        for key in ("req_fd", "resp_fd"):
            fd = take_fd(w["pid"], spec[key])  # the very file the worker holds
            try:
                seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                assert seals & shm.SEALS == shm.SEALS, seals
                for size in (0, 4096, spec["segment_bytes"] * 2):
                    with pytest.raises(PermissionError):
                        os.ftruncate(fd, size)
                with pytest.raises(PermissionError):  # nor change the seals
                    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
                assert os.fstat(fd).st_size == spec["segment_bytes"]
            finally:
                os.close(fd)
            np.testing.assert_array_equal(c.infer("linear", {"x": x})["y"], want)
        same = next(v for v in c.stats()["workers"] if v["model"] == "linear")
        assert same["pid"] == w["pid"]


RESERVE = """
import resource, sys
from ringserve.ipc import shm
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    shm.create("t", "m-v1-w0-g1-req", 4 << 20)
except OSError as exc:
    print(exc)
    sys.exit(3)
"""


def test_ring_memory_is_reserved_at_creation_or_refused_with_a_message() -> None:
    """posix_fallocate, not the first write under traffic, is where memory that is
    not there shows. A file-size limit makes the kernel refuse it for real."""
    r = subprocess.run([sys.executable, "-c", RESERVE], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3, (r.stdout, r.stderr)
    msg = r.stdout
    assert "cannot reserve 4194304 bytes of shared memory for ring 'm-v1-w0-g1-req'" in msg
    assert "/dev/shm" in msg and "ring_bytes" in msg
    # And a segment that could be had is fully allocated before anyone writes to it.
    seg = shm.create("t", "reserved", 1 << 20)
    try:
        assert os.fstat(seg.fd).st_blocks * 512 >= 1 << 20
    finally:
        seg.close()


def _mapped_rss(label: str) -> int:
    """Resident bytes of this process's mapping of the memfd labelled `label`."""
    found = None
    for line in open("/proc/self/smaps").read().splitlines():
        if "-" in line.split(" ", 1)[0]:  # a mapping's header line
            found = line.rstrip().endswith(f"/memfd:{label} (deleted)")
        elif found and line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no mapping of memfd {label}")


def test_ring_is_resident_in_the_owner_from_creation() -> None:
    """The server maps each ring with every page present, so its RSS counts the rings
    whole from the start instead of growing as the heads pass new pages (which a soak
    saw as RSS growth after every worker respawn)."""
    seg = shm.create("t", "resident", 4 << 20)
    try:
        assert _mapped_rss(f"{shm.name_prefix('t')}{os.getpid()}-resident") == 4 << 20
    finally:
        seg.close()


def test_records_refuse_rank_above_max_before_any_product() -> None:
    buf = bytearray(layout.segment_size(1 << 16))
    ring = Ring(buf, create=True, capacity=1 << 16)
    shape = [2**62] * (MAX_RANK + 1)  # a product would be a 2000-digit number
    meta = [1, "", "", 0, [["y", 11, shape, 0, 0]]]
    import msgpack

    packed = msgpack.packb(meta)
    view = ring.try_reserve(4 + len(packed))
    assert view is not None
    view[:4] = len(packed).to_bytes(4, "little")
    view[4:] = packed
    view.release()
    ring.commit(layout.KIND_RESPONSE)
    rec = ring.peek()
    assert rec is not None
    with pytest.raises(RingCorrupt, match=f"rank {MAX_RANK + 1} exceeds MAX_RANK {MAX_RANK}"):
        records.read(rec.payload)
    ok_shape = [1] * MAX_RANK
    ring.release()
    rec.payload.release()
    records.write(
        ring, layout.KIND_RESPONSE, [1, "", "", 0], [("y", "float32", ok_shape, [b"\0" * 4])]
    )
    _, outs = records.read(ring.peek().payload)  # type: ignore[union-attr]
    assert outs["y"].shape == tuple(ok_shape)


@pytest.mark.parametrize("name", ["aarch64", "arm64", "ppc64le", "riscv64", "s390x", ""])
def test_non_x86_64_machines_are_refused_with_the_reason(name: str) -> None:
    why = machine.refusal(name)
    assert why is not None
    assert "x86-64" in why and "store ordering" in why and "client SDK" in why


@pytest.mark.parametrize("name", ["x86_64", "AMD64", "amd64"])
def test_x86_64_machines_are_accepted(name: str) -> None:
    assert machine.refusal(name) is None
