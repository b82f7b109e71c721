"""Frame reading: buffers grown as bytes arrive against one allocated from the header.

    flock /tmp/ringserve-bench.lock python perf/bench_frames.py [--repeat 5]

A sender thread writes frames of each size over a Unix socketpair; a uvloop
BufferedProtocol reads them with `ipc.framereader.FrameReader`, as the frontend does. Mode
"grow" is the reader as shipped (a body's buffer is an anonymous mapping grown by
mremap as bytes arrive, kept as a spare for the next body); mode "whole" allocates
the body from its header in one piece, a fresh bytearray each time (the reader
before issue 11: GROW_MIN, `_take` and `_recycle` are swapped for that during the
"whole" runs). Both in the same run, alternating; the figure is the median time per
frame and the ratio grow / whole. The ceiling is the socket itself: the sender's copy
into the kernel and the reader's copy out.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import struct
import threading
import time

import uvloop

from ringserve.ipc import framereader

SIZES = [64 * 1024, 1 << 20, 16 << 20, 64 << 20]


class Reader(asyncio.BufferedProtocol):
    def __init__(self, want: int, done: asyncio.Future[float]) -> None:
        self.r = framereader.FrameReader(1 << 30)
        self.want = want
        self.got = 0
        self.done = done
        self.t0 = time.perf_counter()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.r.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.got += len(self.r.buffer_updated(nbytes))
        if self.got == self.want and not self.done.done():
            self.done.set_result(time.perf_counter() - self.t0)


async def one(size: int, frames: int) -> float:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    done: asyncio.Future[float] = loop.create_future()
    transport, _ = await loop.connect_accepted_socket(lambda: Reader(frames, done), a)
    frame = struct.pack(">I", size) + bytes(size)

    def send() -> None:
        for _ in range(frames):
            b.sendall(frame)

    t = threading.Thread(target=send)
    t.start()
    took = await done
    t.join()
    transport.close()
    b.close()
    return took / frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    take, recycle, grow_min = framereader._take, framereader._recycle, framereader.GROW_MIN
    print("| frame | whole (ms) | grow (ms) | grow / whole |")
    print("|---|---|---|---|")
    for size in SIZES:
        frames = max(2, min(200, (256 << 20) // size))
        res: dict[str, list[float]] = {"whole": [], "grow": []}
        for i in range(args.repeat):
            for mode in ("whole", "grow") if i % 2 else ("grow", "whole"):
                if mode == "whole":  # the whole length at once, a fresh buffer each frame
                    framereader.GROW_MIN = 1 << 31
                    framereader._take = bytearray  # type: ignore[assignment]
                    framereader._recycle = lambda m: None  # type: ignore[assignment]
                res[mode].append(uvloop.run(one(size, frames)))
                framereader._take, framereader._recycle, framereader.GROW_MIN = (
                    take,
                    recycle,
                    grow_min,
                )
        w, g = statistics.median(res["whole"]), statistics.median(res["grow"])
        label = f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"
        print(f"| {label} | {w * 1e3:.3f} | {g * 1e3:.3f} | {g / w:.2f} |")


if __name__ == "__main__":
    main()
