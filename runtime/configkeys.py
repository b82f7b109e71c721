"""The server's TOML, key by key: each table ([server], [[models]] with its
instances, workers and batching, [[groups]]) as a frozen dataclass whose fields are
the keys, with their types and defaults. Loading and validation are in config.py
(config.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringserve.frontend.settings import FrontendSettings, ModelSettings

# The frontend's defaults, read off instances: its settings classes are compiled
# (pkg/native.py), and a compiled class holds no defaults as class attributes.
_FE = FrontendSettings()
_MS = ModelSettings("")


@dataclass(frozen=True)
class VersionPolicy:
    kind: str  # "latest" | "all" | "specific"
    latest: int = 1
    specific: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve among those found on disk (ascending)."""
        found = sorted(available)
        if self.kind == "all":
            return found
        if self.kind == "specific":
            return [v for v in found if v in self.specific]
        return found[-self.latest :] if found else []

    def describe(self) -> Any:
        if self.kind == "specific":
            return {"specific": list(self.specific)}
        if self.kind == "latest" and self.latest != 1:
            return {"latest": self.latest}
        return self.kind


@dataclass(frozen=True)
class WorkerOverride:
    """Per-worker settings that replace the group's (e.g. one worker per NUMA node)."""

    device: str | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    cpu_affinity: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Instances:
    count: int = 1
    devices: tuple[str, ...] = ("cpu",)
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    cpu_affinity: tuple[tuple[int, ...], ...] = ()
    gpu_memory_mb: int = 0
    gpu_memory_fraction: float = 0.0
    workers: tuple[WorkerOverride, ...] = ()


@dataclass(frozen=True)
class Batching:
    max_batch_size: int = 32
    batch_timeout_us: int = 1000
    allowed_batch_sizes: tuple[int, ...] = ()
    max_queue: int = _MS.max_queue


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: Path
    version_policy: VersionPolicy = VersionPolicy("latest")
    instances: Instances = Instances()
    batching: Batching | None = None
    max_queue: int = _MS.max_queue
    version_labels: tuple[tuple[str, int], ...] = ()
    # Serving workers a new version needs before the one it replaces is unloaded;
    # 0 means all of instances.count.
    min_available_during_swap: int = 0

    @property
    def swap_threshold(self) -> int:
        return self.min_available_during_swap or self.instances.count


# Keys the frontend enforces take its defaults (frontend/settings.py): one source, so
# a default changed there cannot leave the config key's default behind.
@dataclass(frozen=True)
class GroupConfig:
    """Models that share worker processes: one placement, every model in each worker."""

    name: str
    models: tuple[str, ...]
    instances: Instances = Instances()


@dataclass(frozen=True)
class ServerConfig:
    tcp: str = "127.0.0.1:8700"
    unix: str = "/run/ringserve/ringserve.sock"
    unix_mode: int = _FE.unix_mode
    max_frame_bytes: int = _FE.max_frame_bytes
    metrics: str = ""
    http: str = ""
    http_idle_timeout_seconds: float = _FE.http_idle_timeout_seconds
    auth_token_file: str = ""
    name: str = "default"
    ring_bytes: int = 64 * 1024 * 1024
    max_inflight_per_connection: int = _FE.max_inflight_per_connection
    worker_inflight: int = _FE.worker_inflight
    default_timeout_ms: int = _FE.default_timeout_ms
    grace_seconds: float = 30.0
    drain_delay_seconds: float = 0.0
    heartbeat_timeout_seconds: float = 60.0
    version_poll_seconds: float = 5.0
    worker_start_timeout_seconds: float = 120.0
    # A member of a [[groups]] table that fails to load is tried again by a fresh group
    # worker this many times, this far apart (TF Serving's max_num_load_retries and
    # load_retry_interval_micros); a model's own worker is restarted with backoff.
    group_load_retries: int = 5
    group_load_retry_seconds: float = 60.0
    max_spin_us: int = _FE.max_spin_us
    model_config_file: str = ""
    batching_parameters_file: str = ""
    enable_batching: bool = False
    # Input limits (docs/security.md): every one is a bound on what a client can make
    # the server hold or compute before it has proved anything.
    max_connections: int = _FE.max_connections
    max_frame_bytes_before_auth: int = _FE.max_frame_bytes_before_auth
    handshake_timeout_seconds: float = _FE.handshake_timeout_seconds
    frame_timeout_seconds: float = _FE.frame_timeout_seconds
    max_tensor_rank: int = _FE.max_tensor_rank
    max_regions_per_connection: int = _FE.max_regions_per_connection
    max_region_bytes_per_connection: int = _FE.max_region_bytes_per_connection


@dataclass(frozen=True)
class Config:
    server: ServerConfig = ServerConfig()
    models: tuple[ModelConfig, ...] = ()
    path: str = "<defaults>"
    notes: tuple[str, ...] = ()  # fields of TF Serving files accepted and ignored: logged
    groups: tuple[GroupConfig, ...] = ()

    def group_of(self, model: str) -> GroupConfig | None:
        return next((g for g in self.groups if model in g.models), None)


# The keys each table accepts: anything else is refused, naming the key.
SERVER_KEYS = set(ServerConfig.__dataclass_fields__)
MODEL_KEYS = {
    "name",
    "base_path",
    "version_policy",
    "instances",
    "batching",
    "max_queue",
    "min_available_during_swap",
    "version_labels",
}
INSTANCE_KEYS = set(Instances.__dataclass_fields__)
BATCH_KEYS = set(Batching.__dataclass_fields__)
OVERRIDE_KEYS = set(WorkerOverride.__dataclass_fields__)
