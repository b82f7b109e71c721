"""GPU utilisation and memory from NVML, for the GPUs that workers are placed on.

nvidia-ml-py (the `gpu` extra, module `pynvml`) is imported only when some worker is
configured on a `gpu:k` device, and used only when the NVIDIA driver's library loads.
Otherwise there are no GPU figures at all: absent, never zeros that would read as an
idle GPU. `gpu:k` is NVML device k, which is CUDA's k when CUDA_DEVICE_ORDER is
PCI_BUS_ID (NVML always orders by PCI bus).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

Importer = Callable[[str], Any]


def indices(devices: Iterable[str]) -> tuple[int, ...]:
    """The GPU indices among placement devices ("cpu", "gpu:0", ...), sorted, once."""
    out = set()
    for d in devices:
        if d.startswith("gpu:") and d[4:].isdigit():
            out.add(int(d[4:]))
    return tuple(sorted(out))


class Nvml:
    def __init__(self, nvml: Any, handles: dict[int, Any]) -> None:
        self.nvml = nvml
        self.handles = handles

    def read(self) -> list[dict[str, Any]]:
        out = []
        for index, h in self.handles.items():
            try:
                util = self.nvml.nvmlDeviceGetUtilizationRates(h)
                mem = self.nvml.nvmlDeviceGetMemoryInfo(h)
            except Exception:  # a GPU fallen off the bus: no figures rather than wrong ones
                continue
            out.append(
                {
                    "index": index,
                    "utilization": util.gpu / 100.0,
                    "memory_utilization": util.memory / 100.0,
                    "memory_used_bytes": int(mem.used),
                    "memory_total_bytes": int(mem.total),
                }
            )
        return out

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


def load(
    wanted: tuple[int, ...],
    log: Callable[[str], None],
    import_module: Importer = importlib.import_module,
) -> Nvml | None:
    """NVML handles for `wanted`, or None: no GPU wanted (nothing is imported), the
    package missing, or the driver absent."""
    if not wanted:
        return None
    try:
        nvml = import_module("pynvml")
    except ImportError:
        log(
            "GPU workers configured but nvidia-ml-py is not installed: no GPU metrics "
            "(pip install 'ringserve[gpu]')"
        )
        return None
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        log(f"GPU workers configured but NVML does not load ({exc}): no GPU metrics")
        return None
    handles = {}
    for i in wanted:
        try:
            handles[i] = nvml.nvmlDeviceGetHandleByIndex(i)
        except Exception as exc:
            log(f"NVML has no GPU {i} ({exc}): no metrics for it")
    if not handles:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass
        return None
    return Nvml(nvml, handles)
