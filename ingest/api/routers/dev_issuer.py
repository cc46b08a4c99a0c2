"""The development issuer's discovery document and keys (only with TELEMON_DEV_ISSUER_KEY_FILE)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ingest.api.auth import DevIssuer

__all__ = ["dev_issuer_router"]


def dev_issuer_router(issuer: DevIssuer) -> APIRouter:
    router = APIRouter(prefix="/dev-issuer", include_in_schema=False)

    @router.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return issuer.discovery()

    @router.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return issuer.jwks()

    return router
