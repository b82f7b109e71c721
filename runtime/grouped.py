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

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ringserve.frontend import registry as R

from .config import Config, GroupConfig, ModelConfig
from .slots import log

if TYPE_CHECKING:
    from .supervisor import Supervisor
    from .workers import WorkerHandle

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
    that failed is UNAVAILABLE while no other worker serves it. Returns the versions
    that failed in this worker, as `model/version` (what a load retry is for: one
    served by another worker of the group still lacks this worker's capacity)."""
    failed = []
    for r in reports:
        name, number = r.get("model"), r.get("version")
        m = fe.registry.models.get(name)
        if m is None or not isinstance(name, str) or not isinstance(number, int):
            continue  # removed from the config while the worker loaded
        v = fe.registry.version_state(name, number)
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
            failed.append(f"{name}/{number}")
    return failed


def lacks(slot: Any) -> bool:
    """A group worker that is up and failed to load part of what its slot holds."""
    h = slot.handle
    if h is None or slot.content is None or not h.link.info:
        return False
    have = {(v.model, v.number) for v in h.link.serves}
    return any((name, number) not in have for name, number, _ in slot.content)


def alone(link: Any) -> list[Any]:
    """Versions this group worker serves that no other serving worker does."""
    return [v for v in link.serves if not any(ln.serving for ln in v.links if ln is not link)]


class Groups:
    """The supervisor's group steps; slots, spawning and rolls are the Reconciler's."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        # Per group: the content a roll was abandoned for (a member failed to load in
        # the new worker while the old one served it); not tried again until the
        # content changes or a reload asks.
        self.failed_content: dict[str, Content] = {}
        # Per group: load retries made for members some worker failed to load, and the
        # pending one.
        self.retries: dict[str, int] = {}
        self.retry_timers: dict[str, asyncio.TimerHandle] = {}

    def reconcile(self, g: GroupConfig) -> None:
        """The group's workers hold every wanted version of every member; when that
        set changes they are replaced one at a time."""
        sup = self.sup
        if sup.stopping:
            return
        rec = sup.reconciler
        wanted = {m.name: rec.wanted_versions(m) for m in members(sup.cfg, g)}
        want = content(sup.cfg, g, wanted)
        if want and want != self.failed_content.get(g.name):
            rec.fit_workers(group_model(g), 0, want)
        elif not want:
            for s in sup.slots:
                if s.content is not None and s.name == g.name and s.wanted and not s.replacing:
                    s.replacing = True
                    sup.task(rec.retire(s))
        reg = sup.fe.registry
        for name, numbers in wanted.items():
            model = reg.models[name]
            for number, v in list(model.versions.items()):
                # Unwanted and served by no worker (it never loaded, or its last
                # worker was retired): forget it.
                if number not in numbers and v.state != R.UNLOADING and not v.links:
                    sup.task(rec.unload_version(name, number))
            # A model moved into the group: its own workers go once the group serves it.
            if numbers and all(
                number in model.versions
                and any(ln.group for ln in model.versions[number].serving_links())
                for number in numbers
            ):
                for s in sup.slots:
                    if s.content is None and s.name == name and s.wanted and not s.replacing:
                        s.replacing = True
                        sup.task(rec.retire(s))

    def worker_ready(self, h: WorkerHandle, msg: dict[str, Any]) -> None:
        sup = self.sup
        reports = msg.get("models")
        missing = attach(sup.fe, h.link, reports if isinstance(reports, list) else [], log)
        sup.fe.dispatcher.link_ready(h.link)
        loaded = [f"{v.model}/{v.number}" for v in h.link.serves]
        log(
            f"worker {h.label} ready: pid {h.pid} group {h.model} models {loaded} "
            f"device {msg.get('device')} intra_op_threads {msg.get('intra_op_threads')} "
            f"inter_op_threads {msg.get('inter_op_threads')} "
            f"cpu_affinity {msg.get('cpu_affinity')} load {msg.get('load_seconds', 0):.3f}s"
        )
        g = next((c for c in sup.cfg.groups if c.name == h.model), None)
        if g is not None:
            self.retry_later(g, missing)
            self.reconcile(g)
        sup.check_ready()

    # ---- load retries (TF Serving's max_num_load_retries) --------------------------
    def retry_later(self, g: GroupConfig, missing: list[str]) -> None:
        """Members that failed to load in a worker (served by another worker of the
        group or by none): fresh workers try again in group_load_retry_seconds, up to
        group_load_retries times; a worker that loads them all ends the count."""
        if not missing:
            self.retries.pop(g.name, None)
            return
        server = self.sup.cfg.server
        done = self.retries.get(g.name, 0)
        if g.name in self.retry_timers or done >= server.group_load_retries:
            if done and done == server.group_load_retries:
                log(f"group {g.name}: {missing} failed to load after {done} retries; "
                    "tried again on a reload or a change of the group")  # fmt: skip
                self.retries[g.name] = done + 1  # said once
            return
        self.retries[g.name] = done + 1
        delay = server.group_load_retry_seconds
        log(f"group {g.name}: {missing} failed to load; retry {done + 1} of "
            f"{server.group_load_retries} in {delay:g}s")  # fmt: skip
        loop = self.sup.fe.loop
        self.retry_timers[g.name] = loop.call_later(delay, self._retry, g.name)

    def _retry(self, name: str) -> None:
        self.retry_timers.pop(name, None)
        sup = self.sup
        g = next((c for c in sup.cfg.groups if c.name == name), None)
        if g is None or sup.stopping:
            return
        lacking = [
            s for s in sup.slots
            if s.content is not None and s.name == name and s.wanted
            and not s.replacing and not s.stale and lacks(s)
        ]  # fmt: skip
        if not lacking:
            return  # loaded meanwhile, or a roll is under way: its workers report
        for slot in lacking:  # replaced one at a time by the roll (reconcile.py)
            slot.stale = True
        self.failed_content.pop(name, None)
        self.reconcile(g)

    def forget_retries(self) -> None:
        """A reload: the count starts over (and an abandoned roll is tried again)."""
        for t in self.retry_timers.values():
            t.cancel()
        self.retry_timers.clear()
        self.retries.clear()
        self.failed_content.clear()

    def improved(self, name: str, old: Any, new: Any) -> bool:
        """A retry's new worker serves a version the old one does not."""
        if old.handle is None or new.handle is None:
            return True
        have = {(v.model, v.number) for v in old.handle.link.serves}
        gained = [v for v in new.handle.link.serves if (v.model, v.number) not in have]
        if not gained:
            log(f"load retry of group {name}: the new worker loaded nothing more; kept the old")
        return bool(gained)

    def regressed(self, name: str, want: Content, old: Any, new: Any) -> bool:
        """Would replacing `old` by `new` take a member down (the new worker failed to
        load a model the old one serves)? Then the roll is abandoned."""
        if old.handle is None or new.handle is None:
            return False
        failed = {r.get("model") for r in new.handle.link.info.get("models", []) if not r.get("ok")}
        lost = sorted(str(m) for m in failed if any(v.model == m for v in old.handle.link.serves))
        if not lost:
            return False
        log(
            f"roll of group {name} abandoned: the new worker failed to load {lost}, "
            "which the old one serves; kept (retried on a change or reload)"
        )
        self.failed_content[name] = want
        return True

    async def release_versions(self, h: WorkerHandle) -> None:
        """Before a group's worker drains: a version only it serves is unloaded (its
        queue answered first) if nothing wants it any more, or else kept until another
        worker serves it (a model moved to its own workers)."""
        from .reconcile import valid_versions

        sup = self.sup
        limit = time.monotonic() + sup.cfg.server.worker_start_timeout_seconds
        for v in alone(h.link):
            m = next((c for c in sup.cfg.models if c.name == v.model), None)
            wanted = m is not None and v.number in m.version_policy.select(
                valid_versions(m.base_path)
            )
            if not wanted:
                await sup.reconciler.unload_version(v.model, v.number)
                continue
            while not any(ln.serving for ln in v.links if ln is not h.link):
                if time.monotonic() > limit or sup.stopping:
                    break
                await asyncio.sleep(0.01)
