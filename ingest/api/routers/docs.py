"""The API's documentation page: Swagger UI served from this API's own files (vendored from
swagger-ui-dist, static/swagger-ui/README.md), nothing from a CDN."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_ASSETS = "/static/swagger-ui"
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>telemon clinicians' API</title>
<link rel="icon" href="{_ASSETS}/favicon-32x32.png">
<link rel="stylesheet" href="{_ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{_ASSETS}/swagger-ui-bundle.js"></script>
<script src="{_ASSETS}/telemon-docs.js"></script>
</body>
</html>
"""
# Scripts and styles from this origin only (Swagger UI sets inline styles on its elements).
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


@router.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers={"Content-Security-Policy": _CSP})
