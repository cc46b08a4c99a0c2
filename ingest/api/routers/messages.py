"""telemon's words for the worklist page, in the reader's language (no patient data: served
without a token, so the sign-in screen speaks it too)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from alerts.messages import LANGUAGES, language_of, words
from ingest.api.access import Api

__all__ = ["router"]

router = APIRouter(tags=["messages"])


@router.get("/api/v1/messages")
async def messages(
    api: Api,
    lang: Annotated[str | None, Query(description="fr or en")] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> Mapping[str, Any]:
    """The message catalogue of the reader's language: the page's texts, severities,
    dispositions, vitals, rules."""
    language = language_of(lang, accept_language, api.language)
    return {"language": language, "languages": LANGUAGES, **words(language).everything()}
