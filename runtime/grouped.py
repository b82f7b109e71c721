"""The supervisor's side of worker groups (docs/groups.md).

A group's worker slot is an ordinary slot (same spawn, backoff, heartbeat, positions)
whose `content` lists every (model, version, path) its process loads. The wanted
content of a group is every served version of every member; when it changes (a new
version folder, a policy change, a reload that adds or removes a member) the group's
workers are replaced one at a time by fresh ones holding the new content, each old
one stopping only after its successor reported ready and after what it holds is
answered: a version that only the old worker serves keeps serving its queue until it
is empty, and a version still wanted is served by the new worker already.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ringserve.frontend import registry as R

from .config import Config, GroupConfig, ModelConfig

Content = tuple[tuple[str, int, Path], ...]


def group_model(g: GroupConfig) -> ModelConfig:
    """The slot-level stand-in for a group: its name and placement. Versions, paths
    and policies are its members' and live in the slots' content."""
    return ModelConfig(name=g.name, base_path=Path("/"), instances=g.instances)


def members(cfg: Config, g: GroupConfig) -> list[ModelConfig]:
    by_name = {m.name: m for m in cfg.models}
    return [by_name[n] for n in g.models if n in by_name]


def content(cfg: Config, g: GroupConfig, wanted: dict[str, list[int]]) -> Content:
    """What each worker of `g` loads, given each member's wanted versions."""
    out = []
    for m in members(cfg, g):
        for n in wanted.get(m.name, []):
            out.append((m.name, n, m.base_path / str(n)))
    return tuple(out)


def attach(fe: Any, link: Any, reports: list[dict[str, Any]], log: Any) -> list[str]:
    """A group worker reported ready: it serves every version that loaded; a version
    that failed is UNAVAILABLE while no other worker serves it. Returns the models
    touched."""
    touched = []
    for r in reports:
        name, number = r.get("model"), r.get("version")
        m = fe.registry.models.get(name)
        if m is None or not isinstance(name, str) or not isinstance(number, int):
            continue  # removed from the config while the worker loaded
        v = fe.registry.version_state(name, number)
        touched.append(name)
        if r.get("ok"):
            if not v.signatures:
                v.signatures = r.get("signatures", {})
            if link not in v.links:
                v.links.append(link)
            if v not in link.serves:
                link.serves.append(v)
            if v.state != R.UNLOADING:
                v.state = R.AVAILABLE
                v.message = ""
        else:
            msg = f"failed to load in group worker {link.key}: {r.get('message', '')}"
            log(f"model {name} version {number}: {msg}")
            if not v.serving_links() and v.state != R.UNLOADING:
                v.state = R.UNAVAILABLE_STATE
                v.message = msg[:2000]
    return touched


def alone(link: Any) -> list[Any]:
    """Versions this group worker serves that no other serving worker does."""
    return [v for v in link.serves if not any(ln.serving for ln in v.links if ln is not link)]


def regressed(old: Any, new: Any) -> list[str]:
    """Models the new group worker failed to load while the old one serves a version
    of them: replacing the old one would take those models down."""
    if old is None or new is None:
        return []
    failed = {r.get("model") for r in new.link.info.get("models", []) if not r.get("ok")}
    return sorted(str(m) for m in failed if any(v.model == m for v in old.link.serves))
