"""The consumer's offsets, stored with the data (docs/adr/0001-offsets-in-postgresql.md).

In every batch transaction: `fence` locks each partition's `ingest_offsets` row
and reads its next offset; `drop_durable` drops the records below it (already
durable: a replay, or a member that lost the partition and does not know it
yet) and makes one ledger entry per partition; `advance` writes the ledger
entries and the new offsets. On assignment, `read` gives the offsets the
consumer seeks to.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from devices.decode import Rejection
from ingest.pipeline.batch import WriteBatch
from ingest.pipeline.rows import ReadingRows
from ingest.platform import Connection

__all__ = ["LedgerEntry", "OffsetStore", "drop_durable"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What one batch did to one partition: the zero-loss reconciliation's unit."""

    partition: int
    first_offset: int  # the stored next offset before this batch
    next_offset: int
    messages: int
    rows: int  # readings offered to the table (stored + duplicates)


class OffsetStore:
    """The stored offsets of one consumer group."""

    def __init__(self, consumer_group: str) -> None:
        self._group = consumer_group

    async def fence(self, conn: Connection, batch: WriteBatch) -> dict[int, int]:
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

    async def advance(
        self,
        conn: Connection,
        topic: str,
        ledger: Sequence[LedgerEntry],
        inserted: Mapping[int, int],
        rejections: Sequence[Rejection],
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

    async def read(self, conn: Connection, topic: str, partitions: list[int]) -> dict[int, int]:
        """The next offset made durable of each of `partitions` that has one."""
        rows = await conn.fetch(
            "SELECT partition, next_offset FROM ingest_offsets "
            "WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3::int[])",
            self._group,
            topic,
            partitions,
        )
        return {r["partition"]: r["next_offset"] for r in rows}


def drop_durable(
    batch: WriteBatch, stored_offsets: Mapping[int, int]
) -> tuple[ReadingRows, list[Rejection], list[LedgerEntry]]:
    """Drop what an earlier transaction already made durable; one ledger entry per partition."""
    threshold = np.zeros(max(batch.spans) + 1, dtype=np.int64)
    for partition, offset in stored_offsets.items():
        threshold[partition] = offset
    rows = batch.rows
    if len(rows):
        rows = rows.select(rows.source_offset >= threshold[rows.source_partition])
    rejections = [r for r in batch.rejections if r.offset >= stored_offsets[r.partition]]
    row_counts = np.bincount(rows.source_partition, minlength=len(threshold))
    ledger: list[LedgerEntry] = []
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
            LedgerEntry(
                partition,
                stored,
                span.next_offset,
                int((span.offsets >= stored).sum()),
                int(row_counts[partition]),
            )
        )
    return rows, rejections, ledger
