"""The live feed: episode events of the clinician's patients as Server-Sent Events.

A stream lasts as long as the token it was opened with: at the token's expiry it sends
`event: end` and closes (the client signs in again and resumes from its last id). Every
read runs as the clinician, so a clinician taken off a team stops seeing its patients
at once. A clinician holds at most `api_max_streams_per_clinician` streams at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from alerts.messages import language_of, words
from ingest.api.access import Api, Refused, WhoAsks, as_clinician, audited
from ingest.api.routers.episodes import localised
from ingest.api.schemas import FeedPositionText
from ingest.api.stream import EXPIRED, FeedPosition, current_position, events_after, sse_stream

__all__ = ["router"]

router = APIRouter(tags=["feed"])


class _Stream(StreamingResponse):
    """A streaming response that gives its feed slot back however it ends (a client gone
    before the first byte never starts the body's generator)."""

    def __init__(self, content: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


@router.get(
    "/api/v1/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    request: Request,
    api: Api,
    who: WhoAsks,
    after: FeedPositionText | None = None,
    last_event_id: Annotated[FeedPositionText | None, Header()] = None,
    lang: Annotated[str | None, Query(description="fr or en")] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Episode events (raised, escalated, updated, acknowledged, snoozed, resolved) of the
    clinician's patients as Server-Sent Events, each with its episode as it stands and the
    findings in the reader's language, until the token expires (`event: end`). Resume with
    `Last-Event-ID` (or `after`, e.g. the worklist's `feed_position`); without either, from
    now."""
    language = words(language_of(lang, accept_language, api.language))
    given = last_event_id or after
    try:
        start = FeedPosition.parse(given) if given else None
    except ValueError as error:
        raise Refused(400, str(error)) from error
    if not api.limits.streams.take(who.subject):
        raise Refused(429, f"at most {api.limits.streams.most} live feeds at once")
    try:
        async with audited(request, who, "R", "alert.stream", None) as s:
            position = start or await current_position(s.conn)
    except BaseException:
        api.limits.streams.give_back(who.subject)
        raise

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
            async for text in sse_stream(
                read, position, api.wakeups, ends_at_s=who.expires_at_s, clock=api.clock
            ):
                if text.startswith("id:"):
                    api.metrics.events_sent.inc()
                elif text == EXPIRED:
                    api.metrics.feeds_expired.inc()
                yield text
        finally:
            api.metrics.clients.dec()

    return _Stream(counted(), lambda: api.limits.streams.give_back(who.subject))
