"""Partitions changing hands, and the writer's guards: nothing lost, nothing stored twice."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import numpy as np
import pytest

from alerts.step import AlertStep
from devices.contract import RejectReason
from devices.decode import Rejection
from ingest.pipeline.batch import PartitionSpan, WriteBatch
from ingest.pipeline.reading_days import ReadingDays
from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.writer import BatchWriter
from ingest.platform import SystemClock
from tests.support import Stack, eventually, ledger_is_contiguous, synthetic_load


async def test_two_members_share_and_hand_over_partitions(stack: Stack) -> None:
    pairs, messages = synthetic_load(30_000, patients=120)
    await stack.enroll(pairs)
    await stack.produce(messages[:15_000])
    db = await stack.db()

    async def stored() -> int:
        return int(await db.fetchval("SELECT count(*) FROM readings"))

    async with stack.ingest(batch_max_messages=500) as first:
        await eventually(lambda: _more_than(stored, 1_000), what="first member to write")
        async with stack.ingest(batch_max_messages=500) as second:
            producing = asyncio.create_task(stack.produce(messages[15_000:]))
            await eventually(
                lambda: _owns_some(first, second), 40, "both members to own partitions"
            )
            await producing
            before = await stored()
            await eventually(lambda: _more_than(stored, before), what="progress while shared")
        # the second member left (drained); the first takes every partition back
        await stack.wait_drained(120)
        await eventually(lambda: _owns_all(first, 4), 40, "the first member to own all four")
    assert await stored() == len(messages)
    assert await db.fetchval("SELECT sum(readings_duplicate) FROM ingest_ledger") == 0
    await ledger_is_contiguous(stack)


async def test_a_member_stays_in_its_group_while_its_state_loads_past_the_session_timeout(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka heartbeats only once the rebalance callback has returned: the state of half
    a million patients loaded inside it outlived the session timeout, the group evicted the
    member, and its rejoin loaded it again, and again (issue 22)."""
    session_s = 6.0
    first: AlertStep | None = None
    slow_loads = 0
    load_state = AlertStep.assigned

    async def load(step: AlertStep, *args: Any) -> None:  # slow for the second member
        nonlocal first, slow_loads
        first = first or step
        if step is not first:
            slow_loads += 1
            await asyncio.sleep(1.5 * session_s)
        await load_state(step, *args)

    monkeypatch.setattr(AlertStep, "assigned", load)
    pairs, messages = synthetic_load(4_000, patients=40)
    await stack.enroll(pairs)
    await stack.produce(messages[:2_000])
    settings = {"kafka_session_timeout_ms": int(session_s * 1000)}
    async with stack.ingest(**settings) as one:
        await eventually(lambda: _owns_all(one, 4), 40, "the first member to own all four")
        async with stack.ingest(**settings) as two:
            await eventually(lambda: _owns_some(one, two), 40, "both members to own partitions")
            await asyncio.sleep(2 * session_s)  # long enough for an eviction to show
            await stack.produce(messages[2_000:])
            await stack.wait_drained(60)
            assert await _owns_some(one, two)
    assert slow_loads == 1  # the second member was never evicted and assigned again


async def _more_than(count: object, n: int) -> bool:
    return bool(await count() > n)  # type: ignore[operator]


async def _owns_all(member: object, partitions: int) -> bool:
    return bool(member.metric("telemon_ingest_assigned_partitions") == partitions)  # type: ignore[attr-defined]


async def _owns_some(*members: object) -> bool:
    return all(m.metric("telemon_ingest_assigned_partitions") >= 1 for m in members)  # type: ignore[attr-defined]


def _batch(partition: int, offsets: range, patient_key: int, device_key: int) -> WriteBatch:
    n = len(offsets)
    rows = ReadingRows(
        patient_key=np.full(n, patient_key, np.int32),
        device_key=np.full(n, device_key, np.int32),
        kind=np.full(n, 1, np.int16),
        value=np.full(n, 96.0),
        measured_at_us=1_795_000_000_000_000 + np.arange(offsets.start, offsets.stop) * 1_000_000,
        source_partition=np.full(n, partition, np.int32),
        source_offset=np.arange(offsets.start, offsets.stop, dtype=np.int64),
        reference_us=np.full(n, 1_795_000_000_000_000 + offsets.stop * 1_000_000, np.int64),
    )
    span = PartitionSpan(partition, np.arange(offsets.start, offsets.stop, dtype=np.int64))
    rejection = Rejection(
        "t", partition, offsets.start, 0, b"k", b"{", None, RejectReason.INVALID_JSON, "test"
    )
    return WriteBatch(
        "t", {partition: span}, rows.select(rows.source_offset > offsets.start), [rejection], n
    )


async def _writer(stack: Stack) -> tuple[BatchWriter, int, int]:
    await stack.enroll([("p-1", "oxi-1")])
    keys = await (await stack.db()).fetchrow("SELECT patient_key, device_key FROM devices")
    assert keys is not None
    writer = BatchWriter(consumer_group="g", days=ReadingDays(), clock=SystemClock())
    return writer, keys["patient_key"], keys["device_key"]


async def test_a_member_that_lost_its_partition_cannot_write_twice(stack: Stack) -> None:
    """The write fence: batches below the stored offset are dropped, partly or wholly."""
    writer, patient, device = await _writer(stack)
    async with stack.connection() as db:
        await BatchWriter.prepare(db)
        first = await writer.write(db, _batch(0, range(0, 100), patient, device))
        assert (first.stored, first.dead_letters, first.skipped_messages) == (99, 1, 0)
        # A zombie re-sends 50..149: 50..99 are durable already, 100..149 are new.
        overlap = await writer.write(db, _batch(0, range(50, 150), patient, device))
        assert (overlap.stored, overlap.duplicates, overlap.skipped_messages) == (50, 0, 50)
        assert overlap.dead_letters == 0  # its rejection was for offset 50, already durable
        stale = await writer.write(db, _batch(0, range(0, 100), patient, device))
        assert (stale.stored, stale.skipped_messages) == (0, 100)
        assert await db.fetchval("SELECT count(*) FROM readings") == 149
        assert await db.fetchval("SELECT next_offset FROM ingest_offsets") == 150
        assert await db.fetchval("SELECT count(*) FROM dead_letters") == 1


async def test_a_reading_stored_by_an_earlier_batch_is_a_duplicate(stack: Stack) -> None:
    """The direct COPY trips on the unique key; the batch is stored through the staging path."""
    writer, patient, device = await _writer(stack)
    async with stack.connection() as db:
        await BatchWriter.prepare(db)
        first = await writer.write(db, _batch(0, range(0, 10), patient, device))
        assert (first.stored, first.duplicates) == (9, 0)
        # The gateway re-sends offsets 6..9's readings inside a new batch (offsets 10..19).
        again = _batch(0, range(10, 20), patient, device)
        shifted = again.rows.measured_at_us.copy()
        shifted[:5] -= 5_000_000  # rows 11..15 now repeat readings 6..10 (6..9 are stored)
        rows = dataclasses.replace(again.rows, measured_at_us=shifted)
        second = await writer.write(db, WriteBatch("t", again.spans, rows, [], 10))
        assert (second.stored, second.duplicates) == (5, 4)
        assert await db.fetchval("SELECT count(*) FROM readings") == 14
        ledger = await db.fetch(
            "SELECT readings_stored, readings_duplicate FROM ingest_ledger ORDER BY id"
        )
        assert [(r[0], r[1]) for r in ledger] == [(9, 0), (5, 4)]
