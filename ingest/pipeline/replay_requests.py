"""Asking for a replay: dead letters back onto the readings topic, or a dry run.

`send_replays` re-produces each dead letter's original record (key, bytes,
content-type, timestamp) to the readings topic with a replay tag
(ingest.pipeline.replays): one record per original record, naming every dead
letter of it replayed now. The record keeps its key, so Kafka's default
partitioner puts it where a gateway's would go, and the member owning that
partition stores it and marks the dead letters (ingest.pipeline.replay_marks).
Nothing is written here: a replayer killed half-way has sent some records (each
replays its dead letters whole) and not the others (their dead letters are as
they were). `audit_replays` records who asked. `dry_run` says what a replay would
do, from the same decoder, the registry and the readings already stored,
writing nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from devices.decode import Decoder, Rejection
from ingest.pipeline.dead_letter_search import DeadLetter
from ingest.pipeline.replays import ReadingFate, ReplayResult, ReplayTag, judge
from ingest.platform import Connection, failpoint

__all__ = ["SentReplay", "audit_replays", "dry_run", "send_replays"]


@dataclass(frozen=True, slots=True)
class SentReplay:
    """One replay record on the readings topic, acknowledged."""

    dead_letters: tuple[int, ...]
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class _Record:
    """A dead letter's original record, as the decoder reads one."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    content_type: str | None


def by_record(letters: Sequence[DeadLetter]) -> dict[tuple[str, int, int], list[DeadLetter]]:
    """The dead letters grouped by their original record, in id order."""
    groups: dict[tuple[str, int, int], list[DeadLetter]] = {}
    for letter in sorted(letters, key=lambda d: d.id):
        groups.setdefault(letter.source, []).append(letter)
    return groups


async def send_replays(
    producer: AIOKafkaProducer,
    topic: str,
    letters: Sequence[DeadLetter],
    requested_by: str,
    requested_at_ms: int,
) -> list[SentReplay]:
    """Send one replay record per original record and wait for every acknowledgement."""
    sending = []
    groups = list(by_record(letters).items())
    for (source_topic, partition, offset), group in groups:
        first = group[0]
        tag = ReplayTag(tuple(d.id for d in group), requested_by, requested_at_ms)
        headers = tag.headers(f"{source_topic}/{partition}/{offset}")
        if first.content_type is not None:
            headers.append(("content-type", first.content_type.encode("latin-1")))
        failpoint("replay_send")  # a replayer killed half-way (reliability tests)
        sending.append(
            await producer.send(
                topic,
                key=first.key,
                value=first.value,
                timestamp_ms=first.timestamp_ms,
                headers=headers,
            )
        )
    acknowledged = await asyncio.gather(*sending)
    return [
        SentReplay(tuple(d.id for d in group), meta.partition, meta.offset)
        for (_, group), meta in zip(groups, acknowledged, strict=True)
    ]


async def audit_replays(
    conn: Connection, letters: Sequence[DeadLetter], agent: str, source: str
) -> None:
    """One audit event per replay request and patient (FHIR AuditEvent action E)."""
    by_patient: dict[str | None, list[int]] = {}
    for letter in letters:
        by_patient.setdefault(letter.patient_id, []).append(letter.id)
    await conn.execute(
        """
        INSERT INTO audit_events (action, subtype, outcome, http_status, agent, source, entity,
                                  patient_id, detail)
        SELECT 'E', 'dead_letters.replay', 0, 200, $1, $2, 'dead_letters', p, d::jsonb
        FROM unnest($3::text[], $4::text[]) AS x(p, d)
        """,
        agent,
        source,
        list(by_patient),
        [json.dumps({"dead_letters": ids}) for ids in by_patient.values()],
    )


async def dry_run(
    conn: Connection, letters: Sequence[DeadLetter], decoder: Decoder, now_ms: int
) -> list[tuple[DeadLetter, ReplayResult]]:
    """What a replay of `letters` would do now: stored, duplicate, or rejected again
    (and why). Decodes as the ingest would, asks the registry, looks for the readings
    already stored; writes nothing."""
    groups = list(by_record(letters).values())
    records = [
        _Record(g[0].topic, 0, n, g[0].timestamp_ms, g[0].key, g[0].value, g[0].content_type)
        for n, g in enumerate(groups)
    ]
    decoded = decoder.decode(records, now_ms)
    accepted = decoded.messages
    keys = await _registry(conn, list(zip(accepted.patient_id, accepted.device_id, strict=True)))
    rejected: dict[int, list[tuple[int | None, str, str]]] = {}
    for rejection in decoded.rejections:
        rejected.setdefault(rejection.offset, []).append(
            (rejection.reading_index, rejection.reason.value, rejection.detail)
        )
    for m, pair in enumerate(zip(accepted.patient_id, accepted.device_id, strict=True)):
        if pair not in keys:
            record = records[int(accepted.record_index[m])]
            unknown = Rejection.unknown_device(record, *pair, accepted.message_id[m])
            rejected.setdefault(unknown.offset, []).insert(
                0, (None, unknown.reason.value, unknown.detail)
            )
    readings = []  # (record, reading index, patient key, device key, kind, measured_at µs)
    for row in range(len(decoded)):
        m = int(decoded.message[row])
        pair = (accepted.patient_id[m], accepted.device_id[m])
        if pair in keys:
            patient_key, device_key = keys[pair]
            readings.append(
                (
                    int(accepted.record_index[m]),
                    int(decoded.reading_index[row]),
                    patient_key,
                    device_key,
                    int(decoded.kind[row]),
                    int(decoded.measured_at_us[row]),
                )
            )
    stored = await _already_stored(conn, [r[2:] for r in readings])
    fates: dict[int, list[ReadingFate]] = {}
    seen: set[tuple[int, int, int, int]] = set()
    for r in readings:
        reading_key = r[2:]
        new = reading_key not in stored and reading_key not in seen
        seen.add(reading_key)
        fates.setdefault(r[0], []).append(ReadingFate(r[1], new))
    return [
        (letter, judge(letter.reading_index, fates.get(n, []), rejected.get(n, [])))
        for n, group in enumerate(groups)
        for letter in group
    ]


async def _registry(
    conn: Connection, pairs: list[tuple[str, str]]
) -> dict[tuple[str, str], tuple[int, int]]:
    if not pairs:
        return {}
    rows = await conn.fetch(
        """
        SELECT t.pid, t.did, p.patient_key, d.device_key
        FROM unnest($1::text[], $2::text[]) AS t(pid, did)
        JOIN patients p ON p.patient_id = t.pid
        JOIN devices d ON d.patient_key = p.patient_key AND d.device_id = t.did
        """,
        [p for p, _ in pairs],
        [d for _, d in pairs],
    )
    return {(r["pid"], r["did"]): (r["patient_key"], r["device_key"]) for r in rows}


async def _already_stored(
    conn: Connection, keys: list[tuple[int, int, int, int]]
) -> set[tuple[int, int, int, int]]:
    if not keys:
        return set()
    rows = await conn.fetch(
        """
        SELECT x.pk, x.dk, x.k, x.at FROM unnest($1::int[], $2::int[], $3::smallint[],
                                                  $4::bigint[]) AS x(pk, dk, k, at)
        WHERE EXISTS (SELECT FROM readings r WHERE r.patient_key = x.pk AND r.kind = x.k
                      AND r.device_key = x.dk
                      AND r.measured_at = timestamptz 'epoch' + x.at * interval '1 microsecond')
        """,
        *(list(column) for column in zip(*keys, strict=True)),
    )
    return {(r["pk"], r["dk"], r["k"], r["at"]) for r in rows}
