"""TF Serving's BatchingParameters text proto -> a [models.batching] table.

TF Serving applies one BatchingParameters to every model (`--enable_batching`); so
does ringserve, to every model without a [models.batching] table of its own. Its
fields are wrapped scalars (`max_batch_size { value: 32 }`). Absent fields take
TF Serving's defaults (BasicBatchScheduler::Options). TF Serving's queue is counted
in batches; ringserve's in requests: max_queue = max_enqueued_batches x
max_batch_size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from . import protos, textproto

# TF Serving's defaults when a field (or the whole file) is absent.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10


@dataclass
class TfsBatching:
    raw: dict[str, Any]  # the [models.batching] table
    notes: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def defaults() -> TfsBatching:
    """`--enable_batching` without a file: TF Serving's defaults."""
    return _convert(Path("<defaults>"), protos.message_class("BatchingParameters")())


def read(path: Path) -> TfsBatching:
    text = textproto.read_text(path, "batching_parameters_file")
    msg = textproto.parse(path, text, [protos.message_class("BatchingParameters")])
    return _convert(path, msg)


def _convert(path: Path, msg: Any) -> TfsBatching:
    out = TfsBatching({})

    def value(name: str, default: int) -> int:
        if not msg.HasField(name):
            out.notes.append((name, f"absent: TF Serving's default {default}"))
            return default
        v = int(getattr(msg, name).value)
        if v < 0:
            raise ConfigError(f"{path}: {name}: expected a value >= 0, received {v}")
        return v

    mbs = value("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
    if mbs < 1:
        raise ConfigError(f"{path}: max_batch_size: expected a value >= 1, received {mbs}")
    timeout = value("batch_timeout_micros", DEFAULT_BATCH_TIMEOUT_MICROS)
    enqueued = value("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES)
    if enqueued < 1:
        raise ConfigError(f"{path}: max_enqueued_batches: expected a value >= 1, received 0")
    out.raw = {
        "max_batch_size": mbs,
        "batch_timeout_us": timeout,
        "max_queue": enqueued * mbs,
    }
    out.notes += [
        ("max_batch_size", "mapped to batching.max_batch_size"),
        ("batch_timeout_micros", "mapped to batching.batch_timeout_us"),
        (
            "max_enqueued_batches",
            "mapped to batching.max_queue = max_enqueued_batches x max_batch_size "
            "(ringserve counts waiting requests, TF Serving batches)",
        ),
    ]
    if msg.allowed_batch_sizes:
        out.raw["allowed_batch_sizes"] = [int(x) for x in msg.allowed_batch_sizes]
        out.notes.append(("allowed_batch_sizes", "mapped to batching.allowed_batch_sizes"))
    dropped = {
        "num_batch_threads": "each worker runs one batch at a time; [models.instances] count "
        "sets how many run at once",
        "thread_pool_name": "no shared batch thread pool in ringserve",
        "pad_variable_length_inputs": "not supported: only requests whose dimensions after "
        "the first match are batched together (others run alone)",
        "enable_large_batch_splitting": "not supported: a request over max_batch_size is refused",
        "max_execution_batch_size": "not supported: batches never exceed max_batch_size",
    }
    for name, why in dropped.items():
        has = (
            msg.HasField(name)
            if name != "pad_variable_length_inputs"
            else msg.pad_variable_length_inputs
        )
        if has:
            shown = getattr(msg, name)
            shown = getattr(shown, "value", shown)
            if isinstance(shown, bool):
                shown = str(shown).lower()
            out.notes.append((name, f"{shown}: dropped: {why}"))
            out.ignored.append(f"{path}: {name} ({shown}): accepted and ignored: {why}")
    return out
