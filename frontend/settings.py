"""The frontend's settings, a small typed object the supervisor fills in."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelSettings:
    name: str
    max_queue: int = 1024
    max_batch_size: int = 0  # 0: no server-side batching
    batch_timeout_us: int = 0
    allowed_batch_sizes: tuple[int, ...] = ()
    version_labels: tuple[tuple[str, int], ...] = ()  # TF Serving's labels: REST /labels/{l}


@dataclass(frozen=True)
class FrontendSettings:
    tcp: str = ""
    unix: str = ""
    unix_mode: int = 0o660
    metrics: str = ""
    http: str = ""
    http_idle_timeout_seconds: float = 75.0
    max_frame_bytes: int = 256 * 1024 * 1024
    auth_token: str | None = None
    max_inflight_per_connection: int = 1024
    worker_inflight: int = 2
    default_timeout_ms: int = 0
    max_spin_us: int = 1000
    max_connections: int = 256
    max_frame_bytes_before_auth: int = 8192
    handshake_timeout_seconds: float = 10.0
    frame_timeout_seconds: float = 60.0
    max_tensor_rank: int = 32
    max_regions_per_connection: int = 64
    max_region_bytes_per_connection: int = 1 << 30
    models: tuple[ModelSettings, ...] = field(default_factory=tuple)
