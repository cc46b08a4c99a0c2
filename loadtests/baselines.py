"""The designs telemon is measured against, implemented honestly.

(a) per-message: the common tutorial consumer. For each record: validate with
    the pydantic contract, INSERT its readings (autocommit), commit its offset.
(b) sequential batches: getmany -> validate every record -> binary COPY ->
    commit the batch's offsets. No pipelining: the consumer waits for the
    database and the database waits for the consumer.

(c) bare loop: the least a correct consumer does, as fast as it goes.
    getmany -> msgspec decode -> binary COPY (numpy-built) -> commit. No
    registry cache or lookup query, no alert rules, no dedup, no ledger or
    stored offsets, no dead letters (an undecodable record is skipped), no
    second process: what telemon's guarantees are measured against (issue 22).

All read the registry once at start (a dict lookup per message: the keys a row
needs) and write to the same `readings` table as telemon. Run: python -m
loadtests.baselines {per-message|sequential|bare-loop} (settings from
TELEMON_* variables).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import msgspec
import numpy as np
from aiokafka import TopicPartition
from pydantic import ValidationError

from devices.catalogue import VitalKind, conversion_for
from devices.contract import ReadingsMessageV1
from devices.decode import RawRecord
from ingest.pipeline.pgcopy import READING_COLUMNS, encode_readings
from ingest.pipeline.rows import ReadingRows
from ingest.platform import Settings, connect, make_consumer

COLUMNS = (
    "patient_key",
    "device_key",
    "kind",
    "value",
    "measured_at",
    "received_at",
    "source_partition",
    "source_offset",
)


async def registry(conn: asyncpg.Connection) -> dict[tuple[str, str], tuple[int, int]]:
    rows = await conn.fetch(
        "SELECT p.patient_id, d.device_id, p.patient_key, d.device_key "
        "FROM devices d JOIN patients p USING (patient_key)"
    )
    return {(r["patient_id"], r["device_id"]): (r["patient_key"], r["device_key"]) for r in rows}


def rows_of(
    record: RawRecord, keys: dict[tuple[str, str], tuple[int, int]]
) -> list[tuple[object, ...]]:
    """Validate one record with the contract; its rows, or none if it is invalid."""
    try:
        message = ReadingsMessageV1.model_validate_json(record.value or b"")
    except ValidationError:
        return []
    found = keys.get((message.patient_id, message.device_id))
    if found is None:
        return []
    now = datetime.now(UTC)
    rows: list[tuple[object, ...]] = []
    for reading in message.readings:
        converted = conversion_for(reading.kind, reading.unit)
        if converted is None:
            continue
        vital, conversion = converted
        rows.append(
            (
                found[0],
                found[1],
                vital.code,
                conversion.apply(float(reading.value)),
                reading.measured_at,
                now,
                record.partition,
                record.offset,
            )
        )
    return rows


async def per_message(settings: Settings) -> None:
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    keys = await registry(conn)
    consumer = make_consumer(settings, max_poll_records=1)
    consumer.subscribe([settings.readings_topic])
    await consumer.start()
    insert = f"INSERT INTO readings ({', '.join(COLUMNS)}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    try:
        while True:
            record = await consumer.getone()
            for row in rows_of(record, keys):
                await conn.execute(insert, *row)
            tp = TopicPartition(record.topic, record.partition)
            await consumer.commit({tp: record.offset + 1})
    finally:
        await consumer.stop()


async def sequential(settings: Settings) -> None:
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    keys = await registry(conn)
    consumer = make_consumer(settings)
    consumer.subscribe([settings.readings_topic])
    await consumer.start()
    try:
        while True:
            fetched = await consumer.getmany(
                timeout_ms=100, max_records=settings.batch_max_messages
            )
            if not fetched:
                continue
            rows = [
                row for records in fetched.values() for r in records for row in rows_of(r, keys)
            ]
            async with conn.transaction():
                await conn.copy_records_to_table("readings", records=rows, columns=COLUMNS)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in fetched.items()})
    finally:
        await consumer.stop()


class BareReading(msgspec.Struct):
    kind: str
    value: float
    unit: str
    measured_at: datetime


class BareMessage(msgspec.Struct):
    device_id: str
    patient_id: str
    readings: list[BareReading]


_DECODE_BARE = msgspec.json.Decoder(BareMessage).decode


def bare_rows(
    fetched: dict[TopicPartition, list[RawRecord]],
    keys: dict[tuple[str, str], tuple[int, int]],
    conversions: dict[tuple[str, str], tuple[int, float, float] | None],
) -> ReadingRows:
    """The rows of every decodable record of a known device, as columns."""
    decode = _DECODE_BARE
    patient_keys: list[int] = []
    device_keys: list[int] = []
    kinds: list[int] = []
    values: list[float] = []
    measured: list[int] = []
    partitions: list[int] = []
    offsets: list[int] = []
    for records in fetched.values():
        for record in records:
            try:
                message = decode(record.value or b"")
            except msgspec.MsgspecError:
                continue
            found = keys.get((message.patient_id, message.device_id))
            if found is None:
                continue
            for reading in message.readings:
                pair = (reading.kind, reading.unit)
                conversion = conversions.get(pair) or conversions.setdefault(
                    pair, _conversion(pair)
                )
                if conversion is None:
                    continue
                code, scale, offset = conversion
                patient_keys.append(found[0])
                device_keys.append(found[1])
                kinds.append(code)
                values.append(reading.value * scale + offset)
                measured.append(round(reading.measured_at.timestamp() * 1_000_000))
                partitions.append(record.partition)
                offsets.append(record.offset)
    return ReadingRows(
        np.array(patient_keys, np.int32),
        np.array(device_keys, np.int32),
        np.array(kinds, np.int16),
        np.array(values, np.float64),
        np.array(measured, np.int64),
        np.array(partitions, np.int32),
        np.array(offsets, np.int64),
        np.empty(0, np.int64),  # not stored
    )


def _conversion(pair: tuple[str, str]) -> tuple[int, float, float] | None:
    try:
        converted = conversion_for(VitalKind(pair[0]), pair[1])
    except ValueError:
        return None
    if converted is None:
        return None
    vital, conversion = converted
    return vital.code, conversion.scale, conversion.offset


async def bare_loop(settings: Settings) -> None:
    assert settings.database_url is not None
    conn = await connect(settings.database_url, settings.database_schema)
    keys = await registry(conn)
    conversions: dict[tuple[str, str], tuple[int, float, float] | None] = {}
    consumer = make_consumer(settings)
    consumer.subscribe([settings.readings_topic])
    await consumer.start()
    try:
        while True:
            fetched = await consumer.getmany(
                timeout_ms=100, max_records=settings.batch_max_messages
            )
            if not fetched:
                continue
            rows = bare_rows(fetched, keys, conversions)
            if len(rows):
                payload = encode_readings(rows, time.time_ns() // 1000)
                await conn.copy_to_table(
                    "readings", source=_once(payload), columns=READING_COLUMNS, format="binary"
                )
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in fetched.items()})
    finally:
        await consumer.stop()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    """A COPY source asyncpg writes straight to the socket."""
    yield data


if __name__ == "__main__":
    design = {"per-message": per_message, "sequential": sequential, "bare-loop": bare_loop}[
        sys.argv[1]
    ]
    started = time.monotonic()
    try:
        asyncio.run(design(Settings()))
    except KeyboardInterrupt:
        print(f"{sys.argv[1]} stopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
