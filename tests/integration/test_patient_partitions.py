"""A member loads the patients of its partitions only: PostgreSQL knows each patient's
partition of the readings topic (migration 0011), as Kafka's default partitioner gives it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka.partitioner import murmur2

from alerts.engine import Engine
from alerts.loader import load_partitions
from alerts.programmes import load_config
from devices.registry import DeviceType, Enrollment, Programme, enroll, sync_reference_data
from ingest.platform import connect, migrate

# Every length modulo 4 (murmur2 hashes 4-byte blocks, then the tail).
PATIENT_IDS = [f"p-{n}" for n in range(40)] + ["a", "ab", "abc", "abcd", "P-0123456789.ab:c_d"]


@pytest.fixture
async def conn(postgres_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    name = f"k_{uuid.uuid4().hex[:12]}"
    connection = await connect(postgres_dsn, name)
    try:
        await migrate(connection, name)
        await sync_reference_data(connection)
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await connection.close()


def kafka_partition(patient_id: str, partitions: int) -> int:
    return int(murmur2(patient_id.encode()) & 0x7FFFFFFF) % partitions


async def test_each_patient_knows_the_hash_of_kafkas_default_partitioner(
    conn: asyncpg.Connection,
) -> None:
    await enroll(conn, [_oximeter(p) for p in PATIENT_IDS])
    stored = {
        r["patient_id"]: r["key_hash"]
        for r in await conn.fetch("SELECT patient_id, key_hash FROM patients")
    }
    assert stored == {p: murmur2(p.encode()) & 0x7FFFFFFF for p in PATIENT_IDS}


async def test_the_hash_is_murmur2_of_any_text(conn: asyncpg.Connection) -> None:
    """Every length modulo 4 up to 70 bytes, multi-byte UTF-8 included: the hash as
    aiokafka computes it (migration 0013 computes it in fewer statements than 0011)."""
    alphabet = "aZ9._:-\u00e9\u20ac\U0001f600"
    keys = [
        "".join(alphabet[(n * 7 + i * 3) % len(alphabet)] for i in range(n % 71))
        for n in range(600)
    ]
    rows = await conn.fetch("SELECT k, kafka_key_hash(k) AS h FROM unnest($1::text[]) AS k", keys)
    assert {r["k"]: r["h"] for r in rows} == {k: murmur2(k.encode()) & 0x7FFFFFFF for k in keys}


async def test_a_member_loads_the_active_patients_of_its_partitions_only(
    conn: asyncpg.Connection,
) -> None:
    await enroll(conn, [_oximeter(p) for p in PATIENT_IDS])
    await conn.execute("UPDATE patients SET discharged_at = now() WHERE patient_id = 'p-0'")
    engine = Engine(load_config(None))
    loaded = await load_partitions(conn, engine, [0, 4], 12, 1_795_000_000_000_000)
    expected = {p for p in PATIENT_IDS if kafka_partition(p, 12) in (0, 4) and p != "p-0"}
    keys = {
        r["patient_key"]: r["patient_id"]
        for r in await conn.fetch("SELECT patient_key, patient_id FROM patients")
    }
    assert {keys[k] for k in engine.history.slot_of} == expected
    assert loaded == len(expected)
    slots = engine.history.slots(list(engine.history.slot_of))
    assert sorted(engine.history.partition[slots].tolist()) == sorted(
        kafka_partition(p, 12) for p in expected
    )
    assert len(engine.history.device_of) == len(expected)  # each patient's oximeter


def _oximeter(patient_id: str) -> Enrollment:
    return Enrollment(
        patient_id=patient_id,
        programme=Programme.COVID,
        device_id=f"oxi-{uuid.uuid4().hex[:8]}",
        device_type=DeviceType.PULSE_OXIMETER,
    )
