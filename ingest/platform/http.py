"""Liveness, readiness and /metrics over HTTP.

Liveness: the event loop answers and the pipeline loop turned recently.
Readiness: PostgreSQL and the broker answered the last probe and the member
has joined its group. While PostgreSQL is down the service is live but not
ready: it waits, paused, and resumes by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingest.platform.clock import Clock

__all__ = ["Health", "HttpServer", "health_routes", "probe_forever"]

log = logging.getLogger(__name__)


@dataclass
class Health:
    clock: Clock
    stall_after_s: float = 30.0
    database_ok: bool = False
    broker_ok: bool = False
    joined_group: bool = False
    last_turn: float = field(default=0.0)

    def turned(self) -> None:
        """The pipeline loop calls this every iteration."""
        self.last_turn = self.clock.monotonic()

    @property
    def live(self) -> bool:
        return self.clock.monotonic() - self.last_turn < self.stall_after_s

    @property
    def ready(self) -> bool:
        return self.live and self.database_ok and self.broker_ok and self.joined_group

    def report(self) -> dict[str, bool]:
        return {
            "live": self.live,
            "ready": self.ready,
            "database": self.database_ok,
            "broker": self.broker_ok,
            "joined_group": self.joined_group,
        }


def health_routes(health: Health, registry: CollectorRegistry) -> list[Route]:
    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse(health.report(), status_code=200 if health.live else 503)

    async def readyz(_: Request) -> Response:
        return JSONResponse(health.report(), status_code=200 if health.ready else 503)

    return [Route("/metrics", metrics), Route("/healthz", healthz), Route("/readyz", readyz)]


async def probe_forever(
    health: Health,
    database: Callable[[], Awaitable[object]],
    broker: Callable[[], Awaitable[object]],
    every_s: float = 5.0,
) -> None:
    """Ask PostgreSQL and the broker a trivial question every few seconds."""
    while True:
        health.database_ok = await _answers(database, every_s)
        health.broker_ok = await _answers(broker, every_s)
        await asyncio.sleep(every_s)


async def _answers(probe: Callable[[], Awaitable[object]], timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(probe(), timeout_s)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - a probe reports failure, whatever its cause
        return False
    return True


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Leave SIGTERM and SIGINT to the service. uvicorn would take them over and, after
        its own shutdown, raise them again: the service must drain first, then stop this."""
        yield


class HttpServer:
    """uvicorn inside the service's own event loop."""

    def __init__(
        self, app: Starlette, host: str, port: int, *, trusted_proxies: Sequence[str] = ()
    ) -> None:
        """`trusted_proxies`: the peers whose X-Forwarded-For and -Proto are believed (uvicorn
        believes 127.0.0.1 by default; here nobody unless named)."""
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=list(trusted_proxies) or "",
            server_header=False,
            # Past this, a stop cancels the requests still running (the live feeds end
            # on their own when the API stops, ingest.api.stream.Wakeups.close).
            timeout_graceful_shutdown=10,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start (port taken, ...)
            await asyncio.sleep(0.01)

    @property
    def port(self) -> int:
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
