"""The dead-letter outbox: `dead_letters` rows as records of the DLQ topic.

A DLQ record keeps the original key and bytes. Its headers follow Kafka
Connect's `__connect.errors.*` convention (source topic, partition, offset;
the reason code as the exception class name; the detail as its message) and
add telemon's own: the reason, the index of the rejected reading (absent when
the whole message was rejected) and the gateway's message id; the original
record's content-type header is kept, so a FHIR message stays one.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from ingest.pipeline.relay import OutboxRecord
from ingest.platform import Connection

__all__ = ["DeadLetterOutbox", "dlq_headers"]


class DeadLetterOutbox:
    name = "dead_letters"

    def __init__(self, topic: str) -> None:
        self.topic = topic

    async def unpublished(self, conn: Connection, limit: int) -> list[OutboxRecord]:
        rows = await conn.fetch(
            """
            SELECT id, topic, partition, "offset", reading_index, reason, detail, message_id,
                   record_key, record_value, record_content_type
            FROM dead_letters WHERE published_at IS NULL ORDER BY id LIMIT $1
            """,
            limit,
        )
        return [
            OutboxRecord(
                r["id"], r["record_key"], r["record_value"], dlq_headers(r), r["partition"]
            )
            for r in rows
        ]

    async def mark_published(self, conn: Connection, ids: Sequence[int]) -> None:
        await conn.execute(
            "UPDATE dead_letters SET published_at = now() WHERE id = ANY($1::bigint[])", list(ids)
        )

    async def backlog(self, conn: Connection) -> int:
        count = await conn.fetchval("SELECT count(*) FROM dead_letters WHERE published_at IS NULL")
        return int(count)

    def partition(self, record: OutboxRecord, partitions: int) -> int:
        """The source partition (modulo the DLQ's partition count): per-source order is kept."""
        return record.partition_hint % partitions


def dlq_headers(row: asyncpg.Record) -> list[tuple[str, bytes]]:
    """The headers of a dead_letters row's DLQ record (the telemon.outbox.id aside)."""
    headers = [
        ("__connect.errors.topic", row["topic"].encode()),
        ("__connect.errors.partition", str(row["partition"]).encode()),
        ("__connect.errors.offset", str(row["offset"]).encode()),
        ("__connect.errors.exception.class.name", row["reason"].encode()),
        ("__connect.errors.exception.message", row["detail"].encode()),
        ("telemon.errors.reason", row["reason"].encode()),
    ]
    if row["reading_index"] is not None:
        headers.append(("telemon.errors.reading_index", str(row["reading_index"]).encode()))
    if row["message_id"] is not None:
        headers.append(("telemon.errors.message_id", row["message_id"].encode()))
    if row["record_content_type"] is not None:
        headers.append(("content-type", row["record_content_type"].encode("latin-1")))
    return headers
