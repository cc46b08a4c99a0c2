"""The live feed: alert events of the clinician's patients as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from alerts.messages import language_of, words
from ingest.api.access import Api, Refused, WhoAsks, as_clinician, audited
from ingest.api.routers.episodes import localised
from ingest.api.stream import FeedPosition, current_position, events_after, sse_stream

__all__ = ["router"]

router = APIRouter(tags=["feed"])


@router.get(
    "/api/v1/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    request: Request,
    api: Api,
    who: WhoAsks,
    after: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
    lang: Annotated[str | None, Query(description="fr or en")] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Episode events (raised, escalated, updated, acknowledged, snoozed, resolved) of the
    clinician's patients as Server-Sent Events, each with its episode as it stands and the
    findings in the reader's language. Resume with `Last-Event-ID` (or `after`, e.g. the
    worklist's `feed_position`); without either, from now."""
    language = words(language_of(lang, accept_language, api.language))
    given = last_event_id or after
    try:
        start = FeedPosition.parse(given) if given else None
    except ValueError as error:
        raise Refused(400, str(error)) from error
    async with audited(request, who, "R", "alert.stream", None) as s:
        position = start or await current_position(s.conn)

    async def read(after: FeedPosition) -> list[tuple[FeedPosition, dict[str, Any]]]:
        async def query() -> list[tuple[FeedPosition, dict[str, Any]]]:
            async with api.pool.acquire() as conn, conn.transaction():
                await as_clinician(conn, who)
                events = await events_after(conn, after)
            for _, event in events:
                localised(event["episode"], language, api)
            return events

        # A client leaving mid-query must not cut the transaction off: let it finish.
        return await asyncio.shield(query())

    async def counted() -> AsyncIterator[str]:
        api.metrics.clients.inc()
        try:
            async for text in sse_stream(read, position, api.wakeups):
                if text.startswith("id:"):
                    api.metrics.events_sent.inc()
                yield text
        finally:
            api.metrics.clients.dec()

    return StreamingResponse(
        counted(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
