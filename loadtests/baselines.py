"""The two designs telemon is measured against, implemented honestly.

(a) per-message: the common tutorial consumer. For each record: validate with
    the pydantic contract, INSERT its readings (autocommit), commit its offset.
(b) sequential batches: getmany -> validate every record -> binary COPY ->
    commit the batch's offsets. No pipelining: the consumer waits for the
    database and the database waits for the consumer.

Both read the registry once at start (a dict lookup per message) and write to
the same `readings` table as telemon. Run: python -m loadtests.baselines
{per-message|sequential} (settings from TELEMON_* variables).
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

import asyncpg
from aiokafka import TopicPartition
from pydantic import ValidationError

from devices.catalogue import conversion_for
from devices.contract import ReadingsMessageV1
from devices.decode import RawRecord
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


if __name__ == "__main__":
    design = {"per-message": per_message, "sequential": sequential}[sys.argv[1]]
    started = time.monotonic()
    try:
        asyncio.run(design(Settings()))
    except KeyboardInterrupt:
        print(f"{sys.argv[1]} stopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
