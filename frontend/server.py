"""Listeners and the non-infer ops. The supervisor builds a `Frontend` on its loop."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
from collections.abc import Callable
from typing import Any

from ringserve.ipc import errors as E
from ringserve.ipc.errors import ProtocolError

from .connection import Connection
from .dispatch import Dispatcher
from .drain import Drain
from .http.probes import add_probes
from .http.protocol import HttpConnection
from .http.rest import add_rest
from .http.router import Router
from .limits import LimitLog, Watchdog
from .metrics import Exposition
from .regions import Regions
from .registry import Registry
from .settings import FrontendSettings

Op = Callable[[Connection, dict[str, Any]], dict[str, Any]]


class Frontend:
    def __init__(self, settings: FrontendSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.registry = Registry(settings.models)
        self.dispatcher = Dispatcher(settings, self.registry, loop)
        self.dispatcher.log = self.log
        self.connections: set[Connection | HttpConnection] = set()
        self.open_count = {"tcp": 0, "unix": 0}  # against max_connections, per listener
        self.limit_log = LimitLog(self.log)
        self.watchdog = Watchdog(loop)
        self.watchdog.configure(settings.handshake_timeout_seconds, settings.frame_timeout_seconds)
        self.servers: list[tuple[str, asyncio.AbstractServer]] = []
        self._unix_path: str | None = None  # set only once this process bound it
        self.live = True
        # Readiness: false from the moment a stop is asked for (health ready=false,
        # /readyz 503), while requests are still served during the drain delay.
        self.accepting = True
        # New requests are refused (UNAVAILABLE, "server is stopping"): the HTTP layer
        # answers 503 the same way. Set by `begin_drain`, after the drain delay.
        self.draining = False
        self._drain = Drain(self)
        self.extra_stats: Callable[[], dict[str, Any]] = dict
        # Bytes read from and written to client connections (connection.py).
        self.received_bytes = 0
        self.sent_bytes = 0
        self._exposition = Exposition(self.stats_snapshot)
        self.ops: dict[str, Op] = {
            "health": self._health,
            "models": self._models,
            "metadata": self._metadata,
            "stats": self._stats,
            "auth": self._auth,
            "shm_register": self._shm_register,
            "shm_unregister": self._shm_unregister,
        }
        self.metrics_router = Router()
        add_probes(self.metrics_router, self)
        self.http_router = Router()
        add_probes(self.http_router, self)
        add_rest(self.http_router, self)

    def apply_settings(self, settings: FrontendSettings) -> None:
        """A reload: new limits for new requests and connections; listeners stay."""
        self.settings = settings
        self.dispatcher.apply_settings(settings)
        self.watchdog.configure(settings.handshake_timeout_seconds, settings.frame_timeout_seconds)

    def log(self, text: str) -> None:
        try:
            sys.stderr.write(f"ringserve frontend: {text}\n")
        except (OSError, ValueError):  # a broken stderr must not break a callback
            pass

    # ---- listeners -----------------------------------------------------------------
    def _raise_fd_limit(self, listeners: int) -> None:
        """Room for max_connections on each listener (TCP, Unix, HTTP, metrics: each has
        its own places) plus the workers' rings and eventfds: past the soft limit
        accept() fails for everyone, not just one client."""
        want = listeners * self.settings.max_connections + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            if new < want:
                self.log(
                    f"open-file limit {new} (hard) is below {listeners} listeners x "
                    f"server.max_connections + 256 ({want}): lower max_connections or raise "
                    "LimitNOFILE"
                )

    async def start(
        self, tcp_sock: socket.socket | None = None, unix_sock: socket.socket | None = None
    ) -> None:
        s = self.settings
        self._raise_fd_limit(
            sum(map(bool, (tcp_sock or s.tcp, unix_sock or s.unix, s.http, s.metrics)))
        )
        if tcp_sock is not None or s.tcp:
            if tcp_sock is None:
                host, _, port = s.tcp.rpartition(":")
                tcp_sock = socket.create_server(
                    (host.strip("[]"), int(port)),
                    family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                    reuse_port=False,
                    backlog=1024,
                )
            tcp_sock.setblocking(False)
            srv = await self.loop.create_server(self._connection("tcp"), sock=tcp_sock)
            self.servers.append(("tcp", srv))
        if unix_sock is not None or s.unix:
            if unix_sock is None:
                os.makedirs(os.path.dirname(s.unix) or ".", exist_ok=True)
                if os.path.exists(s.unix):
                    os.unlink(s.unix)  # stale: the supervisor found no live server on it
                unix_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                unix_sock.bind(s.unix)
                self._unix_path = s.unix
                os.chmod(s.unix, s.unix_mode)
                unix_sock.listen(1024)
            unix_sock.setblocking(False)
            srv = await self.loop.create_unix_server(self._connection("unix"), sock=unix_sock)
            self.servers.append(("unix", srv))
        # The metrics listener speaks the same HTTP as `http`, with only the probes and
        # metrics routes: a host without the REST API still has readiness for a balancer.
        for kind, where, router in (
            ("http", s.http, self.http_router),
            ("metrics", s.metrics, self.metrics_router),
        ):
            if where:
                host, _, port = where.rpartition(":")
                srv = await self.loop.create_server(
                    lambda kind=kind, router=router: HttpConnection(self, router, kind),  # type: ignore[misc]
                    host.strip("[]"),
                    int(port),
                    backlog=1024,
                )
                self.servers.append((kind, srv))

    def _connection(self, kind: str) -> Callable[[], Any]:
        # Any: a Connection is a buffered protocol by its methods (connection.py), not
        # by the type the loop's signature names.
        return lambda: Connection(self, kind)

    def bound(self) -> dict[str, str]:
        out = {}
        for kind, srv in self.servers:
            for sock in getattr(srv, "sockets", ()):
                name = sock.getsockname()
                out[kind] = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else name
        return out

    def close_listeners(self) -> None:
        self.accepting = False
        for _, srv in self.servers:
            srv.close()
        if self._unix_path is not None:
            try:
                os.unlink(self._unix_path)
            except OSError:
                pass
            self._unix_path = None

    def close_connections(self) -> None:
        self._drain.stop()
        for c in list(self.connections):
            c.close()

    def ready(self) -> bool:
        """What the `health` op answers as `ready` (and /readyz as 200 / 503)."""
        return self.accepting and self.registry.ready()

    def stop_ready(self) -> None:
        """Readiness off: a load balancer stops sending; requests are still served."""
        self.accepting = False

    def begin_drain(self) -> None:
        """Refuse new requests, stop listening, close connections as they go idle."""
        self._drain.start()

    # ---- ops -----------------------------------------------------------------------
    def _health(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        return {"live": self.live, "ready": self.ready()}

    def _models(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        return {"models": self.registry.describe()}

    def _metadata(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        model, v = self.registry.lookup(msg)
        return {"model": model.name, "version": v.number, "signatures": v.signatures}

    def _stats(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        return self.stats_snapshot()

    def metrics_exposition(self, accept: str | None) -> tuple[str, bytes]:
        """/metrics: (content type, body); OpenMetrics when `accept` asks for it.
        Runs on the loop: one snapshot and one encode (docs/metrics.md)."""
        return self._exposition.render(accept)

    def stats_snapshot(self) -> dict[str, Any]:
        d = self.dispatcher
        models = {}
        for name, st in d.stats.items():
            m = self.registry.models.get(name)
            if m is None:
                continue
            models[name] = {
                **st.as_dict(),
                "queue_depth": sum(d.queued(v) for v in m.versions.values()),
                "versions": {
                    str(n): {
                        **v.metrics.as_dict(),
                        "queue_depth": d.queued(v),
                        "inflight": d.inflight(v),
                    }
                    for n, v in sorted(m.versions.items())
                },
            }
        return {
            "models": models,
            "workers": d.workers_hook(),
            "connections": len(self.connections),
            "frontend": self._own_figures(),
            "limits": dict(self.limit_log.hits),
            **self.extra_stats(),
        }

    def _own_figures(self) -> dict[str, Any]:
        ru = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
        kinds: dict[str, int] = {"tcp": 0, "unix": 0}
        for c in self.connections:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        return {
            "cpu_user_seconds": ru.ru_utime,
            "cpu_system_seconds": ru.ru_stime,
            "voluntary_ctx_switches": ru.ru_nvcsw,
            "involuntary_ctx_switches": ru.ru_nivcsw,
            "connections": kinds,
            "received_bytes": self.received_bytes,
            "sent_bytes": self.sent_bytes,
        }

    def _auth(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        conn.authenticate(msg.get("token"))
        return {}

    def _regions(self, conn: Connection, msg: dict[str, Any]) -> Regions:
        if conn.regions is None:
            raise ProtocolError(
                E.FAILED_PRECONDITION,
                f"op {msg.get('op')!r}: shared-memory regions need a Unix-socket connection",
            )
        return conn.regions

    def _shm_register(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        self._regions(conn, msg).register(msg)
        return {}

    def _shm_unregister(self, conn: Connection, msg: dict[str, Any]) -> dict[str, Any]:
        self._regions(conn, msg).unregister(msg)
        return {}
