"""Make one batch durable in one PostgreSQL transaction.

Inside the transaction, in this order (five round trips with BEGIN and COMMIT):
1. fence: upsert-and-lock each partition's `ingest_offsets` row, read its next
   offset; records below it are already durable (a replay, or a member that
   lost the partition) and are dropped from the batch;
2. readings: binary COPY straight into `readings`. A reading already stored
   (a gateway's re-send across batches) violates the unique key: the whole
   transaction is then redone through a staging table with INSERT ... ON
   CONFLICT DO NOTHING, the path preferred for a while after such a conflict;
3. the per-partition ledger and the new offsets (one statement), and the
   dead letters, which are the DLQ outbox;
4. the alerts the batch raised, escalated or resolved, and their events (the
   alerts outbox): alerts.lifecycle.
A batch without offsets (a missing-data sweep) does only step 4.
Kafka offsets may be committed only after `write` returns.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import asyncpg
import numpy as np

from alerts.engine import ScoreKey
from alerts.lifecycle import Applied, apply_alerts
from alerts.model import Severity
from devices.decode import Rejection
from ingest.batch import ReadingRows, WriteBatch
from ingest.partitions import US_PER_DAY, ReadingPartitions
from ingest.pgcopy import READING_COLUMNS, encode_readings
from ingest.platform import Clock, Connection

__all__ = ["BatchWriter", "WriteOutcome"]

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
    alerts: Applied | None = None


class BatchWriter:
    def __init__(
        self,
        *,
        consumer_group: str,
        partitions: ReadingPartitions,
        clock: Clock,
        alert_cooldown_us: Mapping[Severity, int] | None = None,
    ) -> None:
        self._group = consumer_group
        self._partitions = partitions
        self._clock = clock
        self._cooldown_us = alert_cooldown_us
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
            # Look again (the day's partition is then created for these late readings).
            await self._partitions.load(conn)
            return await self._write(conn, batch)

    async def _write(self, conn: Connection, batch: WriteBatch) -> WriteOutcome:
        if len(batch.rows):
            days = np.unique(batch.rows.measured_at_us // US_PER_DAY)
            await self._partitions.ensure(conn, days.tolist())
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
                stored_offsets = await self._fence(conn, batch)
                rows, rejections, ledger = _drop_durable(batch, stored_offsets)
            else:
                rows, rejections, ledger = batch.rows, batch.rejections, []
            unique = _first_of_each_reading(rows)
            if not len(unique):
                inserted: dict[int, int] = {}
            elif direct:
                inserted = await _copy(conn, unique, written_at_us)
            else:
                inserted = await _copy_skipping_stored(conn, unique, written_at_us)
            await self._record(conn, batch.topic, ledger, inserted, rejections, written_at_us)
            if rejections:
                await _insert_dead_letters(conn, rejections, written_at_us)
            applied = None
            if batch.alerts is not None and batch.alerts.scores:
                stored_in = {p for p, n in inserted.items() if n}
                await _count_scores(conn, batch.alerts.scores, stored_in)
            if batch.alerts is not None and self._cooldown_us is not None:
                applied = await apply_alerts(
                    conn,
                    batch.alerts.candidates,
                    batch.alerts.arrivals,
                    cooldown_us=self._cooldown_us,
                    now_us=self._clock.now_ms() * 1000,
                )
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
            alerts=applied,
        )

    async def _fence(self, conn: Connection, batch: WriteBatch) -> dict[int, int]:
        """Lock the batch's partitions (in partition order) and read their stored offsets.

        A partition seen for the first time starts at the batch's first offset.
        """
        partitions = sorted(batch.spans)
        locked = await conn.fetch(
            """
            INSERT INTO ingest_offsets AS o (consumer_group, topic, partition, next_offset)
            SELECT $1, $2, p, f FROM unnest($3::int[], $4::bigint[]) AS t(p, f) ORDER BY p
            ON CONFLICT (consumer_group, topic, partition)
                DO UPDATE SET next_offset = o.next_offset
            RETURNING partition, next_offset
            """,
            self._group,
            batch.topic,
            partitions,
            [batch.spans[p].first_offset for p in partitions],
        )
        return {r["partition"]: r["next_offset"] for r in locked}

    async def _record(
        self,
        conn: Connection,
        topic: str,
        ledger: list[_LedgerEntry],
        inserted: dict[int, int],
        rejections: list[Rejection],
        written_at_us: int,
    ) -> None:
        """The ledger entries and the new offsets, in one statement."""
        if not ledger:
            return
        dead = Counter(r.partition for r in rejections)
        await conn.execute(
            """
            WITH entries AS (
                INSERT INTO ingest_ledger (consumer_group, topic, partition, first_offset,
                    next_offset, messages, readings_stored, readings_duplicate, dead_letters,
                    written_at)
                SELECT $1, $2, p, f, n, m, s, r - s, d, to_timestamp($10 / 1e6)
                FROM unnest($3::int[], $4::bigint[], $5::bigint[], $6::int[], $7::int[],
                            $8::int[], $9::int[]) AS t(p, f, n, m, s, r, d)
                RETURNING partition, next_offset
            )
            UPDATE ingest_offsets o SET next_offset = e.next_offset, updated_at = now()
            FROM entries e
            WHERE o.consumer_group = $1 AND o.topic = $2 AND o.partition = e.partition
            """,
            self._group,
            topic,
            [e.partition for e in ledger],
            [e.first_offset for e in ledger],
            [e.next_offset for e in ledger],
            [e.messages for e in ledger],
            [inserted.get(e.partition, 0) for e in ledger],
            [e.rows for e in ledger],
            [dead[e.partition] for e in ledger],
            written_at_us,
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


@dataclass(frozen=True, slots=True)
class _LedgerEntry:
    partition: int
    first_offset: int  # the stored next offset before this batch
    next_offset: int
    messages: int
    rows: int  # readings offered to the table (stored + duplicates)


def _drop_durable(
    batch: WriteBatch, stored_offsets: dict[int, int]
) -> tuple[ReadingRows, list[Rejection], list[_LedgerEntry]]:
    """Drop what an earlier transaction already made durable; one ledger entry per partition."""
    threshold = np.zeros(max(batch.spans) + 1, dtype=np.int64)
    for partition, offset in stored_offsets.items():
        threshold[partition] = offset
    rows = batch.rows
    if len(rows):
        rows = rows.select(rows.source_offset >= threshold[rows.source_partition])
    rejections = [r for r in batch.rejections if r.offset >= stored_offsets[r.partition]]
    row_counts = np.bincount(rows.source_partition, minlength=len(threshold))
    ledger: list[_LedgerEntry] = []
    for partition, span in sorted(batch.spans.items()):
        stored = stored_offsets[partition]
        if stored >= span.next_offset:
            continue  # the whole span is already durable
        if stored > span.first_offset:
            log.warning(
                "partition %d: offsets %d..%d already durable, skipping them",
                partition,
                span.first_offset,
                stored - 1,
            )
        ledger.append(
            _LedgerEntry(
                partition,
                stored,
                span.next_offset,
                int((span.offsets >= stored).sum()),
                int(row_counts[partition]),
            )
        )
    return rows, rejections, ledger


def _first_of_each_reading(rows: ReadingRows) -> ReadingRows:
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


async def _count_scores(
    conn: Connection, scores: Mapping[ScoreKey, int], stored_in: set[int]
) -> None:
    """Add the batch's aggregate scores to the day's counts, for the partitions where it
    stored readings: a batch a member that lost its partitions wrote already, or a replay
    of stored readings (all duplicates) counts nothing again. Each partition's rows are its
    owner's: members do not wait on each other's counts."""
    counted = sorted((k, n) for k, n in scores.items() if k.partition in stored_in)
    if not counted:
        return
    await conn.execute(
        """
        INSERT INTO alert_scores AS s (rule_id, partition, day, programme, score, sets)
        SELECT r, p, date '1970-01-01' + d, g, c, n
        FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::smallint[], $6::bigint[])
             AS x(r, p, d, g, c, n)
        ON CONFLICT (rule_id, partition, day, programme, score)
            DO UPDATE SET sets = s.sets + EXCLUDED.sets
        """,
        [k.rule_id for k, _ in counted],
        [k.partition for k, _ in counted],
        [k.day for k, _ in counted],
        [k.programme for k, _ in counted],
        [k.score for k, _ in counted],
        [n for _, n in counted],
    )


async def _insert_dead_letters(
    conn: Connection, rejections: list[Rejection], rejected_at_us: int
) -> None:
    """Dead letters (the DLQ outbox), and a wake-up call for the relay, in one statement."""
    await conn.execute(
        """
        WITH stored AS (
            INSERT INTO dead_letters (topic, partition, "offset", reading_index, reason, detail,
                message_id, record_key, record_value, record_timestamp, record_content_type,
                rejected_at)
            SELECT t, p, o, i, r, d, m, k, v, to_timestamp(ts / 1e3), c, to_timestamp($12 / 1e6)
            FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::text[], $6::text[],
                        $7::text[], $8::bytea[], $9::bytea[], $10::bigint[], $11::text[])
                 AS x(t, p, o, i, r, d, m, k, v, ts, c)
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
    )
