"""Alert events as records of `telemon.alerts.v1`, relayed once each (ingest.relay).

Key: the pseudonymous patient id (Kafka's default partitioner, so each
patient's events stay in order). Value: JSON, one event of an alert's life.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg
from aiokafka.partitioner import murmur2

from ingest.pipeline.relay import OutboxRecord
from ingest.platform import Connection

__all__ = ["AlertEventOutbox", "event_json"]


def event_json(r: asyncpg.Record) -> dict[str, object]:
    """The published form of an `alert_events` row joined with its alert."""
    return {
        "event_id": r["event_id"],
        "type": r["type"],
        "at": r["at"].isoformat(),
        "actor": r["actor"],
        "detail": json.loads(r["detail"]),
        "alert": {
            "alert_id": r["alert_id"],
            "patient_id": r["patient_id"],
            "programme": r["programme"],
            "rule_id": r["rule_id"],
            "rule_version": r["rule_version"],
            "severity": ("info", "orange", "red")[r["severity"] - 1],
            "status": r["status"],
            "first_fired_at": r["first_fired_at"].isoformat(),
            "explanation": json.loads(r["explanation"]),
        },
    }


EVENTS_QUERY = """
    SELECT e.event_id, e.txid::text::bigint AS txid, e.type, e.at, e.actor, e.detail,
           e.severity, e.status,
           a.alert_id, a.rule_id, a.rule_version, a.first_fired_at, a.explanation,
           p.patient_id, p.programme
    FROM alert_events e
    JOIN alerts a USING (alert_id)
    JOIN patients p ON p.patient_key = e.patient_key
"""


class AlertEventOutbox:
    name = "alert_events"

    def __init__(self, topic: str) -> None:
        self.topic = topic

    async def unpublished(self, conn: Connection, limit: int) -> list[OutboxRecord]:
        rows = await conn.fetch(
            f"{EVENTS_QUERY} WHERE e.published_at IS NULL ORDER BY e.event_id LIMIT $1", limit
        )
        return [
            OutboxRecord(
                r["event_id"],
                r["patient_id"].encode(),
                json.dumps(event_json(r)).encode(),
                [("telemon.event.type", r["type"].encode())],
                0,
            )
            for r in rows
        ]

    async def mark_published(self, conn: Connection, ids: Sequence[int]) -> None:
        await conn.execute(
            "UPDATE alert_events SET published_at = now() WHERE event_id = ANY($1::bigint[])",
            list(ids),
        )

    async def backlog(self, conn: Connection) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM alert_events WHERE published_at IS NULL"
        )
        return count

    def partition(self, record: OutboxRecord, partitions: int) -> int:
        assert record.key is not None
        return int(murmur2(record.key) & 0x7FFFFFFF) % partitions
