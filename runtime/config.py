"""Typed server configuration: TOML loading and validation (config.md).

Every key is checked before anything binds: an unknown key, a wrong type or an
impossible value raises ConfigError with one message naming the file, the key, what
was expected and what was received.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any

from .configkeys import (
    BATCH_KEYS,
    INSTANCE_KEYS,
    MODEL_KEYS,
    OVERRIDE_KEYS,
    SERVER_KEYS,
    Batching,
    Config,
    GroupConfig,
    Instances,
    ModelConfig,
    ServerConfig,
    VersionPolicy,
    WorkerOverride,
)

__all__ = [
    "Batching",
    "Config",
    "ConfigError",
    "GroupConfig",
    "Instances",
    "ModelConfig",
    "ServerConfig",
    "VersionPolicy",
    "WorkerOverride",
    "demo_config",
    "list_versions",
    "load",
    "parse",
]


class ConfigError(Exception):
    pass


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DEVICE = re.compile(r"^(cpu|gpu:\d+)$")


class _V:
    """Validation context: the file name and a key path for messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, expected: str, got: Any) -> ConfigError:
        return ConfigError(f"{self.path}: key '{key}': expected {expected}, received {got!r}")

    def table(self, key: str, value: Any, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "a table", value)
        for k in value:
            if k not in allowed:
                full = f"{key}.{k}" if key else k
                raise ConfigError(
                    f"{self.path}: key '{full}': unknown key; expected one of {sorted(allowed)}"
                )
        return value

    def int_(self, key: str, v: Any, lo: int = 0, hi: int | None = None) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise self.fail(key, f"an integer {rng}", v)
        return v

    def num(self, key: str, v: Any, lo: float = 0.0) -> float:
        # NaN compares false with everything, so `v < lo` alone lets it through.
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise self.fail(key, f"a finite number >= {lo}", v)
        if v < lo:
            raise self.fail(key, f"a number >= {lo}", v)
        return float(v)

    def str_(self, key: str, v: Any) -> str:
        if not isinstance(v, str):
            raise self.fail(key, "a string", v)
        return v


def load(path: str | os.PathLike[str]) -> Config:
    p = str(path)
    try:
        with open(p, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    return parse(raw, p, base_dir=Path(p).resolve().parent)


# One model table to validate: the context naming its file, its key, the table, and
# the folder its relative base_path is relative to.
Entry = tuple["_V", str, Any, "Path | None"]


def parse(
    raw: dict[str, Any],
    path: str = "<config>",
    base_dir: Path | None = None,
    model_instances: dict[str, Any] | None = None,
) -> Config:
    """`model_instances`: [models.instances] keys every model gets (TF Serving's
    --tensorflow_*_parallelism flags)."""
    v = _V(path)
    v.table("", raw, {"server", "models", "groups"})
    server = _server(v, raw.get("server", {}))
    models_raw = raw.get("models", [])
    if not isinstance(models_raw, list):
        raise v.fail("models", "an array of tables ([[models]])", models_raw)
    entries: list[Entry] = [(v, f"models[{i}]", m, base_dir) for i, m in enumerate(models_raw)]
    notes: list[str] = []
    if server.model_config_file or server.batching_parameters_file or server.enable_batching:
        from .tfserving.sources import add_tf_serving

        entries, notes = add_tf_serving(path, server, base_dir, entries)
    explicit = {
        m["name"]: (k, set(m))
        for _, k, m, _ in entries
        if isinstance(m, dict) and isinstance(m.get("name"), str)
    }
    if model_instances:
        entries = [
            (ev, k, {**m, "instances": {**m.get("instances", {}), **model_instances}}, bd)
            if isinstance(m, dict)
            else (ev, k, m, bd)
            for ev, k, m, bd in entries
        ]
    models = tuple(_model(ev, k, m, bd) for ev, k, m, bd in entries)
    names = [m.name for m in models]
    for n in names:
        if names.count(n) > 1:
            raise v.fail("models.name", "unique model names", n)
    groups: tuple[GroupConfig, ...] = ()
    if "groups" in raw:
        from .groupconfig import parse_groups

        groups = parse_groups(v, raw["groups"], models, explicit, model_instances)
    return Config(server=server, models=models, path=path, notes=tuple(notes), groups=groups)


def _server(v: _V, raw: Any) -> ServerConfig:
    t = v.table("server", raw, SERVER_KEYS)
    d = ServerConfig()
    out: dict[str, Any] = {}
    for k in ("tcp", "metrics", "http"):
        if k in t:
            out[k] = _hostport(v, f"server.{k}", t[k])
    if "unix" in t:
        out["unix"] = v.str_("server.unix", t["unix"])
    if "auth_token_file" in t:
        out["auth_token_file"] = v.str_("server.auth_token_file", t["auth_token_file"])
        if out["auth_token_file"] and not os.path.isfile(out["auth_token_file"]):
            raise v.fail("server.auth_token_file", "a readable file", out["auth_token_file"])
    if "name" in t:
        name = v.str_("server.name", t["name"])
        if not _NAME.match(name):
            raise v.fail("server.name", "letters, digits, '_', '.', '-' (max 64)", name)
        out["name"] = name
    for k in ("model_config_file", "batching_parameters_file"):
        if k in t:
            out[k] = v.str_(f"server.{k}", t[k])
    if "enable_batching" in t:
        if not isinstance(t["enable_batching"], bool):
            raise v.fail("server.enable_batching", "true or false", t["enable_batching"])
        out["enable_batching"] = t["enable_batching"]
    if "unix_mode" in t:
        out["unix_mode"] = v.int_("server.unix_mode", t["unix_mode"], 0, 0o777)
    ints = {
        "max_frame_bytes": 64,
        "ring_bytes": 64 * 1024,
        "max_inflight_per_connection": 1,
        "worker_inflight": 1,
        "default_timeout_ms": 0,
        "max_spin_us": 0,
        "max_connections": 1,
        "max_frame_bytes_before_auth": 64,
        "max_regions_per_connection": 0,
        "max_region_bytes_per_connection": 0,
        "group_load_retries": 0,
    }
    for k, lo in ints.items():
        if k in t:
            out[k] = v.int_(f"server.{k}", t[k], lo)
    if "max_tensor_rank" in t:
        # The ring and the SDK refuse more than MAX_RANK whatever this says.
        out["max_tensor_rank"] = v.int_("server.max_tensor_rank", t["max_tensor_rank"], 0, 32)
    if "ring_bytes" in out and out["ring_bytes"] % 4096:
        raise v.fail("server.ring_bytes", "a multiple of 4096", out["ring_bytes"])
    for k in (
        "grace_seconds",
        "drain_delay_seconds",
        "heartbeat_timeout_seconds",
        "version_poll_seconds",
        "worker_start_timeout_seconds",
        "group_load_retry_seconds",
        "http_idle_timeout_seconds",
        "handshake_timeout_seconds",
        "frame_timeout_seconds",
    ):
        if k in t:
            out[k] = v.num(f"server.{k}", t[k], 0.0)
    token_file = out.get("auth_token_file", "")
    before_auth = out.get("max_frame_bytes_before_auth", d.max_frame_bytes_before_auth)
    if token_file and os.path.getsize(token_file) + 64 > before_auth:
        raise v.fail(
            "server.max_frame_bytes_before_auth",
            f"room for the auth frame: at least the token's size + 64 "
            f"({os.path.getsize(token_file) + 64} bytes)",
            before_auth,
        )
    if not out.get("tcp", d.tcp) and not out.get("unix", d.unix):
        raise v.fail("server.tcp", "a listener: tcp or unix must be set", "")
    return ServerConfig(**{**d.__dict__, **out})


def _hostport(v: _V, key: str, s: Any) -> str:
    s = v.str_(key, s)
    if not s:
        return s
    host, sep, port = s.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise v.fail(key, '"host:port" or ""', s)
    return s


def _model(v: _V, k: str, raw: Any, base_dir: Path | None) -> ModelConfig:
    t = v.table(k, raw, MODEL_KEYS)
    if "name" not in t:
        raise v.fail(f"{k}.name", "a model name", "<absent>")
    name = v.str_(f"{k}.name", t["name"])
    if not _NAME.match(name):
        raise v.fail(f"{k}.name", "letters, digits, '_', '.', '-' (max 64)", name)
    if "base_path" not in t:
        raise v.fail(f"{k}.base_path", "a folder path", "<absent>")
    bp = Path(v.str_(f"{k}.base_path", t["base_path"]))
    if not bp.is_absolute() and base_dir is not None:
        bp = base_dir / bp
    if not bp.is_dir():
        raise v.fail(f"{k}.base_path", "an existing folder of numbered versions", str(bp))
    policy = _policy(v, f"{k}.version_policy", t.get("version_policy", "latest"))
    inst = _instances(v, f"{k}.instances", t.get("instances", {}))
    batching = None
    if "batching" in t:
        bt = v.table(f"{k}.batching", t["batching"], BATCH_KEYS)
        d = Batching()
        mbs = v.int_(f"{k}.batching.max_batch_size", bt.get("max_batch_size", d.max_batch_size), 1)
        allowed = bt.get("allowed_batch_sizes", [])
        if not isinstance(allowed, list):
            raise v.fail(f"{k}.batching.allowed_batch_sizes", "a list of integers", allowed)
        sizes = tuple(v.int_(f"{k}.batching.allowed_batch_sizes", x, 1) for x in allowed)
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != mbs):
            raise v.fail(
                f"{k}.batching.allowed_batch_sizes",
                f"increasing sizes ending at max_batch_size ({mbs})",
                list(sizes),
            )
        batching = Batching(
            max_batch_size=mbs,
            batch_timeout_us=v.int_(
                f"{k}.batching.batch_timeout_us", bt.get("batch_timeout_us", d.batch_timeout_us)
            ),
            allowed_batch_sizes=sizes,
            max_queue=v.int_(f"{k}.batching.max_queue", bt.get("max_queue", d.max_queue), 1),
        )
    max_queue = v.int_(f"{k}.max_queue", t.get("max_queue", ModelConfig.max_queue), 1)
    if batching is not None:
        max_queue = batching.max_queue
    swap = v.int_(
        f"{k}.min_available_during_swap", t.get("min_available_during_swap", 0), 0, inst.count
    )
    labels = _labels(v, f"{k}.version_labels", t.get("version_labels", {}))
    return ModelConfig(
        name, bp, policy, inst, batching, max_queue, labels, min_available_during_swap=swap
    )


def _labels(v: _V, key: str, raw: Any) -> tuple[tuple[str, int], ...]:
    """TF Serving's version labels: a name for a version, usable in REST paths."""
    if not isinstance(raw, dict):
        raise v.fail(key, "a table of label = version", raw)
    out = []
    for label, version in sorted(raw.items()):
        if not _NAME.match(label):
            raise v.fail(key, "labels of letters, digits, '_', '.', '-' (max 64)", label)
        out.append((label, v.int_(f"{key}.{label}", version, 1)))
    return tuple(out)


def _policy(v: _V, key: str, raw: Any) -> VersionPolicy:
    if raw in ("latest", "all"):
        return VersionPolicy(raw)
    if isinstance(raw, dict) and len(raw) == 1:
        if "latest" in raw:
            return VersionPolicy("latest", latest=v.int_(f"{key}.latest", raw["latest"], 1))
        if "specific" in raw:
            spec = raw["specific"]
            if not isinstance(spec, list) or not spec:
                raise v.fail(f"{key}.specific", "a non-empty list of version numbers", spec)
            return VersionPolicy(
                "specific", specific=tuple(v.int_(f"{key}.specific", x, 1) for x in spec)
            )
    raise v.fail(key, '"latest", "all", {latest = N} or {specific = [...]}', raw)


def _cpuset(v: _V, key: str, raw: Any) -> tuple[int, ...]:
    """A CPU set: a list of CPU numbers or a string like "0,2-3"."""
    cpus: list[int] = []
    if isinstance(raw, str):
        for part in raw.split(","):
            a, _, b = part.strip().partition("-")
            if not a.isdigit() or (b and not b.isdigit()) or (b and int(b) < int(a)):
                raise v.fail(key, 'a CPU set like [0, 1] or "0-1" (ranges low-high)', raw)
            cpus.extend(range(int(a), int(b or a) + 1))
    elif isinstance(raw, list):
        cpus = [v.int_(key, x, 0) for x in raw]
    elif isinstance(raw, int) and not isinstance(raw, bool):
        cpus = [v.int_(key, raw, 0)]
    else:
        raise v.fail(key, 'a CPU set like [0, 1] or "0-1"', raw)
    if not cpus:
        raise v.fail(key, "a non-empty CPU set", raw)
    ncpu = os.cpu_count() or 1
    for c in cpus:
        if c >= ncpu:
            raise v.fail(key, f"CPU numbers below {ncpu} (this machine's count)", c)
    return tuple(sorted(set(cpus)))


def _device(v: _V, key: str, d: Any) -> str:
    if not isinstance(d, str) or not _DEVICE.match(d):
        raise v.fail(key, '"cpu" or "gpu:N"', d)
    return d


def _instances(v: _V, key: str, raw: Any) -> Instances:
    t = v.table(key, raw, INSTANCE_KEYS)
    d = Instances()
    count = v.int_(f"{key}.count", t.get("count", d.count), 1, 256)
    devices = t.get("devices", list(d.devices))
    if not isinstance(devices, list) or not devices:
        raise v.fail(f"{key}.devices", 'a non-empty list like ["cpu"] or ["gpu:0"]', devices)
    devs = tuple(_device(v, f"{key}.devices", x) for x in devices)
    aff = t.get("cpu_affinity", [])
    if not isinstance(aff, list):
        raise v.fail(f"{key}.cpu_affinity", "a list of CPU sets", aff)
    if aff and all(isinstance(x, int) and not isinstance(x, bool) for x in aff):
        aff = [aff]  # one set for every worker
    sets = tuple(_cpuset(v, f"{key}.cpu_affinity", x) for x in aff)
    frac = v.num(f"{key}.gpu_memory_fraction", t.get("gpu_memory_fraction", 0.0))
    if frac > 1.0:
        raise v.fail(f"{key}.gpu_memory_fraction", "a number in [0, 1]", frac)
    workers_raw = t.get("workers", [])
    if not isinstance(workers_raw, list):
        raise v.fail(f"{key}.workers", "an array of tables", workers_raw)
    overrides = []
    for j, w in enumerate(workers_raw):
        wk = f"{key}.workers[{j}]"
        wt = v.table(wk, w, OVERRIDE_KEYS)
        overrides.append(
            WorkerOverride(
                device=_device(v, f"{wk}.device", wt["device"]) if "device" in wt else None,
                intra_op_threads=v.int_(f"{wk}.intra_op_threads", wt["intra_op_threads"], 0)
                if "intra_op_threads" in wt
                else None,
                inter_op_threads=v.int_(f"{wk}.inter_op_threads", wt["inter_op_threads"], 0)
                if "inter_op_threads" in wt
                else None,
                cpu_affinity=_cpuset(v, f"{wk}.cpu_affinity", wt["cpu_affinity"])
                if "cpu_affinity" in wt
                else None,
            )
        )
    if len(overrides) > count:
        raise v.fail(f"{key}.workers", f"at most count ({count}) entries", len(overrides))
    return Instances(
        count=count,
        devices=devs,
        intra_op_threads=v.int_(
            f"{key}.intra_op_threads", t.get("intra_op_threads", d.intra_op_threads), 0
        ),
        inter_op_threads=v.int_(
            f"{key}.inter_op_threads", t.get("inter_op_threads", d.inter_op_threads), 0
        ),
        cpu_affinity=sets,
        gpu_memory_mb=v.int_(f"{key}.gpu_memory_mb", t.get("gpu_memory_mb", 0), 0),
        gpu_memory_fraction=frac,
        workers=tuple(overrides),
    )


def list_versions(base_path: Path) -> list[int]:
    """Numbered version folders under base_path (not checked for completeness)."""
    try:
        return sorted(int(p.name) for p in base_path.iterdir() if p.is_dir() and p.name.isdigit())
    except OSError:
        return []


def demo_config(base_path: Path, tcp: str, unix: str) -> Config:
    model = ModelConfig(name="demo", base_path=base_path)
    return Config(server=ServerConfig(tcp=tcp, unix=unix), models=(model,), path="<demo>")
