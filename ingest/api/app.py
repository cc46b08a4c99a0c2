"""The clinicians' API application: the routers, the errors' shape, the state they share.

Errors are JSON `{"error": message}` with the fitting status; bad input is 400 (the
OpenAPI says so: no 422 in this API). PostgreSQL's row-level security decides what each
clinician sees (ingest.api.access); "not yours" and "no such thing" are both 404. Every
request goes through the guard (ingest.api.guard): security headers, the audit of every
refusal and error, no traceback to the client. The OpenAPI documents every status an
operation can answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ingest.api.access import ApiContext, Refused
from ingest.api.audit import bounded
from ingest.api.guard import Guard
from ingest.api.routers import (
    docs,
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
from ingest.api.schemas import ErrorOut

__all__ = ["create_app"]

# What any operation may answer besides its success (and 404 where the path names a thing).
_COMMON = {
    "400": "Bad input: a parameter or body outside its bounds.",
    "401": "No valid bearer token.",
    "429": "Too many requests (see Retry-After).",
    "503": "The identity provider cannot be reached.",
}
_NOT_FOUND = {"404": "No such thing among your care teams' patients."}


def create_app(api: ApiContext) -> FastAPI:
    app = FastAPI(
        title="telemon clinicians' API",
        version="1",
        description="The worklist of episodes (one per patient and job, with their findings), "
        "patients and readings of the clinician's care teams; a live feed of episode events "
        "(Server-Sent Events). Bearer tokens from the configured OpenID Connect issuer.",
        docs_url=None,  # served from this API's own files (routers/docs.py)
        redoc_url=None,
    )
    app.state.api = api

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}"
            for e in error.errors()
        )
        return _error(400, f"bad request: {bounded(problems, 500)}")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), error.headers)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> JSONResponse:
        return _error(error.status, error.message, error.headers)

    for router in (
        episodes.router,
        patients.router,
        thresholds.router,
        export.router,
        identity.router,
        feed.router,
        messages.router,
        worklist.router,
        docs.router,
    ):
        app.include_router(router)
    if api.dev_issuer is not None:
        app.include_router(dev_issuer_router(api.dev_issuer))
    # The pages' own static files (uPlot, Swagger UI): nothing is loaded from a CDN.
    app.mount("/static", StaticFiles(packages=[("ingest.api", "static")]), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.add_middleware(Guard)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's OpenAPI with every error an operation can answer (FastAPI documents a 422
    this API never sends: bad input is 400, shaped like every other error)."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        schemas["ErrorOut"] = ErrorOut.model_json_schema()
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                statuses = {**_COMMON, **(_NOT_FOUND if "{" in path else {})}
                for status, description in statuses.items():
                    responses.setdefault(status, {"description": description, "content": error})
        app.openapi_schema = schema
    return app.openapi_schema


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)
