"""PostgreSQL cut off mid-batch through a TCP proxy: pause, wait, never commit ahead, recover."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from tests.oracle import LONG, CommitWatch
from tests.support import (
    RunningIngest,
    Stack,
    TcpProxy,
    eventually,
    ledger_is_contiguous,
    synthetic_load,
)


async def test_database_outage_pauses_then_recovers_without_loss(stack: Stack) -> None:
    assert stack.settings.database_url is not None
    proxy = TcpProxy(stack.settings.database_url)
    await proxy.start()
    pairs, messages = synthetic_load(40_000, patients=100)
    await stack.enroll(pairs)
    await stack.produce(messages[:20_000])
    db = await stack.db()  # direct, not through the proxy
    async with (
        CommitWatch(stack).running(),
        stack.ingest(
            database_url=proxy.dsn, batch_max_messages=500, max_in_flight_batches=2
        ) as ingest,
    ):
        await _outage(stack, proxy, ingest, db, messages[20_000:])
        assert ingest.metric("telemon_ingest_write_errors_total", kind="transient") > 0
        assert ingest.metric("telemon_ingest_write_errors_total", kind="fatal") == 0
    assert await db.fetchval("SELECT count(*) FROM readings") == len(messages)
    assert await db.fetchval("SELECT sum(readings_duplicate) FROM ingest_ledger") == 0
    await ledger_is_contiguous(stack)


async def _outage(
    stack: Stack, proxy: TcpProxy, ingest: RunningIngest, db: Any, more: list[Any]
) -> None:
    """Cut the database while readings keep coming; check the service's stance; restore."""
    await eventually(lambda: _stored_at_least(db, 2_000), what="first writes")
    await proxy.cut()
    producing = asyncio.create_task(stack.produce(more))
    await eventually(lambda: _paused(ingest), what="partitions to pause")
    await eventually(lambda: _status(ingest, "/readyz", 503), what="not ready")
    assert await _status(ingest, "/healthz", 200), "alive while the database is away"
    stored_during = await db.fetchval("SELECT count(*) FROM readings")
    await asyncio.sleep(60 if LONG else 3)
    assert await db.fetchval("SELECT count(*) FROM readings") == stored_during
    await proxy.restore()
    await producing
    await stack.wait_drained(120)
    await eventually(lambda: _status(ingest, "/readyz", 200), what="ready again")


async def _stored_at_least(db: Any, n: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM readings") >= n)


async def _paused(ingest: RunningIngest) -> bool:
    return ingest.metric("telemon_ingest_paused") == 1


async def _status(ingest: RunningIngest, path: str, expected: int) -> bool:
    def get() -> int:
        url = f"http://127.0.0.1:{ingest.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                json.load(response)
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    return await asyncio.to_thread(get) == expected
