"""Fault scenarios checked by the oracle (tests/oracle.py): I1-I5 hold after each.

Short versions run in `make test`; `TELEMON_RELIABILITY=long` runs the long
ones (python -m loadtests.reliability).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest

from devices.contract import RejectReason
from ingest.pipeline.relay import OUTBOX_ID_HEADER
from ingest.platform import EXIT_STATUS, RejectRatioError
from tests.oracle import LONG, CommitWatch, OracleProducer, check
from tests.support import IngestProcess, RunningIngest, Stack, eventually


async def test_kill_minus_9_at_random_moments(stack: Stack, tmp_path: Path) -> None:
    """kill -9 of the ingest process at random moments under load, COPY included."""
    kills = 20 if LONG else 3
    messages = kills * 20_000  # ten seconds of load per kill: restarts take a few
    producer = OracleProducer(stack, devices=200)
    await producer.enroll()
    rng = random.Random(11)
    db = await stack.db()
    async with CommitWatch(stack).running():
        producing = asyncio.create_task(producer.paced(messages, per_second=2_000))
        for kill in range(kills):
            process = IngestProcess(stack, tmp_path / "ingest.log", batch_max_messages=500)
            stored = await db.fetchval("SELECT count(*) FROM readings")
            deadline = time.monotonic() + 60
            while await db.fetchval("SELECT count(*) FROM readings") == stored:
                assert time.monotonic() < deadline, f"no progress before kill {kill}"
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            process.kill()
        await producing
        await _drain_with_a_clean_process(stack, tmp_path)
    await check(stack, producer)


async def test_crash_between_the_database_commit_and_the_kafka_commit(
    stack: Stack, tmp_path: Path
) -> None:
    """A failpoint kills the process after a batch is durable and before its Kafka
    commit: the restarted member must neither lose nor store again."""
    producer = OracleProducer(stack, devices=100)
    await producer.enroll()
    await producer.send(20_000)
    crashes = 0
    async with CommitWatch(stack).running():
        while crashes < (10 if LONG else 3):
            process = IngestProcess(
                stack,
                tmp_path / "ingest.log",
                failpoints="after_database_commit=0.3",
                batch_max_messages=1000,
            )
            status = await asyncio.to_thread(process.wait, 60)
            assert status == EXIT_STATUS, f"exited {status}, not at the failpoint:\n{process.log}"
            crashes += 1
        await _drain_with_a_clean_process(stack, tmp_path)
    await check(stack, producer)


async def test_poison_storm(stack: Stack) -> None:
    """1 % malformed: dead-lettered with reasons, nothing valid lost. Then 100 %: the
    reject-ratio guard stops the member before it commits past the storm's start."""
    producer = OracleProducer(stack, devices=100, seed=3)
    await producer.enroll()
    await producer.send(20_000, malformed=0.01)
    guarded = {"batch_max_messages": 500, "reject_ratio_min_messages": 500}
    async with CommitWatch(stack).running(), stack.ingest(**guarded) as ingest:
        await stack.wait_drained(120)
        counters = {
            "consumed": ingest.metric("telemon_ingest_readings_consumed_total"),
            "stored": ingest.metric("telemon_ingest_readings_stored_total"),
            "duplicate": ingest.metric("telemon_ingest_readings_duplicate_total"),
            "rejected": _rejected_readings(ingest),
        }
    refused = sum(a.refused for a in producer.acknowledged)
    assert 100 < refused < 400
    await check(stack, producer, counters)

    before = await stack.stored_offsets()
    await producer.send(5_000, malformed=1.0)
    with pytest.raises(RejectRatioError):
        async with stack.ingest(**guarded) as ingest:
            await asyncio.wait_for(asyncio.shield(ingest.task), 60)
    after = await stack.stored_offsets()
    storm = sum(after.values()) - sum(before.values())
    assert storm < 5_000, "the guard let the whole storm through"


async def test_clock_skew(stack: Stack) -> None:
    """Readings from the future and from 1970 are dead-lettered with their reason;
    the valid readings sent between them are all stored."""
    producer = OracleProducer(stack, devices=50)
    await producer.enroll()
    await producer.send(2_000)
    await producer.send(500, skew_ms=2 * 86_400_000)  # two days ahead
    await producer.send(2_000)
    await producer.send(500, skew_ms=-int(producer.measured_at(0).timestamp() * 1000) + 3_600_000)
    await producer.send(2_000)
    async with stack.ingest(batch_max_messages=500):
        await stack.wait_drained(120)
    await check(stack, producer)
    reasons = {
        r["reason"]: r["count"]
        for r in await (await stack.db()).fetch(
            "SELECT reason, count(*) FROM dead_letters GROUP BY reason"
        )
    }
    assert reasons == {"timestamp_in_future": 500, "timestamp_too_old": 500}


async def test_rebalance_storm(stack: Stack) -> None:
    """A second member joins and leaves every few seconds while readings flow."""
    producer = OracleProducer(stack, devices=200)
    await producer.enroll()
    async with CommitWatch(stack).running(), stack.ingest(batch_max_messages=500):
        producing = asyncio.create_task(producer.paced(40_000 if LONG else 12_000, 2_000))
        for _ in range(8 if LONG else 3):
            async with stack.ingest(batch_max_messages=500):
                await asyncio.sleep(2.5)
            await asyncio.sleep(1.0)
        await producing
        await stack.wait_drained(120)
    await check(stack, producer)


async def test_alert_topic_outage(stack: Stack, tmp_path: Path) -> None:
    """The alerts topic unreachable: ingest goes on storing readings and alerts while the
    outbox keeps their events; when the topic comes back, unreliably (chunks fail part of
    the way through), the outbox catches up and every event is on the topic exactly once."""
    producer = OracleProducer(stack, devices=100, low_every=20, start_ago_s=600)
    await producer.enroll()
    await producer.send(4_000)
    db = await stack.db()
    outage = IngestProcess(stack, tmp_path / "outage.log", failpoints="relay_send_episode_events=1")
    await outage.wait_ready()
    await stack.wait_drained(120)
    held = await db.fetchval("SELECT count(*) FROM episode_events WHERE published_at IS NULL")
    assert held > 0
    assert held == await db.fetchval("SELECT count(*) FROM episode_events")

    async def backlog_shown() -> bool:
        backlog = await asyncio.to_thread(outage.metric, "telemon_alerts_event_backlog")
        return bool(backlog == held)

    await eventually(backlog_shown, 30, "the backlog metric to show the held events")
    assert await stack.read_topic(stack.settings.alerts_topic) == []
    outage.terminate()
    assert await asyncio.to_thread(outage.wait, 40) == 0

    # About one episode event per patient is held (100): at 0.1 a send, the chance that
    # none fails is 0.9 ** 100, under 1e-4; each failure costs the relay's 2 s retry.
    back = IngestProcess(stack, tmp_path / "back.log", failpoints="relay_send_episode_events=0.1")
    await producer.send(2_000)
    await back.wait_ready()
    await stack.wait_drained(120)

    async def caught_up() -> bool:
        unpublished = "SELECT count(*) FROM episode_events WHERE published_at IS NULL"
        return bool(await db.fetchval(unpublished) == 0)

    await eventually(caught_up, 90, "the outbox to catch up")
    back.terminate()
    assert await asyncio.to_thread(back.wait, 40) == 0
    assert "unreachable" in back.log  # the flaky topic did fail chunks
    on_topic = [
        int(value)
        for record in await stack.read_topic(stack.settings.alerts_topic)
        for key, value in record.headers
        if key == OUTBOX_ID_HEADER
    ]
    events = [r["event_id"] for r in await db.fetch("SELECT event_id FROM episode_events")]
    assert sorted(on_topic) == sorted(events)  # each exactly once
    await check(stack, producer)


async def _drain_with_a_clean_process(stack: Stack, tmp_path: Path) -> None:
    final = IngestProcess(stack, tmp_path / "final.log", batch_max_messages=500)
    try:
        await final.wait_ready()
        await stack.wait_drained(180)
    finally:
        final.terminate()
        assert await asyncio.to_thread(final.wait, 30) == 0


def _rejected_readings(ingest: RunningIngest) -> float:
    """Readings dead-lettered, by the rejection counter: an invalid-JSON message (the
    oracle's only whole-message refusal) carries no reading that was counted."""
    return sum(
        ingest.metric("telemon_ingest_rejected_total", reason=reason.value)
        for reason in RejectReason
        if reason is not RejectReason.INVALID_JSON
    )


async def test_full_replay_stores_and_raises_nothing_new(stack: Stack) -> None:
    """A new consumer group reads the topic from the earliest offset: every reading is a
    duplicate, no alert is raised again."""
    producer = OracleProducer(stack, devices=100, low_every=20, start_ago_s=600)
    await producer.enroll()
    await producer.send(4_000)
    async with stack.ingest(batch_max_messages=500):
        await stack.wait_drained(120)
    db = await stack.db()
    before = await _alert_counts(db)
    assert before["findings"] > 0, "the low readings raised nothing to replay"

    replaying = Stack(stack.settings.model_copy(update={"consumer_group": "replay"}))
    try:
        async with replaying.ingest(batch_max_messages=500) as ingest:
            await replaying.wait_drained(120)
            assert ingest.metric("telemon_ingest_readings_duplicate_total") == 4_000
        assert await _alert_counts(db) == before
        await check(stack, producer)
    finally:
        await replaying.close()


async def _alert_counts(db: Any) -> dict[str, int]:
    row = await db.fetchrow(
        "SELECT (SELECT count(*) FROM findings) AS findings, (SELECT count(*) FROM episodes) AS "
        "episodes, (SELECT count(*) FROM episode_events) AS events, "
        "(SELECT count(*) FROM readings) AS readings"
    )
    return dict(row)
