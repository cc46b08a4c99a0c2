"""The live feed: episode events as Server-Sent Events, resumable without gap or repeat.

Order. `episode_events` ids are allotted before commit, so a transaction can
commit an event with a smaller id after one with a larger id has been read.
Each event therefore also records its transaction (`txid`), and the feed serves
only the events of transactions older than every transaction still running
(`pg_snapshot_xmin`): no event can ever appear before them any more. Served in
(txid, event_id) order, a position is final: a client that resumes after it
(SSE `Last-Event-ID`) gets every later event once.

Wake-ups. Writers NOTIFY `telemon_outbox`; one listening connection per process
wakes every stream, and each also looks once a second (an event held back by
an older running transaction becomes servable without a notification).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from alerts.outbox import EVENTS_QUERY, event_json
from ingest.pipeline.relay import NOTIFY_CHANNEL
from ingest.platform import Clock, Connection

__all__ = [
    "EXPIRED",
    "FeedPosition",
    "Wakeups",
    "current_position",
    "events_after",
    "sse_stream",
]

_POSITION = re.compile(r"^([0-9]{1,19})-([0-9]{1,19})$")
_BIGINT = 2**63 - 1


@dataclass(frozen=True, order=True, slots=True)
class FeedPosition:
    txid: int
    event_id: int

    def __str__(self) -> str:
        return f"{self.txid}-{self.event_id}"

    @classmethod
    def parse(cls, text: str) -> FeedPosition:
        match = _POSITION.match(text.strip())
        if match is None or max(int(match[1]), int(match[2])) > _BIGINT:
            raise ValueError(f"not a feed position: {text[:40]!r} (expected '<txid>-<event id>')")
        return cls(int(match[1]), int(match[2]))


_SETTLED = "e.txid < pg_snapshot_xmin(pg_current_snapshot())"


async def current_position(conn: Connection) -> FeedPosition:
    """The position after every event settled now (a new client starts from here)."""
    row = await conn.fetchrow(
        f"SELECT e.txid::text::bigint AS txid, e.event_id FROM episode_events e "
        f"WHERE {_SETTLED} ORDER BY e.txid DESC, e.event_id DESC LIMIT 1"
    )
    return FeedPosition(0, 0) if row is None else FeedPosition(row["txid"], row["event_id"])


async def events_after(
    conn: Connection, position: FeedPosition, limit: int = 200
) -> list[tuple[FeedPosition, dict[str, Any]]]:
    """Settled events after `position`, in feed order, each with its position."""
    rows = await conn.fetch(
        f"""{EVENTS_QUERY}
        WHERE (e.txid, e.event_id) > ($1::text::xid8, $2) AND {_SETTLED}
        ORDER BY e.txid, e.event_id LIMIT $3""",
        str(position.txid),
        position.event_id,
        limit,
    )
    return [(FeedPosition(r["txid"], r["event_id"]), event_json(r)) for r in rows]


class Wakeups:
    """One LISTEN connection; `wait` returns on the next episode-event notification, or at
    once for ever after `close` (the server is stopping: its streams end)."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._conn: asyncpg.Connection | None = None
        self.closing = False

    async def start(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._conn = await connect()
        await self._conn.add_listener(NOTIFY_CHANNEL, self._notified)

    def _notified(self, _conn: Connection, _pid: int, _channel: str, payload: object) -> None:
        if payload == "episode_events":
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def close(self) -> None:
        """End every stream: the server waits for its connections before it stops."""
        self.closing = True
        self._changed.set()

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()


# The last message of a stream whose token expired; the client signs in again and resumes.
EXPIRED = 'event: end\ndata: "the token has expired: sign in again"\n\n'


async def sse_stream(
    read: Callable[[FeedPosition], Awaitable[list[tuple[FeedPosition, dict[str, Any]]]]],
    position: FeedPosition,
    wakeups: Wakeups,
    *,
    ends_at_s: float,
    clock: Clock,
    keepalive_s: float = 15.0,
    poll_s: float = 1.0,
) -> AsyncIterator[str]:
    """The SSE text of every event after `position`, for as long as the client listens and
    its token is valid: at `ends_at_s` (the token's expiry, on `clock`) the stream ends,
    and no event read before is sent after it. When the server stops, the stream ends
    without that last word: the client's EventSource reconnects (to another instance, or to
    this one restarted) and resumes from the last event it received."""

    def expired() -> bool:
        return clock.now_ms() / 1000 >= ends_at_s

    yield f"retry: 2000\nevent: position\ndata: {json.dumps(str(position))}\n\n"
    idle_s = 0.0
    while not expired():
        if wakeups.closing:
            return
        events = await read(position)
        for at, event in events:
            if expired() or wakeups.closing:
                break
            position = at
            yield f"id: {position}\nevent: episode\ndata: {json.dumps(event)}\n\n"
        if events:
            idle_s = 0.0
            continue
        await wakeups.wait(poll_s)
        idle_s += poll_s
        if idle_s >= keepalive_s:
            idle_s = 0.0
            yield ": keep-alive\n\n"
    yield EXPIRED
