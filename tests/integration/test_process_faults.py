"""The ingest process killed (-9) or stopped (SIGTERM) under load: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

from tests.support import IngestProcess, Stack, ledger_is_contiguous, synthetic_load


async def test_kill_minus_9_mid_batch_loses_and_duplicates_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    """Killed three times while writing, under a steady load; every reading is stored once."""
    pairs, messages = synthetic_load(40_000, patients=200)
    await stack.enroll(pairs)
    producing = asyncio.create_task(_paced(stack, messages, per_second=4_000))
    rng = random.Random(5)
    db = await stack.db()
    for kill in range(3):
        process = IngestProcess(stack, tmp_path / "ingest.log", batch_max_messages=500)
        stored_before = await db.fetchval("SELECT count(*) FROM readings")
        # Kill while it is writing: once it has stored something this run, at a random moment.
        deadline = time.monotonic() + 60
        while await db.fetchval("SELECT count(*) FROM readings") == stored_before:
            assert time.monotonic() < deadline, f"no progress before kill {kill}"
            await asyncio.sleep(0.05)
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        process.kill()
    await producing
    final = IngestProcess(stack, tmp_path / "ingest.log", batch_max_messages=500)
    try:
        await final.wait_ready()
        await stack.wait_drained(120)
        assert await db.fetchval("SELECT count(*) FROM readings") == len(messages)
        assert await db.fetchval("SELECT sum(readings_duplicate) FROM ingest_ledger") == 0
        assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
        await ledger_is_contiguous(stack)
    finally:
        final.terminate()
        assert final.wait(30) == 0


async def _paced(stack: Stack, messages: list[tuple[bytes, bytes]], per_second: int) -> None:
    step = per_second // 10
    for start in range(0, len(messages), step):
        await stack.produce(messages[start : start + step])
        await asyncio.sleep(0.1)


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
