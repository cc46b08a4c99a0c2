"""Run the clinicians' API (`telemon api`) on a schema that is up to date, until asked to
stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from alerts.programmes import load_config
from ingest.api.access import ApiContext
from ingest.api.app import create_app
from ingest.api.auth import DevIssuer, TokenVerifier
from ingest.api.limits import Limits, RateLimiter, StreamSlots
from ingest.api.metrics import ApiMetrics, refresh_episode_board
from ingest.api.stream import Wakeups
from ingest.platform import (
    Clock,
    ConfigurationError,
    HttpServer,
    Settings,
    SystemClock,
    cancel_tasks,
    connect,
    create_pool,
    require_migrated,
)

__all__ = ["API_ROLE", "run_api"]

log = logging.getLogger(__name__)

API_ROLE = "telemon_api"  # made by the migrations, restricted by row-level security


async def run_api(
    settings: Settings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry = REGISTRY,
    clock: Clock | None = None,
    on_ready: Callable[[int], None] | None = None,
    on_metrics_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the API until `stop` is set. Its connections act as telemon_api on a schema
    `telemon migrate` brought up to date (the API never migrates: its role owns nothing).
    `on_ready` gets the API's port, `on_metrics_ready` the metrics port."""
    issuer = settings.token_issuer
    if issuer is None:
        raise ConfigurationError(
            "the API needs an identity provider: set oidc_issuer (or, in development, "
            "dev_issuer_key_file)"
        )
    assert settings.database_url is not None
    dsn = settings.database_url
    clock = clock or SystemClock()
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(
            dsn, settings.database_schema, settings.database_pool_size, role=API_ROLE
        )
        stack.push_async_callback(pool.close)
        async with pool.acquire() as conn:
            await require_migrated(conn)
        wakeups = Wakeups()
        await wakeups.start(lambda: connect(dsn, settings.database_schema, API_ROLE))
        stack.push_async_callback(wakeups.stop)
        dev_issuer = None
        if settings.dev_issuer_key_file is not None and settings.oidc_issuer is None:
            dev_issuer = DevIssuer(issuer, settings.dev_issuer_key_file)
        api = ApiContext(
            pool=pool,
            verifier=TokenVerifier(
                issuer,
                settings.oidc_audience,
                max_lifetime_s=settings.api_max_token_lifetime_s,
                clock=clock,
            ),
            wakeups=wakeups,
            source=settings.api_source,
            config=load_config(settings.alert_programmes_file),
            metrics=ApiMetrics(registry),
            clock=clock,
            limits=Limits(
                anonymous=RateLimiter(
                    settings.api_failed_auth_per_min / 60, settings.api_failed_auth_burst, clock
                ),
                clinician=RateLimiter(settings.api_rate_per_s, settings.api_rate_burst, clock),
                streams=StreamSlots(settings.api_max_streams_per_clinician),
            ),
            base_url=settings.api_base_url,
            dev_issuer=dev_issuer,
            fhir_source=settings.fhir_source,
            language=settings.language,
        )
        app = create_app(api)

        async def ready() -> Response:
            try:
                await asyncio.wait_for(pool.fetchval("SELECT 1"), 5)
            except Exception:  # noqa: BLE001 - not ready, whatever the cause
                return JSONResponse({"ready": False}, status_code=503)
            return JSONResponse({"ready": True})

        async def live() -> Response:
            return JSONResponse({"live": True})

        async def metrics(_: Request) -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        async def live_probe(_: Request) -> Response:
            return await live()

        async def ready_probe(_: Request) -> Response:
            return await ready()

        # The probes on both ports; the metrics (every team's open-episode figures) on their
        # own, which only Prometheus reaches.
        app.add_api_route("/healthz", live, include_in_schema=False)
        app.add_api_route("/readyz", ready, include_in_schema=False)
        probes = Starlette(
            routes=[
                Route("/metrics", metrics),
                Route("/healthz", live_probe),
                Route("/readyz", ready_probe),
            ]
        )

        board = asyncio.create_task(
            refresh_episode_board(pool, api.metrics), name="telemon-episode-board"
        )
        stack.push_async_callback(cancel_tasks, [board])
        metrics_http = HttpServer(probes, settings.api_metrics_host, settings.api_metrics_port)
        await metrics_http.start()
        stack.push_async_callback(metrics_http.stop)
        http = HttpServer(
            app,
            settings.api_host,
            settings.api_port,
            trusted_proxies=settings.trusted_proxies,
        )
        await http.start()
        stack.push_async_callback(http.stop)
        stack.callback(wakeups.close)  # first: the live feeds end, so the server can stop
        log.info(
            "api: worklist and API on http://%s:%d/ (OpenAPI: /docs), tokens from %s; "
            "metrics on http://%s:%d/metrics",
            settings.api_host,
            http.port,
            issuer,
            settings.api_metrics_host,
            metrics_http.port,
        )
        if on_metrics_ready is not None:
            on_metrics_ready(metrics_http.port)
        if on_ready is not None:
            on_ready(http.port)
        await stop.wait()
