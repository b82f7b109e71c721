"""SIGHUP: read the config again and apply it. Keys that need a restart (listeners,
names, ring and frame sizes, the token file) keep their running values, saying so; a
config that does not validate leaves the running one in place; models gone from the
config are drained, then forgotten."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from . import systemd
from .config import Config, ConfigError, load
from .settings import frontend_settings
from .slots import log

if TYPE_CHECKING:
    from .supervisor import Supervisor

# Server keys a running server cannot change: a reload keeps their running values.
FIXED_KEYS = (
    "tcp",
    "unix",
    "unix_mode",
    "name",
    "ring_bytes",
    "max_frame_bytes",
    "max_frame_bytes_before_auth",
    "auth_token_file",
    "metrics",
    "http",
)


class Reloader:
    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.reloading = False

    def request_reload(self) -> None:
        if self.sup.stopping or self.reloading:
            return
        self.sup.task(self.reload())

    async def reload(self) -> None:
        sup = self.sup
        self.reloading = True
        try:
            systemd.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(1) // 1000}")
            if not sup.config_path and sup.loader is None:
                log("reload: no config file to re-read (serving the demo)")
                return
            try:
                new = sup.loader() if sup.loader is not None else load(sup.config_path or "")
            except ConfigError as exc:
                log(f"reload refused, keeping the running config: {exc}")
                systemd.notify("STATUS=reload refused: see the log")
                return
            self.apply(new)
        finally:
            self.reloading = False
            if not sup.stopping:
                systemd.notify("READY=1", "STATUS=serving")

    def apply(self, new: Config) -> None:
        sup = self.sup
        old = sup.cfg
        fixed = [k for k in FIXED_KEYS if getattr(old.server, k) != getattr(new.server, k)]
        if fixed:
            log(f"reload: changes to server.{', server.'.join(fixed)} need a restart; kept")
        sup.cfg = Config(
            server=old.server.__class__(
                **{**new.server.__dict__, **{k: getattr(old.server, k) for k in fixed}}
            ),
            models=new.models,
            path=new.path,
            groups=new.groups,
        )
        sup.fe.apply_settings(frontend_settings(sup.cfg))
        sup.groups.forget_retries()  # a reload asks failed loads and abandoned rolls again
        new_names = {m.name for m in new.models}
        for m in old.models:
            if m.name not in new_names:
                sup.task(self.remove_model(m.name))
        new_groups = {g.name for g in new.groups}
        for s in sup.slots:
            if s.content is not None and s.name not in new_groups and s.wanted:
                s.replacing = True
                sup.task(sup.reconciler.retire(s))
        sup.reconciler.reconcile_all()
        log(f"reloaded {sup.config_path}: models {sorted(new_names)}")

    async def remove_model(self, name: str) -> None:
        sup = self.sup
        reg = sup.fe.registry
        m = reg.models.get(name)
        if m is None:
            return
        log(f"model {name}: removed from the config; draining")
        rec = sup.reconciler
        await asyncio.gather(*(rec.unload_version(name, n) for n in list(m.versions)))
        for s in [s for s in sup.slots if s.name == name and s.content is None]:
            await rec.retire(s)
        if not any(c.name == name for c in sup.cfg.models):
            reg.drop_model(name)
            sup.fe.dispatcher.stats.pop(name, None)
            log(f"model {name}: removed")
