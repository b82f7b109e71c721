"""Models and batching from TF Serving's files, added to the TOML's [[models]].

`[server] model_config_file` adds its models (a name in both places is an error);
`[server] batching_parameters_file` (or `enable_batching = true`: TF Serving's
defaults) gives every model without a [models.batching] table of its own that
batching, as TF Serving's --enable_batching gives every model one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import _V, ConfigError, ServerConfig
from . import batching, model_config

if TYPE_CHECKING:
    from ..config import Entry


def _resolve(p: str, base_dir: Path | None) -> Path:
    path = Path(p)
    return path if path.is_absolute() or base_dir is None else base_dir / path


def add_tf_serving(
    path: str, server: ServerConfig, base_dir: Path | None, entries: list[Entry]
) -> tuple[list[Entry], list[str]]:
    notes: list[str] = []
    out = list(entries)
    if server.model_config_file:
        mc_path = _resolve(server.model_config_file, base_dir)
        mv = _V(str(mc_path))
        ours = {m.get("name") for _, _, m, _ in entries if isinstance(m, dict)}
        for m in model_config.read(mc_path):
            if m.raw["name"] in ours:
                raise ConfigError(
                    f"{path}: model {m.raw['name']!r} is defined both in [[models]] and in "
                    f"model_config_file {mc_path}; keep one"
                )
            out.append((mv, m.key, m.raw, None))
            notes += m.ignored
    b: batching.TfsBatching | None = None
    if server.batching_parameters_file:
        b = batching.read(_resolve(server.batching_parameters_file, base_dir))
    elif server.enable_batching:
        b = batching.defaults()
    if b is not None:
        notes += b.ignored
        table: dict[str, Any] = b.raw
        out = [
            (ev, k, {**m, "batching": dict(table)}, bd)
            if isinstance(m, dict) and "batching" not in m
            else (ev, k, m, bd)
            for ev, k, m, bd in out
        ]
    return out, notes
