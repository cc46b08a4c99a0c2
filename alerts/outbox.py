"""Episode events as records of the alerts topic (`telemon.alerts.v2`), relayed once each
(ingest.pipeline.relay); the live feed serves the same events (ingest.api.stream).

Key: the pseudonymous patient id (Kafka's default partitioner, so each
patient's events stay in order). Value: JSON, one event of an episode's life,
with the episode and its findings as they stand (docs/contract.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka.partitioner import murmur2

from alerts.model import Severity
from ingest.pipeline.relay import OutboxRecord
from ingest.platform import Connection

__all__ = ["EPISODE_COLUMNS", "EVENTS_QUERY", "EpisodeEventOutbox", "episode_json", "event_json"]

# An episode with its patient and its findings (severity first), from `episodes ep` joined
# with `patients p`.
EPISODE_COLUMNS = """
    ep.episode_id, ep.job, ep.severity AS episode_severity, ep.status AS episode_status,
    ep.severity_since, ep.snoozed_until, ep.opened_at, ep.first_fired_at, ep.last_fired_at,
    ep.acknowledged_at, ep.acknowledged_by, ep.resolved_at, ep.resolved_by, ep.disposition,
    ep.note, p.patient_id, p.programme, p.enrolled_at,
    (SELECT coalesce(json_agg(json_build_object(
                'finding_id', f.finding_id, 'rule_id', f.rule_id,
                'rule_version', f.rule_version, 'severity', f.severity, 'status', f.status,
                'first_fired_at', f.first_fired_at, 'last_fired_at', f.last_fired_at,
                'fire_count', f.fire_count, 'resolution', f.resolution,
                'explanation', f.explanation)
            ORDER BY f.severity DESC, f.finding_id), '[]')
     FROM findings f WHERE f.episode_id = ep.episode_id) AS findings
"""

EVENTS_QUERY = f"""
    SELECT e.event_id, e.txid::text::bigint AS txid, e.type, e.at, e.actor, e.detail,
           e.severity, e.status, {EPISODE_COLUMNS}
    FROM episode_events e
    JOIN episodes ep USING (episode_id)
    JOIN patients p ON p.patient_key = e.patient_key
"""

_SEVERITY = {s.value: s.label for s in Severity}


def episode_json(r: asyncpg.Record) -> dict[str, Any]:
    """An episode and its findings as JSON (a row of `EPISODE_COLUMNS`)."""

    def instant(name: str) -> str | None:
        value = r[name]
        return None if value is None else str(value.isoformat())

    return {
        "episode_id": r["episode_id"],
        "patient_id": r["patient_id"],
        "programme": r["programme"],
        "job": r["job"],
        "severity": _SEVERITY[r["episode_severity"]],
        "status": r["episode_status"],
        "waiting_since": instant("severity_since"),
        "snoozed_until": instant("snoozed_until"),
        "opened_at": instant("opened_at"),
        "first_fired_at": instant("first_fired_at"),
        "last_fired_at": instant("last_fired_at"),
        "acknowledged_at": instant("acknowledged_at"),
        "acknowledged_by": r["acknowledged_by"],
        "resolved_at": instant("resolved_at"),
        "resolved_by": r["resolved_by"],
        "disposition": r["disposition"],
        "note": r["note"],
        "findings": [
            {**f, "severity": _SEVERITY[f["severity"]]} for f in json.loads(r["findings"])
        ],
    }


def event_json(r: asyncpg.Record) -> dict[str, Any]:
    """The published form of an `episode_events` row: the event, and its episode as it
    stands (its severity and status as the event left them)."""
    episode = episode_json(r)
    episode["severity"] = _SEVERITY[r["severity"]]
    episode["status"] = r["status"]
    return {
        "event_id": r["event_id"],
        "type": r["type"],
        "at": r["at"].isoformat(),
        "actor": r["actor"],
        "detail": json.loads(r["detail"]),
        "episode": episode,
    }


class EpisodeEventOutbox:
    name = "episode_events"

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
            "UPDATE episode_events SET published_at = now() WHERE event_id = ANY($1::bigint[])",
            list(ids),
        )

    async def backlog(self, conn: Connection) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM episode_events WHERE published_at IS NULL"
        )
        return count

    def partition(self, record: OutboxRecord, partitions: int) -> int:
        assert record.key is not None
        return int(murmur2(record.key) & 0x7FFFFFFF) % partitions
