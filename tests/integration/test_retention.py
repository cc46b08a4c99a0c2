"""`telemon retention` drops old daily partitions; a running ingest that still believes
one exists stores a late reading for that day all the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.records import message, reading
from tests.support import Stack, run_cli

NOW = datetime.now(UTC).replace(microsecond=0)


def spo2(days_ago: int, value: int) -> tuple[bytes, bytes]:
    at = (NOW - timedelta(days=days_ago)).isoformat()
    body = message(reading("spo2", value, "%", at), patient="p-1", device="oxi-1")
    return b"p-1", json.dumps(body).encode()


async def test_retention_drops_old_days_and_late_readings_still_land(stack: Stack) -> None:
    await stack.enroll([("p-1", "oxi-1")])
    db = await stack.db()
    old_day = f"readings_p{NOW - timedelta(days=10):%Y%m%d}"
    async with stack.ingest() as ingest:
        await stack.produce([spo2(10, 97), spo2(0, 98)])
        await stack.wait_drained()
        assert await db.fetchval("SELECT count(*) FROM readings") == 2

        assert old_day in await run_cli(stack, "retention", "--keep-days", "5", "--dry-run")
        assert await db.fetchval("SELECT to_regclass($1) IS NOT NULL", old_day)
        assert old_day in await run_cli(stack, "retention", "--keep-days", "5")
        assert not await db.fetchval("SELECT to_regclass($1) IS NOT NULL", old_day)
        assert await db.fetchval("SELECT count(*) FROM readings") == 1

        await stack.produce([spo2(10, 96)])  # a gateway uploads late
        await stack.wait_drained()
        assert not ingest.task.done()
        values = await db.fetch("SELECT value FROM readings ORDER BY measured_at")
        assert [r["value"] for r in values] == [96, 98]
