"""The worklist page: one HTML file, no build; it signs in with a bearer token.

Its Content Security Policy allows the page's own inline script and style (by their
SHA-256, computed from the file), scripts and styles from this origin (uPlot, vendored in
static/uplot), the inline favicon (a data: URL) and requests to this origin: an injected
script or style attribute does not apply, and the page cannot be framed.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_PAGE = (resources.files("ingest.api") / "worklist.html").read_text()


def _hashes(tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", _PAGE, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
    )


_CSP = (
    f"default-src 'none'; script-src 'self' {_hashes('script')}; "
    f"style-src 'self' {_hashes('style')}; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


@router.get("/", response_class=HTMLResponse)
async def worklist() -> HTMLResponse:
    return HTMLResponse(
        _PAGE, headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP}
    )
