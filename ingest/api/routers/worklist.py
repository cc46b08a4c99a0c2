"""The worklist page: one HTML file, no build; it signs in with a bearer token."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_PAGE = (resources.files("ingest.api") / "worklist.html").read_text()


@router.get("/", response_class=HTMLResponse)
async def worklist() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers={"Cache-Control": "no-store"})
