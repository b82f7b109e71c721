"""TF Serving's model_config_list text proto -> [[models]] tables.

Each `config { ... }` becomes the table a user would write in the TOML file, and goes
through the same validation as one. Every field is either mapped or reported as
dropped; the reports are logged at start and become comments in `ringserve migrate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from . import protos, textproto

# TF Serving's removed enum spelling of the policy; rewritten on its own line, so
# line numbers in errors stay right.
_OLD_ENUM = re.compile(r"\bversion_policy\s*:\s*(LATEST_VERSION|ALL_VERSIONS)\b")


def _as_message(m: re.Match[str]) -> str:
    return "version_policy { %s {} }" % ("all" if m.group(1) == "ALL_VERSIONS" else "latest")


@dataclass
class TfsModel:
    """One model of the file: the [[models]] table and a note per field."""

    raw: dict[str, Any]
    key: str  # where it came from, for messages: model_config_list.config[i]
    notes: list[tuple[str, str]] = field(default_factory=list)  # (field, what became of it)
    ignored: list[str] = field(default_factory=list)  # the notes worth a log line


def read(path: Path) -> list[TfsModel]:
    text = _OLD_ENUM.sub(_as_message, textproto.read_text(path, "model_config_file"))
    msg = textproto.parse(path, text, [protos.message_class("ModelServerConfig")])
    if msg.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{path}: custom_model_config: not supported; expected model_config_list")
    base_dir = path.resolve().parent
    return [_model(path, base_dir, i, mc) for i, mc in enumerate(msg.model_config_list.config)]


def _set_fields(mc: Any) -> set[str]:
    return {fd.name for fd, _ in mc.ListFields()}


def _model(path: Path, base_dir: Path, i: int, mc: Any) -> TfsModel:
    key = f"model_config_list.config[{i}]"
    fields = _set_fields(mc)
    m = TfsModel({}, key)

    def fail(fname: str, expected: str, got: Any) -> ConfigError:
        return ConfigError(f"{path}: {key}.{fname}: expected {expected}, received {got!r}")

    if not mc.name:
        raise fail("name", "a model name", "")
    m.raw["name"] = mc.name
    m.notes.append(("name", "mapped to name"))
    if not mc.base_path:
        raise fail("base_path", "a folder of numbered versions", "")
    bp = Path(mc.base_path)
    if not bp.is_absolute():
        bp = base_dir / bp
    m.raw["base_path"] = str(bp)
    m.notes.append(("base_path", "mapped to base_path (absolute; relative to the models.config)"))
    platform = mc.model_platform or "tensorflow"
    if platform != "tensorflow":
        raise fail(
            "model_platform", '"tensorflow" (ringserve serves TensorFlow SavedModels)', platform
        )
    m.notes.append(("model_platform", 'checked ("tensorflow"); nothing to set'))
    if "model_type" in fields:
        if mc.model_type != 1:  # TENSORFLOW
            raise fail("model_type", "TENSORFLOW", mc.model_type)
        m.notes.append(("model_type", "deprecated in TF Serving; TENSORFLOW is the only one"))
    policies = [f for f in ("model_version_policy", "version_policy") if f in fields]
    if len(policies) > 1:
        raise fail("version_policy", "one of model_version_policy or version_policy", "both")
    if policies:
        pname = policies[0]
        value = getattr(mc, pname)
        m.raw["version_policy"] = _policy(value, lambda e, g: fail(pname, e, g))
        m.notes.append((pname, "mapped to version_policy"))
    if mc.version_labels:
        labels = {k: int(v) for k, v in sorted(mc.version_labels.items())}
        m.raw["version_labels"] = labels
        m.notes.append(
            ("version_labels", "mapped to version_labels (REST paths may say /labels/{label})")
        )
    if "logging_config" in fields:
        why = "logging_config: accepted and ignored (ringserve does not log requests to files)"
        m.notes.append(("logging_config", "dropped: ringserve does not log requests to files"))
        m.ignored.append(f"{path}: {key} ({mc.name}): {why}")
    if "model_thread_pool_size" in fields:
        n = mc.model_thread_pool_size
        if n < 0:
            raise fail("model_thread_pool_size", "a number of threads >= 0", n)
        m.raw["instances"] = {"intra_op_threads": n, "inter_op_threads": 1 if n else 0}
        m.notes.append(
            (
                "model_thread_pool_size",
                f"instances.intra_op_threads = {n}, inter_op_threads = {1 if n else 0} "
                "(the pool runs the model's ops; 0 = TensorFlow's choice)",
            )
        )
    return m


def _policy(p: Any, fail: Any) -> Any:
    which = p.WhichOneof("policy_choice")
    if which is None or (which == "latest" and p.latest.num_versions <= 1):
        return "latest"  # TF Serving's default: the newest version
    if which == "latest":
        return {"latest": int(p.latest.num_versions)}
    if which == "all":
        return "all"
    versions = [int(v) for v in p.specific.versions]
    if not versions or min(versions) < 1:
        raise fail("specific { versions: N ... } with versions >= 1", versions)
    return {"specific": versions}
