"""The ingest process stopped (SIGTERM) under load: it drains, and nothing is redelivered.

kill -9 and crashes at a failpoint are in test_reliability.py, under the oracle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.support import IngestProcess, Stack, ledger_is_contiguous, synthetic_load


async def test_sigterm_drains_commits_and_exits_within_30_s(stack: Stack, tmp_path: Path) -> None:
    """Asked to stop mid-load, it writes and commits what it took, then exits; a restart
    redelivers nothing."""
    pairs, messages = synthetic_load(20_000, patients=100)
    await stack.enroll(pairs)
    await stack.produce(messages[:10_000])
    process = IngestProcess(stack, tmp_path / "first.log", batch_max_messages=1000)
    db = await stack.db()
    deadline = time.monotonic() + 60
    while await db.fetchval("SELECT count(*) FROM readings") < 2_000:
        assert time.monotonic() < deadline, "no progress"
        await asyncio.sleep(0.05)
    producing = asyncio.create_task(stack.produce(messages[10_000:]))
    await asyncio.sleep(0.3)
    asked = time.monotonic()
    process.terminate()
    assert await asyncio.to_thread(process.wait, 30) == 0
    assert time.monotonic() - asked < 30
    assert "ingest stopped after" in process.log
    await producing

    # What it stored is exactly what its offsets say, in PostgreSQL and in Kafka.
    stored_offsets = await stack.stored_offsets()
    covered = await db.fetchval("SELECT coalesce(sum(messages), 0) FROM ingest_ledger")
    assert covered == await db.fetchval("SELECT count(*) FROM readings")
    assert sum(stored_offsets.values()) == covered

    restarted = IngestProcess(stack, tmp_path / "second.log", batch_max_messages=1000)
    try:
        await restarted.wait_ready()
        await stack.wait_drained(120)
        assert restarted.metric("telemon_ingest_messages_skipped_total") == 0
        assert await db.fetchval("SELECT count(*) FROM readings") == len(messages)
        assert await db.fetchval("SELECT sum(readings_duplicate) FROM ingest_ledger") == 0
        await ledger_is_contiguous(stack)
    finally:
        restarted.terminate()
        assert await asyncio.to_thread(restarted.wait, 30) == 0
