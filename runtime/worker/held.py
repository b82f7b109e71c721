"""The model versions one worker process holds, and which one a request record is for.

A worker of a model holds that model's one version; a worker of a group holds every
model of the group, each at every version served (docs/groups.md). Each is loaded
and warmed on its own: one that fails is reported failed and the others serve.

A request head is `[rid, signature, outputs, deadline]`, followed by `model, version`
when the worker holds more than one model version. The head comes from another
process, so every field is checked before use; a head this worker cannot serve is
answered with an error naming the field, never by crashing the worker, which would
take every other model's in-flight requests with it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .say import say

Key = tuple[str, int]

# What a request record names: the model version's object and the signature's name.
Target = tuple[Any, str]


class RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 80 else r[:80] + "..."


class Held:
    def __init__(self) -> None:
        self.loaded: dict[Key, Any] = {}
        self.failed: dict[Key, str] = {}

    def load_all(self, entries: list[dict[str, Any]], M: Any) -> list[dict[str, Any]]:
        """Load and warm every entry (`name`, `version`, `path`) in order; one report each."""
        reports = []
        for e in entries:
            key = (str(e["name"]), int(e["version"]))
            try:
                loaded = M.LoadedModel(Path(e["path"]))
                t0 = time.perf_counter()
                runs = loaded.warmup()
                report = {
                    "model": key[0],
                    "version": key[1],
                    "ok": True,
                    "signatures": loaded.metadata(),
                    "load_seconds": loaded.load_seconds,
                    "warmup_seconds": time.perf_counter() - t0,
                    "warmup_runs": runs,
                    "call_paths": loaded.call_paths(),
                }
                self.loaded[key] = loaded
            except Exception as exc:  # this model only: the group's others still load
                msg = f"{type(exc).__name__}: {exc}"[:2000]
                say(f"ringserve worker: {key[0]}/{key[1]}: load failed: {msg}")
                self.failed[key] = msg
                report = {"model": key[0], "version": key[1], "ok": False, "message": msg}
            reports.append(report)
        return reports

    def target(self, head: list[Any]) -> Target:
        """The loaded model and signature name a request head names; RequestError if
        this worker cannot serve it."""
        sig = head[1]
        if type(sig) is not str:
            raise RequestError("INVALID_ARGUMENT", f"field 'signature': received {_short(sig)}")
        if len(head) >= 6:
            name, version = head[4], head[5]
            if type(name) is not str or type(version) is not int:
                raise RequestError(
                    "INTERNAL",
                    "request record: expected model (string) and version (int), "
                    f"received {_short(name)} and {_short(version)}",
                )
            key = (name, version)
        elif len(self.loaded) + len(self.failed) == 1:
            key = next(iter(self.loaded or self.failed))
        else:
            raise RequestError(
                "INTERNAL",
                f"request record: names no model, and this worker holds {len(self.loaded)}",
            )
        loaded = self.loaded.get(key)
        if loaded is None:
            if key in self.failed:
                raise RequestError(
                    "UNAVAILABLE",
                    f"model {key[0]!r} version {key[1]} failed to load in this worker: "
                    f"{self.failed[key]}",
                )
            raise RequestError(
                "INTERNAL",
                f"request record: model {_short(key[0])} version {key[1]} is not held by "
                f"this worker (it holds {sorted(self.loaded)[:20]})",
            )
        if sig not in loaded.signatures:
            raise RequestError(
                "NOT_FOUND",
                f"field 'signature': expected one of {sorted(loaded.signatures)}, "
                f"received {_short(sig)}",
            )
        return loaded, sig
