"""Make one batch durable in one PostgreSQL transaction.

Inside the transaction, in this order (five round trips with BEGIN and COMMIT):
1. fence: lock each partition's stored offset (ingest.pipeline.offsets);
   records below it are already durable and are dropped from the batch;
2. readings: binary COPY straight into `readings`. A reading already stored
   (a gateway's re-send across batches) violates the unique key: the whole
   transaction is then redone through a staging table with INSERT ... ON
   CONFLICT DO NOTHING, the path preferred for a while after such a conflict;
3. the per-partition ledger and the new offsets (one statement), and the
   dead letters, which are the DLQ outbox;
4. each step's work (ingest.pipeline.steps): the alerts the batch raised,
   escalated or resolved, and their events; the dead letters' own
   (ingest.pipeline.replay_marks: replays marked, unknown devices parked).
A batch without offsets (a step's periodic work) does only step 4.
Kafka offsets may be committed only after `write` returns.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import numpy as np

from devices.decode import Rejection
from ingest.pipeline.batch import WriteBatch
from ingest.pipeline.offsets import OffsetStore, drop_durable
from ingest.pipeline.pgcopy import READING_COLUMNS, encode_readings
from ingest.pipeline.reading_days import US_PER_DAY, ReadingDays
from ingest.pipeline.rows import ReadingRows
from ingest.pipeline.steps import Written
from ingest.platform import Clock, Connection

__all__ = ["BatchWriter", "WriteOutcome", "first_of_each_reading"]

log = logging.getLogger(__name__)

_STAGING = "readings_incoming"
_STAGING_AFTER_CONFLICT = 100  # batches written through the staging table after a conflict


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    stored: int
    duplicates: int
    dead_letters: int
    skipped_messages: int  # already durable before this batch
    rows: ReadingRows  # the rows this transaction offered to `readings`
    rejections: list[Rejection]  # the rejections it stored
    commit_offsets: dict[int, int]  # partition -> next offset, for the Kafka commit
    durable_at_us: int  # when the transaction had committed


class BatchWriter:
    def __init__(
        self,
        *,
        consumer_group: str,
        days: ReadingDays,
        clock: Clock,
    ) -> None:
        self._offsets = OffsetStore(consumer_group)
        self._days = days
        self._clock = clock
        self._staging_batches_left = 0

    @staticmethod
    async def prepare(conn: Connection) -> None:
        """Set-up of each connection of the writer's pool: the staging table."""
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE readings) ON COMMIT DELETE ROWS"
        )

    async def write(self, conn: Connection, batch: WriteBatch) -> WriteOutcome:
        try:
            return await self._write(conn, batch)
        except asyncpg.CheckViolationError:
            # "No partition for the row": retention dropped a day this process had seen.
            # Look again (the day's table is then created for these late readings).
            await self._days.load(conn)
            return await self._write(conn, batch)

    async def _write(self, conn: Connection, batch: WriteBatch) -> WriteOutcome:
        if len(batch.rows):
            days = np.unique(batch.rows.measured_at_us // US_PER_DAY)
            await self._days.ensure(conn, days.tolist())
        if self._staging_batches_left == 0:
            try:
                return await self._transaction(conn, batch, direct=True)
            except asyncpg.UniqueViolationError:
                self._staging_batches_left = _STAGING_AFTER_CONFLICT
                log.info(
                    "a reading was already stored: deduplicating through staging for "
                    "the next %d batches",
                    _STAGING_AFTER_CONFLICT,
                )
        self._staging_batches_left -= 1
        return await self._transaction(conn, batch, direct=False)

    async def _transaction(
        self, conn: Connection, batch: WriteBatch, *, direct: bool
    ) -> WriteOutcome:
        written_at_us = self._clock.now_ms() * 1000
        async with conn.transaction():
            if batch.spans:
                stored_offsets = await self._offsets.fence(conn, batch)
                rows, rejections, ledger = drop_durable(batch, stored_offsets)
            else:
                rows, rejections, ledger = batch.rows, batch.rejections, []
            unique = first_of_each_reading(rows)
            if not len(unique):
                inserted: dict[int, int] = {}
            elif direct:
                inserted = await _copy(conn, unique, written_at_us)
            else:
                inserted = await _copy_skipping_stored(conn, unique, written_at_us)
            await self._offsets.advance(
                conn, batch.topic, ledger, inserted, rejections, written_at_us
            )
            if rejections:
                await _insert_dead_letters(conn, rejections, written_at_us)
            written = Written(inserted)
            for work in batch.work:
                await work.apply(conn, written)
        stored = sum(inserted.values())
        return WriteOutcome(
            stored=stored,
            duplicates=len(rows) - stored,
            dead_letters=len(rejections),
            skipped_messages=batch.messages - sum(entry.messages for entry in ledger),
            rows=unique,
            rejections=rejections,
            commit_offsets={p: s.next_offset for p, s in batch.spans.items()},
            durable_at_us=self._clock.now_ms() * 1000,
        )


async def _copy(conn: Connection, rows: ReadingRows, written_at_us: int) -> dict[int, int]:
    """Binary COPY into `readings`; raises UniqueViolationError if one is already stored."""
    await conn.copy_to_table(
        "readings",
        source=_payload(encode_readings(rows, written_at_us)),
        columns=READING_COLUMNS,
        format="binary",
    )
    per_partition = np.bincount(rows.source_partition)
    return {int(p): int(per_partition[p]) for p in np.flatnonzero(per_partition)}


async def _copy_skipping_stored(
    conn: Connection, rows: ReadingRows, written_at_us: int
) -> dict[int, int]:
    """Binary COPY into the staging table, then only what is not stored yet into `readings`."""
    await conn.copy_to_table(
        _STAGING,
        source=_payload(encode_readings(rows, written_at_us)),
        columns=READING_COLUMNS,
        format="binary",
    )
    counts = await conn.fetch(
        f"""
        WITH inserted AS (
            INSERT INTO readings SELECT * FROM {_STAGING}
            ON CONFLICT DO NOTHING RETURNING source_partition
        ) SELECT source_partition, count(*) AS n FROM inserted GROUP BY 1
        """
    )
    return {r["source_partition"]: r["n"] for r in counts}


async def _payload(data: bytes) -> AsyncIterator[bytes]:
    """A COPY source asyncpg writes straight to the socket (a file-like one it would read
    through the thread pool, 512 KiB per hop)."""
    yield data


def first_of_each_reading(rows: ReadingRows) -> ReadingRows:
    """Drop repeats within the batch (same device, kind, measured_at): duplicates too."""
    if len(rows) < 2:
        return rows
    order = np.lexsort((rows.measured_at_us, rows.kind, rows.device_key))
    device, kind, at = rows.device_key[order], rows.kind[order], rows.measured_at_us[order]
    repeat = np.zeros(len(rows), dtype=np.bool_)
    repeat[1:] = (device[1:] == device[:-1]) & (kind[1:] == kind[:-1]) & (at[1:] == at[:-1])
    if not repeat.any():
        return rows
    keep = np.ones(len(rows), dtype=np.bool_)
    keep[order[repeat]] = False
    return rows.select(keep)


async def _insert_dead_letters(
    conn: Connection, rejections: list[Rejection], rejected_at_us: int
) -> None:
    """Dead letters (the DLQ outbox), and a wake-up call for the relay, in one statement."""
    await conn.execute(
        """
        WITH stored AS (
            INSERT INTO dead_letters (topic, partition, "offset", reading_index, reason, detail,
                message_id, record_key, record_value, record_timestamp, record_content_type,
                rejected_at, patient_id, device_id)
            SELECT t, p, o, i, r, d, m, k, v, to_timestamp(ts / 1e3), c, to_timestamp($12 / 1e6),
                   pid, did
            FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::text[], $6::text[],
                        $7::text[], $8::bytea[], $9::bytea[], $10::bigint[], $11::text[],
                        $13::text[], $14::text[])
                 AS x(t, p, o, i, r, d, m, k, v, ts, c, pid, did)
            ON CONFLICT DO NOTHING
            RETURNING 1
        ) SELECT pg_notify('telemon_outbox', 'dead_letters') FROM stored LIMIT 1
        """,
        [r.topic for r in rejections],
        [r.partition for r in rejections],
        [r.offset for r in rejections],
        [r.reading_index for r in rejections],
        [r.reason.value for r in rejections],
        [r.detail for r in rejections],
        [r.message_id for r in rejections],
        [r.key for r in rejections],
        [r.value for r in rejections],
        [r.timestamp_ms for r in rejections],
        [r.content_type for r in rejections],
        rejected_at_us,
        [r.patient_id for r in rejections],
        [r.device_id for r in rejections],
    )
