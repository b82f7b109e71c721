"""Models, their versions and the workers serving each: what `health`, `models` and
`metadata` report, and what `infer` resolves against."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ringserve.ipc.errors import NOT_FOUND, UNAVAILABLE, ProtocolError, clip

from .links import WorkerLink
from .recorder import VersionMetrics
from .settings import ModelSettings

LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNAVAILABLE_STATE = "UNAVAILABLE"
UNLOADING = "UNLOADING"


@dataclass(eq=False)
class VersionState:
    number: int
    model: str = ""
    state: str = LOADING
    message: str = ""
    signatures: dict[str, Any] = field(default_factory=dict)
    links: list[WorkerLink] = field(default_factory=list)
    queue: deque[Any] = field(default_factory=deque)
    metrics: VersionMetrics = field(default_factory=VersionMetrics)
    # A batch's replies went out and no request for this version has come in since:
    # its clients are answering, and their requests wake the loop (polling.py).
    replied_last: bool = False

    def serving_links(self) -> list[WorkerLink]:
        return [ln for ln in self.links if ln.serving]

    def has_serving_link(self) -> bool:
        """`serving_links()` is not empty, without building it (asked per request)."""
        for ln in self.links:
            if ln.serving:
                return True
        return False


@dataclass(eq=False)
class ModelState:
    settings: ModelSettings
    versions: dict[int, VersionState] = field(default_factory=dict)
    message: str = ""

    @property
    def name(self) -> str:
        return self.settings.name

    def state(self) -> str:
        states = {v.state for v in self.versions.values()}
        for s in (AVAILABLE, LOADING, UNLOADING):
            if s in states:
                return s
        return UNAVAILABLE_STATE if self.versions or self.message else LOADING

    def newest_available(self) -> VersionState | None:
        # A scan, not a sort: asked for every request that names no version.
        best: VersionState | None = None
        top = -1
        for n, v in self.versions.items():
            if n > top and v.state == AVAILABLE:
                best, top = v, n
        return best

    def resolve(self, version: int | None) -> VersionState:
        if version is None:
            v = self.newest_available()
            if v is None:
                # Why: the model's own note, else the newest version's (a load error).
                newest_first = sorted(self.versions.items(), reverse=True)
                why = self.message or next((x.message for _, x in newest_first if x.message), "")
                raise ProtocolError(
                    UNAVAILABLE,
                    f"model {self.name!r}: no version is AVAILABLE (state {self.state()}"
                    + (f": {why[:500]}" if why else "")
                    + ")",
                )
            return v
        v = self.versions.get(version)
        if v is None:
            raise ProtocolError(
                NOT_FOUND,
                f"field 'version': model {self.name!r} has versions "
                f"{sorted(self.versions)}, received {version}",
            )
        if v.state != AVAILABLE:
            raise ProtocolError(
                UNAVAILABLE, f"model {self.name!r} version {version} is {v.state}: {v.message}"
            )
        return v


class Registry:
    def __init__(self, models: tuple[ModelSettings, ...]) -> None:
        self.models: dict[str, ModelState] = {m.name: ModelState(m) for m in models}

    def model(self, name: Any) -> ModelState:
        if not isinstance(name, str):
            raise ProtocolError(
                "INVALID_ARGUMENT", f"field 'model': expected a string, received {clip(name)}"
            )
        m = self.models.get(name)
        if m is None:
            raise ProtocolError(
                NOT_FOUND,
                f"field 'model': expected one of {sorted(self.models)}, received {clip(name)}",
            )
        return m

    def set_model(self, settings: ModelSettings) -> ModelState:
        """Add a model, or replace the settings of one already here (a reload)."""
        m = self.models.get(settings.name)
        if m is None:
            m = self.models[settings.name] = ModelState(settings)
        else:
            m.settings = settings
        return m

    def drop_model(self, name: str) -> None:
        self.models.pop(name, None)

    def lookup(self, msg: dict[str, Any]) -> tuple[ModelState, VersionState]:
        """The model and version a request names (`model`, optional `version`)."""
        model = self.model(msg.get("model"))
        version = msg.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise ProtocolError(
                "INVALID_ARGUMENT",
                f"field 'version': expected an integer, received {clip(version)}",
            )
        return model, model.resolve(version)

    def version_state(self, model: str, number: int) -> VersionState:
        m = self.models[model]
        v = m.versions.get(number)
        if v is None:
            v = m.versions[number] = VersionState(number, model)
        return v

    def ready(self) -> bool:
        return all(
            any(v.state == AVAILABLE and v.serving_links() for v in m.versions.values())
            for m in self.models.values()
        )

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for m in self.models.values():
            out.append(
                {
                    "name": m.name,
                    "versions": sorted(m.versions),
                    "state": m.state(),
                    "version_states": {
                        str(n): {"state": v.state, "message": v.message}
                        for n, v in sorted(m.versions.items())
                    },
                    "message": m.message,
                }
            )
        return out
