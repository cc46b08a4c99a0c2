"""Run the clinicians' API (`telemon api`) on a schema that is up to date, until asked to
stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from alerts.programmes import load_config
from ingest.api.access import ApiContext
from ingest.api.app import create_app
from ingest.api.auth import DevIssuer, TokenVerifier
from ingest.api.metrics import ApiMetrics, refresh_episode_board
from ingest.api.stream import Wakeups
from ingest.platform import (
    ConfigurationError,
    HttpServer,
    Settings,
    cancel_tasks,
    connect,
    create_pool,
)

__all__ = ["API_ROLE", "run_api"]

log = logging.getLogger(__name__)

API_ROLE = "telemon_api"  # made by the migrations, restricted by row-level security


async def run_api(
    settings: Settings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry = REGISTRY,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    issuer = settings.token_issuer
    if issuer is None:
        raise ConfigurationError(
            "the API needs an identity provider: set oidc_issuer (or, in development, "
            "dev_issuer_key_file)"
        )
    assert settings.database_url is not None
    dsn = settings.database_url
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(
            dsn, settings.database_schema, settings.database_pool_size, role=API_ROLE
        )
        stack.push_async_callback(pool.close)
        wakeups = Wakeups()
        await wakeups.start(lambda: connect(dsn, settings.database_schema))
        stack.push_async_callback(wakeups.stop)
        dev_issuer = None
        if settings.dev_issuer_key_file is not None and settings.oidc_issuer is None:
            dev_issuer = DevIssuer(issuer, settings.dev_issuer_key_file)
        api = ApiContext(
            pool=pool,
            verifier=TokenVerifier(issuer, settings.oidc_audience),
            wakeups=wakeups,
            source=settings.api_source,
            config=load_config(settings.alert_programmes_file),
            metrics=ApiMetrics(registry),
            dev_issuer=dev_issuer,
            fhir_source=settings.fhir_source,
            language=settings.language,
        )
        app = create_app(api)

        @app.get("/metrics", include_in_schema=False)
        async def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        @app.get("/healthz", include_in_schema=False)
        async def healthz() -> JSONResponse:
            return JSONResponse({"live": True})

        @app.get("/readyz", include_in_schema=False)
        async def readyz() -> JSONResponse:
            try:
                await asyncio.wait_for(pool.fetchval("SELECT 1"), 5)
            except Exception:  # noqa: BLE001 - not ready, whatever the cause
                return JSONResponse({"ready": False}, status_code=503)
            return JSONResponse({"ready": True})

        board = asyncio.create_task(
            refresh_episode_board(pool, api.metrics), name="telemon-episode-board"
        )
        stack.push_async_callback(cancel_tasks, [board])
        http = HttpServer(app, settings.api_host, settings.api_port)
        await http.start()
        stack.push_async_callback(http.stop)
        log.info(
            "api: worklist and API on http://%s:%d/ (OpenAPI: /docs), tokens from %s",
            settings.api_host,
            http.port,
            issuer,
        )
        if on_ready is not None:
            on_ready(http.port)
        await stop.wait()
