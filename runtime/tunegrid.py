"""The candidates `ringserve tune` tries: [[models]] settings within the host's cores.

Dimensions: instances (worker processes), intra_op_threads, inter_op_threads, the
cpu_affinity layout (unpinned, or each worker on its own cores) and server-side
batching (off, or on with each of a few max_batch_size). A candidate never asks for
more threads than the cores it may use: instances x intra_op_threads <= cores, and
the same for inter_op_threads.

The order matters when the budget runs out before the grid does: the default
settings come first (the baseline every other figure is read against), then the
candidates that change one thing from it, then two, and so on; within a distance,
the ones that use more of the host first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BASELINE_BATCH_TIMEOUT_US = 1000


@dataclass(frozen=True)
class Candidate:
    instances: int = 1
    intra: int = 1
    inter: int = 1
    pinned: bool = False
    max_batch: int = 0  # 0: no batching

    @property
    def name(self) -> str:
        parts = [f"x{self.instances}", f"intra {self.intra}", f"inter {self.inter}"]
        parts.append("pinned" if self.pinned else "unpinned")
        parts.append(f"batch {self.max_batch}" if self.max_batch else "no batching")
        return ", ".join(parts)

    def affinity(self, cores: Sequence[int]) -> list[list[int]]:
        """Worker i on its own `intra` cores (empty when unpinned). Taken from the last
        core down, so a host with cores to spare leaves the first ones, where the
        frontend and the system tend to run, to them."""
        if not self.pinned:
            return []
        per = max(1, self.intra)
        top = list(reversed(cores))
        return [sorted(top[i * per : (i + 1) * per]) for i in range(self.instances)]

    def distance(self) -> int:
        base = Candidate()
        return sum(
            getattr(self, f) != getattr(base, f)
            for f in ("instances", "intra", "inter", "pinned", "max_batch")
        )

    def model_toml(
        self,
        name: str,
        base_path: str,
        cores: Sequence[int],
        version: int | None = None,
        batch_timeout_us: int = BASELINE_BATCH_TIMEOUT_US,
    ) -> str:
        """The [[models]] block serving `name` with these settings."""
        lines = ["[[models]]", f"name = {_q(name)}", f"base_path = {_q(base_path)}"]
        if version is not None:
            lines.append(f"version_policy = {{specific = [{version}]}}")
        lines += [
            "",
            "  [models.instances]",
            f"  count = {self.instances}",
            f"  intra_op_threads = {self.intra}",
            f"  inter_op_threads = {self.inter}",
        ]
        aff = self.affinity(cores)
        if aff:
            lines.append(f"  cpu_affinity = {aff}")
        if self.max_batch:
            lines += [
                "",
                "  [models.batching]",
                f"  max_batch_size = {self.max_batch}",
                f"  batch_timeout_us = {batch_timeout_us}",
            ]
        return "\n".join(lines) + "\n"


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _options(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    out = {n}
    v = 1
    while v < n:
        out.add(v)
        v *= 2
    return sorted(out)


def grid(
    cores: int,
    *,
    instances: Sequence[int] | None = None,
    max_batch_sizes: Sequence[int] = (8, 32),
    batching: bool = True,
    pinning: bool = True,
) -> list[Candidate]:
    out = []
    for n in instances or _options(cores):
        if n > cores:
            continue
        per = max(1, cores // n)
        for intra in _options(per):
            for inter in _options(min(2, per)):
                for pinned in (False, True) if pinning and n * intra <= cores else (False,):
                    for mb in (0, *max_batch_sizes) if batching else (0,):
                        out.append(Candidate(n, intra, inter, pinned, mb))
    out.sort(key=lambda c: (c.distance(), -c.instances * c.intra, c.inter, c.max_batch))
    return out
