"""The config's keys turned into the frontend's settings (frontend/settings.py):
the frontend never reads the config itself."""

from __future__ import annotations

from pathlib import Path

from ringserve.frontend.settings import FrontendSettings, ModelSettings

from .config import Config, ModelConfig


def model_settings(m: ModelConfig) -> ModelSettings:
    b = m.batching
    return ModelSettings(
        name=m.name,
        max_queue=m.max_queue,
        max_batch_size=b.max_batch_size if b else 0,
        batch_timeout_us=b.batch_timeout_us if b else 0,
        allowed_batch_sizes=b.allowed_batch_sizes if b else (),
        version_labels=m.version_labels,
    )


def frontend_settings(cfg: Config) -> FrontendSettings:
    s = cfg.server
    token = Path(s.auth_token_file).read_text().strip() if s.auth_token_file else None
    return FrontendSettings(
        tcp=s.tcp,
        unix=s.unix,
        unix_mode=s.unix_mode,
        metrics=s.metrics,
        http=s.http,
        http_idle_timeout_seconds=s.http_idle_timeout_seconds,
        max_frame_bytes=s.max_frame_bytes,
        auth_token=token,
        max_inflight_per_connection=s.max_inflight_per_connection,
        worker_inflight=s.worker_inflight,
        default_timeout_ms=s.default_timeout_ms,
        max_spin_us=s.max_spin_us,
        max_connections=s.max_connections,
        max_frame_bytes_before_auth=s.max_frame_bytes_before_auth,
        handshake_timeout_seconds=s.handshake_timeout_seconds,
        frame_timeout_seconds=s.frame_timeout_seconds,
        max_tensor_rank=s.max_tensor_rank,
        max_regions_per_connection=s.max_regions_per_connection,
        max_region_bytes_per_connection=s.max_region_bytes_per_connection,
        models=tuple(model_settings(m) for m in cfg.models),
    )
