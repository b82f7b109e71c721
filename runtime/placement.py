"""Which worker gets which device, CPUs and thread counts. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .config import Instances


@dataclass(frozen=True)
class Placement:
    index: int
    device: str  # "cpu" or "gpu:N"
    intra_op_threads: int
    inter_op_threads: int
    cpu_affinity: tuple[int, ...]  # empty: inherit
    gpu_memory_mb: int
    gpu_memory_fraction: float

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_affinity"] = list(self.cpu_affinity)
        return d


def place(inst: Instances, index: int) -> Placement:
    """Worker `index` of a group: devices[i % n], cpu_affinity[i % n], then overrides."""
    device = inst.devices[index % len(inst.devices)]
    aff = inst.cpu_affinity[index % len(inst.cpu_affinity)] if inst.cpu_affinity else ()
    intra, inter = inst.intra_op_threads, inst.inter_op_threads
    if index < len(inst.workers):
        o = inst.workers[index]
        device = o.device if o.device is not None else device
        intra = o.intra_op_threads if o.intra_op_threads is not None else intra
        inter = o.inter_op_threads if o.inter_op_threads is not None else inter
        aff = o.cpu_affinity if o.cpu_affinity is not None else aff
    return Placement(
        index=index,
        device=device,
        intra_op_threads=intra,
        inter_op_threads=inter,
        cpu_affinity=aff,
        gpu_memory_mb=inst.gpu_memory_mb,
        gpu_memory_fraction=inst.gpu_memory_fraction,
    )


def device_env(device: str) -> dict[str, str]:
    """Environment that pins TensorFlow to one device; applied before TF is imported."""
    if device.startswith("gpu:"):
        return {"CUDA_VISIBLE_DEVICES": device.split(":", 1)[1]}
    # A CPU worker must not grab a GPU that another worker owns.
    return {"CUDA_VISIBLE_DEVICES": "-1"}
