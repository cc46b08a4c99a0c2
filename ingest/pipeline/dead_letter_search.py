"""Finding dead letters: by id, or by reason, patient, device, period, source record and
state; a count by reason; one dead letter in full, with what became of it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from ingest.pipeline.dead_letters import dlq_headers
from ingest.platform import Connection

__all__ = [
    "COLUMNS",
    "DeadLetter",
    "History",
    "Selection",
    "State",
    "count_by_reason",
    "dead_letter",
    "find",
    "history",
    "outcomes",
]


class State(StrEnum):
    OPEN = "open"  # not replayed (parked ones included)
    PARKED = "parked"  # waiting for its device's enrolment
    EXPIRED = "expired"  # was parked; the window passed
    REPLAYED = "replayed"
    ANY = "any"


_STATE_SQL = {
    State.OPEN: "d.replayed_at IS NULL",
    State.PARKED: "d.parked_until IS NOT NULL AND d.park_expired_at IS NULL "
    "AND d.replayed_at IS NULL",
    State.EXPIRED: "d.park_expired_at IS NOT NULL AND d.replayed_at IS NULL",
    State.REPLAYED: "d.replayed_at IS NOT NULL",
    State.ANY: "true",
}


@dataclass(frozen=True)
class Selection:
    """Which dead letters: every field given must match (ids: any of them)."""

    ids: Sequence[int] = ()
    reason: str | None = None
    patient: str | None = None
    device: str | None = None
    since: datetime | None = None  # rejected at or after
    until: datetime | None = None  # rejected before
    topic: str | None = None
    partition: int | None = None
    from_offset: int | None = None
    to_offset: int | None = None  # inclusive
    state: State = State.ANY
    limit: int = 1000

    @property
    def narrowed(self) -> bool:
        """Whether anything beyond the state narrows it (a replay asks for that)."""
        return bool(self.ids) or any(
            v is not None
            for v in (
                self.reason,
                self.patient,
                self.device,
                self.since,
                self.until,
                self.topic,
                self.partition,
                self.from_offset,
                self.to_offset,
            )
        )

    def where(self) -> tuple[str, list[Any]]:
        clauses = [_STATE_SQL[self.state]]
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.ids:
            clauses.append(f"d.id = ANY({arg(list(self.ids))}::bigint[])")
        if self.reason is not None:
            clauses.append(f"d.reason = {arg(self.reason)}")
        if self.patient is not None:
            # the message's patient, else the record key (a message not readable that far)
            clauses.append(
                f"(d.patient_id = {arg(self.patient)} OR "
                f"(d.patient_id IS NULL AND d.record_key = {arg(self.patient.encode())}))"
            )
        if self.device is not None:
            clauses.append(f"d.device_id = {arg(self.device)}")
        if self.since is not None:
            clauses.append(f"d.rejected_at >= {arg(self.since)}")
        if self.until is not None:
            clauses.append(f"d.rejected_at < {arg(self.until)}")
        if self.topic is not None:
            clauses.append(f"d.topic = {arg(self.topic)}")
        if self.partition is not None:
            clauses.append(f"d.partition = {arg(self.partition)}")
        if self.from_offset is not None:
            clauses.append(f'd."offset" >= {arg(self.from_offset)}')
        if self.to_offset is not None:
            clauses.append(f'd."offset" <= {arg(self.to_offset)}')
        return " AND ".join(clauses), args


@dataclass(frozen=True)
class DeadLetter:
    id: int
    topic: str
    partition: int
    offset: int
    reading_index: int | None
    reason: str
    detail: str
    message_id: str | None
    patient_id: str | None
    device_id: str | None
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    content_type: str | None
    rejected_at: datetime
    parked_until: datetime | None
    park_expired_at: datetime | None
    replay_of: int | None
    replayed_at: datetime | None
    replayed_by: str | None
    replay_outcome: str | None
    replay_reason: str | None
    replay_detail: str | None
    replay_partition: int | None
    replay_offset: int | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)  # as on the DLQ topic

    @property
    def state(self) -> State:
        if self.replayed_at is not None:
            return State.REPLAYED
        if self.park_expired_at is not None:
            return State.EXPIRED
        if self.parked_until is not None:
            return State.PARKED
        return State.OPEN

    @property
    def source(self) -> tuple[str, int, int]:
        return self.topic, self.partition, self.offset


COLUMNS = """
    d.id, d.topic, d.partition, d."offset", d.reading_index, d.reason, d.detail, d.message_id,
    d.patient_id, d.device_id, d.record_key, d.record_value,
    (extract(epoch FROM d.record_timestamp) * 1000)::bigint AS timestamp_ms,
    d.record_content_type, d.rejected_at, d.parked_until, d.park_expired_at, d.replay_of,
    d.replayed_at, d.replayed_by, d.replay_outcome, d.replay_reason, d.replay_detail,
    d.replay_partition, d.replay_offset
"""


def dead_letter(row: asyncpg.Record) -> DeadLetter:
    return DeadLetter(
        row["id"],
        row["topic"],
        row["partition"],
        row["offset"],
        row["reading_index"],
        row["reason"],
        row["detail"],
        row["message_id"],
        row["patient_id"],
        row["device_id"],
        row["record_key"],
        row["record_value"],
        row["timestamp_ms"],
        row["record_content_type"],
        row["rejected_at"],
        row["parked_until"],
        row["park_expired_at"],
        row["replay_of"],
        row["replayed_at"],
        row["replayed_by"],
        row["replay_outcome"],
        row["replay_reason"],
        row["replay_detail"],
        row["replay_partition"],
        row["replay_offset"],
        dlq_headers(row),
    )


async def find(conn: Connection, selection: Selection) -> list[DeadLetter]:
    """The selected dead letters, oldest first, at most `selection.limit`."""
    where, args = selection.where()
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM dead_letters d WHERE {where} ORDER BY d.id "
        f"LIMIT {int(selection.limit)}",
        *args,
    )
    return [dead_letter(r) for r in rows]


async def count_by_reason(conn: Connection, selection: Selection) -> dict[str, int]:
    """How many of the selected dead letters per reason (no limit)."""
    where, args = selection.where()
    rows = await conn.fetch(
        f"SELECT d.reason, count(*) AS n FROM dead_letters d WHERE {where} "
        "GROUP BY 1 ORDER BY 2 DESC, 1",
        *args,
    )
    return {r["reason"]: r["n"] for r in rows}


@dataclass(frozen=True)
class History:
    """What became of a dead letter: the dead letters its replays produced (rejected
    again), and the readings its replay stored."""

    letter: DeadLetter
    born: list[DeadLetter]
    stored: list[dict[str, Any]]


async def history(conn: Connection, letter_id: int) -> History | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM dead_letters d WHERE d.id = $1", letter_id)
    if row is None:
        return None
    letter = dead_letter(row)
    born = [
        dead_letter(r)
        for r in await conn.fetch(
            f"SELECT {COLUMNS} FROM dead_letters d WHERE d.replay_of = $1 ORDER BY d.id",
            letter_id,
        )
    ]
    stored: list[dict[str, Any]] = []
    if letter.replay_outcome == "stored":
        stored = [
            dict(r)
            for r in await conn.fetch(
                """
                SELECT k.kind, r.value, k.unit, r.measured_at, r.received_at
                FROM readings r JOIN vital_kinds k ON k.code = r.kind
                WHERE r.source_partition = $1 AND r.source_offset = $2
                  AND r.patient_key = (SELECT patient_key FROM patients WHERE patient_id = $3)
                ORDER BY r.measured_at, k.kind
                """,
                letter.replay_partition,
                letter.replay_offset,
                letter.patient_id,
            )
        ]
    return History(letter, born, stored)


async def outcomes(conn: Connection, ids: Sequence[int]) -> dict[int, DeadLetter]:
    """The given dead letters that are replayed, by id."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM dead_letters d "
        "WHERE d.id = ANY($1::bigint[]) AND d.replayed_at IS NOT NULL",
        list(ids),
    )
    return {r["id"]: dead_letter(r) for r in rows}
