"""The clinicians' API application: the routers, the errors' shape, the state they share.

Errors are JSON `{"error": message}` with the fitting status. PostgreSQL's
row-level security decides what each clinician sees (ingest.api.access); the
API adds nothing to it but the difference between "not yours" (403) and "no
such thing" (404).
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ingest.api.access import ApiContext, Refused
from ingest.api.routers import (
    episodes,
    export,
    feed,
    identity,
    messages,
    patients,
    thresholds,
    worklist,
)
from ingest.api.routers.dev_issuer import dev_issuer_router

__all__ = ["create_app"]


def create_app(api: ApiContext) -> FastAPI:
    app = FastAPI(
        title="telemon clinicians' API",
        version="1",
        description="The worklist of episodes (one per patient and job, with their findings), "
        "patients and readings of the clinician's care teams; a live feed of episode events "
        "(Server-Sent Events). Bearer tokens from the configured OpenID Connect issuer.",
    )
    app.state.api = api

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        api.metrics.refused.labels("400").inc()
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}"
            for e in error.errors()
        )
        return _error(400, f"bad request: {problems}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        api.metrics.refused.labels(str(error.status_code)).inc()
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> JSONResponse:
        api.metrics.refused.labels(str(error.status)).inc()
        return _error(error.status, error.message)

    for router in (
        episodes.router,
        patients.router,
        thresholds.router,
        export.router,
        identity.router,
        feed.router,
        messages.router,
        worklist.router,
    ):
        app.include_router(router)
    if api.dev_issuer is not None:
        app.include_router(dev_issuer_router(api.dev_issuer))
    # The page's own static files (uPlot): nothing is loaded from a CDN.
    app.mount("/static", StaticFiles(packages=[("ingest.api", "static")]), name="static")
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
